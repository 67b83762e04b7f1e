import { listBackups, type CatalogBackup } from '../../catalog/catalog.ts';
import type { ServerConfig } from '../../config/load.ts';
import { formatRetentionPolicy } from '../../config/retention-policy.ts';
import { probeServer } from '../../postgres/probe.ts';
import { humanTimedelta, prettySize } from '../../util/human.ts';
import type { CliContext } from '../context.ts';
import { xlogDbPath } from '../../catalog/layout.ts';
import { readLockOwner, serverLockPath } from '../../catalog/locks.ts';
import { readXlogDb, type WalFileInfo } from '../../catalog/xlog-db.ts';
import { ctime } from '../../util/human.ts';
import { parseLsn } from '../../postgres/lsn.ts';
import { readReceiverState, type ReceiverState } from '../../wal/receiver-state.ts';
import { cloudTierStateFor } from '../../cloud/tier-state.ts';

// `barkeep status SERVER...`: Barman's status lines, with the same JSON keys.

interface StatusLine {
  key: string;
  description: string;
  message: string;
}

export async function runStatus(ctx: CliContext, names: string[]): Promise<number> {
  const servers = ctx.selectServers(names, { allowInactive: true, allowDisabled: true });
  const all = await Promise.all(servers.map((s) => serverStatus(s)));
  if (ctx.opts.format === 'json') {
    const doc: Record<string, Record<string, { description: string; message: string }>> = {};
    servers.forEach((s, i) => {
      doc[s.name] = Object.fromEntries(all[i]!.map((l) => [l.key, { description: l.description, message: l.message }]));
    });
    ctx.printJson(doc);
  } else {
    servers.forEach((s, i) => {
      ctx.print(`Server ${s.name}:`);
      for (const l of all[i]!) ctx.print(`\t${l.description}: ${l.message}`);
    });
  }
  return ctx.hadErrors ? 1 : 0;
}

async function serverStatus(s: ServerConfig): Promise<StatusLine[]> {
  const lines: StatusLine[] = [];
  const add = (key: string, description: string, message: string) => lines.push({ key, description, message });
  if (s.settings.description) add('description', 'Description', s.settings.description);
  add('active', 'Active', s.settings.active === false ? 'False' : 'True');
  add('disabled', 'Disabled', s.disabled ? 'True' : 'False');

  if (s.settings.active !== false) {
    const probe = await probeServer({
      conninfo: s.settings.conninfo,
      streamingConninfo: null,
      slotName: null,
      timeoutSeconds: s.settings.check_timeout ?? 30,
    });
    const info = probe.info;
    if (!info) {
      add('pg_version', 'PostgreSQL version', `FAILED trying to get PostgreSQL version (${probe.connectionError ?? 'unknown error'})`);
    } else {
      add('pg_version', 'PostgreSQL version', info.serverTxtVersion);
      add('is_in_recovery', 'Cluster state', info.isInRecovery ? 'in archive recovery' : 'in production');
      if (info.currentSize !== null) add('current_size', 'Current data size', prettySize(info.currentSize));
      if (info.settings['data_directory']) add('data_directory', 'PostgreSQL Data directory', info.settings['data_directory']);
      if (info.currentWal) add('current_xlog', 'Current WAL segment', info.currentWal);
    }
  }
  const last = await lastArchived(s);
  if (last) add('last_archived_wal', 'Last archived WAL', `${last.name}, at ${ctime(new Date(last.time * 1000))}`);
  else add('last_archived_wal', 'Last archived WAL', 'No WAL archived yet');
  if (s.settings.streaming_archiver) {
    const state = await readReceiverState(s.paths).catch(() => null);
    const running = (await readLockOwner(serverLockPath(s.paths.lockDirectory, s.name, 'receive-wal')).catch(() => null))?.live === true;
    add('wal_receiver', 'WAL receiver', receiverLine(state, running));
    const lag = running && state?.state === 'streaming' ? lagLine(state, Date.now()) : null;
    if (lag) add('wal_receiver_lag', 'WAL receiver lag', lag);
    const event = state?.events.at(-1);
    if (event) add('wal_receiver_event', 'Last WAL receiver event', `${event.at}: ${event.message}`);
    if (state?.gap) add('wal_gap', 'WAL gap', `first missing segment ${state.gap.firstMissing} (receive-wal --reset acknowledges it)`);
  }
  add('passive_node', 'Passive node', 'False');

  const policy = s.settings.retention_policy;
  add(
    'retention_policies',
    'Retention policies',
    policy ? `enforced (mode: ${s.settings.retention_policy_mode ?? 'auto'}, retention: ${formatRetentionPolicy(policy)}, WAL retention: ${(s.settings.wal_retention_policy ?? 'main').toUpperCase()})` : 'not enforced',
  );

  let backups: CatalogBackup[] = [];
  try {
    backups = (await listBackups(s.paths)).backups;
  } catch {
    add('backups_number', 'No. of available backups', `FAILED (cannot read the catalog in ${s.paths.backupDirectory})`);
    return lines;
  }
  const done = backups.filter((b) => b.info.status === 'DONE');
  add('backups_number', 'No. of available backups', String(done.length));
  add('first_backup', 'First available backup', done[0]?.backupId ?? 'None');
  add('last_backup', 'Last available backup', done.at(-1)?.backupId ?? 'None');
  const min = s.settings.minimum_redundancy ?? 0;
  add('minimum_redundancy', 'Minimum redundancy requirements', `${done.length >= min ? 'satisfied' : 'FAILED'} (${done.length}/${min})`);
  if (s.settings.cloud_destination) for (const l of await cloudLines(s)) add(...l);
  return lines;
}

