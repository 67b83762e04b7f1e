// `check` lines about the WAL archive, named and worded as Barman's (server.py
// check_archive, _check_wal_queue, check_wal_validity, check_archiver_errors).
// Functions returning null report nothing: Barman shows those checks only when
// they fail.
import { readdir, stat } from 'node:fs/promises';
import type { ServerConfig } from '../config/load.ts';
import { xlogDbPath } from '../catalog/layout.ts';
import { readXlogDb } from '../catalog/xlog-db.ts';
import { isErrno } from '../util/durable-fs.ts';
import { prettySize } from '../util/human.ts';
import type { ServerHooks } from '../hooks/server-hooks.ts';
import { archiveWal } from '../wal/archiver.ts';
import type { CheckResult } from './server-checks.ts';

/** `archiver errors`: what errors/ holds, by kind (`duplicates: 2, unknown: 1`). */
export async function archiverErrorsCheck(server: ServerConfig): Promise<CheckResult> {
  const names = await listDir(server.paths.errorsDirectory, { hidden: true });
  const counts = new Map<string, number>([
    ['duplicates', 0],
    ['unknown', 0],
    ['not relevant', 0],
    ['unknown failure', 0],
    // barkeep's own: WAL kept aside by the receiver when the server's history
    // diverged from it, or by receive-wal --reset.
    ['diverged', 0],
    ['reset', 0],
  ]);
  for (const name of names) {
    const kind = name.endsWith('.duplicate')
      ? 'duplicates'
      : name.endsWith('.unknown')
        ? 'unknown'
        : name.endsWith('.error')
          ? 'not relevant'
          : name.endsWith('.diverged')
            ? 'diverged'
            : name.endsWith('.reset')
              ? 'reset'
              : 'unknown failure';
    counts.set(kind, counts.get(kind)! + 1);
  }
  const hint = [...counts].filter(([, n]) => n > 0).map(([kind, n]) => `${kind}: ${n}`).join(', ');
  return { name: 'archiver errors', ok: names.length === 0, hint };
}

/** `empty incoming directory`: files waiting in incoming/ although archiver = off. */
export async function emptyIncomingCheck(server: ServerConfig): Promise<CheckResult | null> {
  return emptyQueueCheck(server, 'incoming');
}

/** `empty streaming directory`: files in streaming/ (beyond the one partial) although streaming_archiver = off. */
export async function emptyStreamingCheck(server: ServerConfig): Promise<CheckResult | null> {
  return emptyQueueCheck(server, 'streaming');
}

/** `incoming WALs directory` / `streaming WALs directory`: more files queued than max_incoming_wals_queue. */
export async function walQueueLimitCheck(server: ServerConfig, queue: 'incoming' | 'streaming'): Promise<CheckResult | null> {
  const { enabled } = queueSettings(server, queue);
  const max = server.settings.max_incoming_wals_queue;
  if (!enabled || max === null || max === undefined) return null;
  const count = await queuedCount(server, queue);
  if (count <= max) return null;
  return { name: `${queue} WALs directory`, ok: false, hint: `there are too many WALs in queue: ${count}, max ${max}` };
}

async function emptyQueueCheck(server: ServerConfig, queue: 'incoming' | 'streaming'): Promise<CheckResult | null> {
  const { enabled, dir, setting } = queueSettings(server, queue);
  if (enabled || (await queuedCount(server, queue)) <= 0) return null;
  return { name: `empty ${queue} directory`, ok: false, hint: `'${dir}' must be empty when ${setting}=off` };
}

function queueSettings(server: ServerConfig, queue: 'incoming' | 'streaming') {
  return queue === 'incoming'
    ? { enabled: server.settings.archiver === true, dir: server.paths.incomingWalsDirectory, setting: 'archiver' }
    : { enabled: server.settings.streaming_archiver === true, dir: server.paths.streamingWalsDirectory, setting: 'streaming_archiver' };
}

// As Barman counts: glob("*") (no hidden files) minus *.tmp, and one less in
// streaming/ for the receiver's partial file.
async function queuedCount(server: ServerConfig, queue: 'incoming' | 'streaming'): Promise<number> {
  const { dir } = queueSettings(server, queue);
  const count = (await listDir(dir, { hidden: false })).filter((n) => !n.endsWith('.tmp')).length;
  return queue === 'streaming' ? count - 1 : count;
}

export interface WalSizeOptions {
  /**
   * Barman's figure is the WAL archived after the last backup (its WAL "until next
   * backup"): pass that backup's begin/end WAL, or null when there is no backup
   * (Barman then shows 0 B). Left undefined, every WAL segment in xlog.db counts.
   */
  lastBackup?: { beginWal: string; endWal: string } | null;
}

/** `wal size`: always OK; the hint is the size, and `bytes` the Nagios perfdata. */
export async function walSizeCheck(server: ServerConfig, opts: WalSizeOptions = {}): Promise<CheckResult & { bytes: number }> {
  let bytes = 0;
  if (opts.lastBackup !== null) {
    const backup = opts.lastBackup;
    const backupTli = backup ? backup.beginWal.slice(0, 8) : null;
    for await (const entry of readXlogDb(await xlogDbPath(server.paths), { onInvalidLine: () => undefined })) {
      if (!SEGMENT_RE.test(entry.name)) continue;
      if (backup && (entry.name < backup.beginWal || entry.name.slice(0, 8) > backupTli! || entry.name <= backup.endWal)) continue;
      bytes += entry.size;
    }
  }
  return { name: 'wal size', ok: true, hint: prettySize(bytes), bytes };
}

const SEGMENT_RE = /^[0-9A-Fa-f]{24}$/;

export interface WalArchiveCheckOptions {
  /** A backup is WAITING_FOR_WALS: it could only have been taken with WAL archiving working. */
  hasWaitingBackup?: boolean;
  /** Last resort, as Barman: switch WAL on the server and archive it (the caller owns the connection). */
  trySwitchWal?: () => Promise<void>;
  /** The server's hook scripts, for the archiving the check does (Barman runs the archive hooks there too). */
  hooks?: ServerHooks | null;
}

/**
 * `WAL archive`: FAILED until at least one WAL is catalogued. Like Barman, it first
 * tries to archive whatever already waits in incoming/ or streaming/.
 */
export async function walArchiveCheck(server: ServerConfig, opts: WalArchiveCheckOptions = {}): Promise<CheckResult> {
  const ok = { name: 'WAL archive', ok: true, hint: '' };
  if (!(await xlogDbEmpty(server)) || opts.hasWaitingBackup) return ok;
  try {
    await archiveWal(server, { hooks: opts.hooks ?? null });
  } catch {
    // The check reports the state of the archive; archive-wal reports its own errors.
  }
  if (!(await xlogDbEmpty(server))) return ok;
  if (opts.trySwitchWal) {
    await opts.trySwitchWal().catch(() => undefined);
    if (!(await xlogDbEmpty(server))) return ok;
  }
  return { name: 'WAL archive', ok: false, hint: 'please make sure WAL shipping is setup' };
}

async function xlogDbEmpty(server: ServerConfig): Promise<boolean> {
  try {
    return (await stat(await xlogDbPath(server.paths))).size === 0;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return true;
    throw err;
  }
}

async function listDir(dir: string, opts: { hidden: boolean }): Promise<string[]> {
  try {
    const names = await readdir(dir);
    return opts.hidden ? names : names.filter((n) => !n.startsWith('.'));
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return [];
    throw err;
  }
}