/** barkeep's cloud tier (cloud_destination), from the daemon's state file. */
async function cloudLines(s: ServerConfig): Promise<[string, string, string][]> {
  const dest = s.settings.cloud_destination!;
  const out: [string, string, string][] = [['cloud_destination', 'Cloud destination', dest]];
  const state = await cloudTierStateFor(s.paths, dest).catch(() => null);
  if (state === null) {
    out.push(['cloud_wal', 'Cloud WAL', 'nothing copied yet (the barkeep daemon copies WAL and backups)']);
    return out;
  }
  const w = state.wal;
  const last = w.lastShipped ? `last copied ${w.lastShipped}${w.lastShippedAt ? `, at ${ctime(new Date(w.lastShippedAt))}` : ''}` : 'none copied by this daemon yet';
  const pending = w.pending === 0 ? 'all copied' : `${w.pending} waiting${w.oldestPendingTime ? `, the oldest archived ${humanTimedelta(Math.max(0, Date.now() / 1000 - w.oldestPendingTime))} ago` : ''}`;
  out.push(['cloud_wal', 'Cloud WAL', `${pending}; ${last}${w.lastError ? ` (last error: ${w.lastError})` : ''}`]);
  const b = state.backups;
  const waiting = b.pending.length > 0 ? `; waiting: ${b.pending.join(', ')}` : '';
  out.push(['cloud_backups', 'Cloud backups', `${b.inBucket} (newest: ${b.newestInBucket ?? 'None'})${waiting}${b.lastError ? ` (last error: ${b.lastError})` : ''}`]);
  const policy = s.settings.cloud_retention_policy;
  if (policy) {
    const r = state.retention;
    const ran = r.lastRunAt ? `, last applied ${ctime(new Date(r.lastRunAt))}${r.lastDeleted.length > 0 ? ` (deleted ${r.lastDeleted.join(', ')})` : ''}` : '';
    out.push(['cloud_retention_policy', 'Cloud retention policy', `${formatRetentionPolicy(policy)}${ran}${r.lastError ? ` (last error: ${r.lastError})` : ''}`]);
  }
  return out;
}

async function lastArchived(s: ServerConfig): Promise<WalFileInfo | null> {
  let last: WalFileInfo | null = null;
  try {
    for await (const entry of readXlogDb(await xlogDbPath(s.paths), { onInvalidLine: () => undefined })) last = entry;
  } catch {
    return null;
  }
  return last;
}

function receiverLine(state: ReceiverState | null, running: boolean): string {
  if (!running) return `not running${state?.lastError ? ` (last error: ${state.lastError})` : ''}`;
  if (!state) return 'running';
  const where = state.timeline ? ` on timeline ${state.timeline}, flushed up to ${state.flushedLsn ?? 'unknown'}` : '';
  return `${state.state}${where} (pid ${state.pid})`;
}

/** How far the streaming receiver is behind the server, from what it last recorded (at most a second old). */
function lagLine(state: ReceiverState, now: number): string | null {
  if (!state.primaryWalEnd || !state.flushedLsn) return null;
  let bytes: bigint;
  try {
    bytes = parseLsn(state.primaryWalEnd) - parseLsn(state.flushedLsn);
  } catch {
    return null;
  }
  const end = `(its WAL ends at ${state.primaryWalEnd})`;
  if (bytes <= 0n) return `caught up with the server ${end}`;
  const since = state.behindSince === null ? NaN : Date.parse(state.behindSince);
  const age = Number.isNaN(since) ? '' : ` and ${humanTimedelta(Math.max(0, (now - since) / 1000))}`;
  return `${prettySize(Number(bytes))}${age} behind the server ${end}`;
}
