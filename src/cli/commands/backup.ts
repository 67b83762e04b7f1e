import { cloudKeepFrom } from '../../cloud/tier-state.ts';
import { refreshBackupStatus } from '../../backup/check-backup.ts';
import { purgeWalBefore } from '../../backup/delete-backup.ts';
import { BackupFailed, BackupRefused, takeBackup, type BackupOutcome } from '../../backup/executor.ts';
import { writeBackupInfo } from '../../catalog/backup-info.ts';
import { listBackups, loadBackup } from '../../catalog/catalog.ts';
import { metaBackupInfoPath } from '../../catalog/layout.ts';
import { checkServer } from '../../checks/server-checks.ts';
import type { ServerConfig } from '../../config/load.ts';
import { currentBackupHookEnv } from '../../hooks/hook-env.ts';
import { HookStopError, ServerHooks } from '../../hooks/server-hooks.ts';
import { prettySize } from '../../util/human.ts';
import { archiveWal } from '../../wal/archiver.ts';
import type { CommandHost } from '../command-host.ts';
import { CliError, type CliContext } from '../context.ts';
import { runArchiveWal } from './wal-archive.ts';
import { runVerifyBackup } from './verify-backup.ts';
import { progressLine } from '../progress-line.ts';

// `barkeep backup [options] SERVER...|all`, with Barman's flags and messages.

interface BackupCliOptions {
  name?: string;
  immediateCheckpoint?: boolean;
  retryTimes?: string;
  retrySleep?: string;
  retry?: boolean;
  bwlimit?: string;
  wait?: boolean;
  waitTimeout?: string;
}

// Checks about the catalog's state, which a new backup does not depend on
// (and often fixes): they do not block it.
const NON_BLOCKING = new Set(['WAL archive', 'WAL without backups', 'backup maximum age', 'failed backups', 'minimum redundancy requirements', 'wal maximum age', 'archiver errors', 'WAL continuity']);

export function register(host: CommandHost): void {
  host.program
    .command('backup')
    .description('take a base backup of servers over the replication protocol')
    .argument('<server...>', "server names, or 'all'")
    .option('--name <name>', 'a friendly name, usable instead of the backup ID')
    .option('--immediate-checkpoint', 'start with a fast checkpoint (overrides immediate_checkpoint)')
    .option('--no-immediate-checkpoint', 'start with a spread checkpoint')
    .option('--retry-times <n>', 'retries of a failed copy (overrides basebackup_retry_times)')
    .option('--retry-sleep <seconds>', 'wait between retries (overrides basebackup_retry_sleep)')
    .option('--no-retry', 'no retry (--retry-times 0)')
    .option('--bwlimit <kbps>', 'bandwidth limit in kB/s, 0 for none (overrides bandwidth_limit)')
    .option('-w, --wait', 'wait until every WAL the backup needs is archived (the backup is DONE)')
    .option('--wait-timeout <seconds>', 'how long --wait waits; 0 waits forever', '0')
    .action(async (names: string[], opts: BackupCliOptions) => {
      host.setExitCode(await runBackup(host.context(), names, opts));
    });
}

function count(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new CliError(`${flag} '${value}': use a whole number >= 0`);
  return n;
}

async function runBackup(ctx: CliContext, names: string[], opts: BackupCliOptions): Promise<number> {
  const retryTimes = opts.retry === false ? 0 : count(opts.retryTimes, '--retry-times');
  const retrySleep = count(opts.retrySleep, '--retry-sleep');
  const bwlimit = count(opts.bwlimit, '--bwlimit');
  const waitTimeout = count(opts.waitTimeout, '--wait-timeout') ?? 0;
  let failed = false;
  const stop = stopOnSignals();
  try {
    for (const server of ctx.selectServers(names)) {
      if (stop.signal.aborted) break;
      if (!(await backupOne(ctx, server, { ...opts, retryTimes, retrySleep, bwlimit, waitTimeout, signal: stop.signal }))) failed = true;
    }
  } finally {
    stop.dispose();
  }
  return failed || ctx.hadErrors || stop.signal.aborted ? 1 : 0;
}

/**
 * SIGTERM (the daemon stopping, systemd) or Ctrl-C ends the backup cleanly: the copy
 * is cut and the backup recorded FAILED with the signal's name, rather than the
 * process vanishing and leaving it STARTED. A second signal exits at once.
 */
function stopOnSignals(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const signals = ['SIGTERM', 'SIGINT'] as const;
  const handler = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
    controller.abort(sig);
  };
  for (const sig of signals) process.on(sig, handler);
  return { signal: controller.signal, dispose: () => signals.forEach((sig) => process.off(sig, handler)) };
}

async function backupOne(
  ctx: CliContext,
  server: ServerConfig,
  opts: Omit<BackupCliOptions, 'retryTimes' | 'retrySleep' | 'bwlimit' | 'waitTimeout'> & { retryTimes?: number; retrySleep?: number; bwlimit?: number; waitTimeout: number; signal: AbortSignal },
): Promise<boolean> {
  const hooks = ServerHooks.forServer(server, { configFile: ctx.config.file, logger: ctx.logger });
  const report = await checkServer(server, undefined, hooks);
  const blocking = report.checks.filter((c) => !c.ok && !NON_BLOCKING.has(c.name));
  if (blocking.length > 0) {
    ctx.error(`Impossible to start the backup. Check the log for more details, or run 'barkeep check ${server.name}'`);
    for (const c of blocking) ctx.error(`\t${c.name}: FAILED${c.hint ? ` (${c.hint})` : ''}`);
    return false;
  }
  const progress = progressLine(ctx);
  let outcome;
  try {
    outcome = await takeBackup({
      server,
      hooks,
      logger: ctx.logger,
      print: (line) => {
        progress.clear();
        ctx.print(line);
      },
      ...(opts.name === undefined ? {} : { name: opts.name }),
      ...(opts.immediateCheckpoint === undefined ? {} : { immediateCheckpoint: opts.immediateCheckpoint }),
      ...(opts.retryTimes === undefined ? {} : { retryTimes: opts.retryTimes }),
      ...(opts.retrySleep === undefined ? {} : { retrySleep: opts.retrySleep }),
      ...(opts.bwlimit === undefined ? {} : { bwlimit: opts.bwlimit }),
      onProgress: progress.update,
      signal: opts.signal,
    });
  } catch (e) {
    progress.clear();
    if (e instanceof BackupFailed && e.cause instanceof HookStopError) {
      ctx.error(`Backup failed starting backup: ${e.cause.message}; backup ${e.backupId} is marked FAILED`);
    } else if (e instanceof BackupRefused || e instanceof BackupFailed) {
      ctx.error(e instanceof BackupFailed ? `Backup failed copying files (${e.message}); backup ${e.backupId} is marked FAILED` : e.message);
    } else {
      throw e;
    }
    if (e instanceof BackupFailed) await postBackupHooks(hooks, server, e.backupId);
    return false;
  }
  progress.clear();
  try {
    return await completeBackup(ctx, server, outcome, hooks, opts);
  } finally {
    // As Barman: after --wait, so that a DONE backup is announced DONE.
    await postBackupHooks(hooks, server, outcome.backupId);
  }
}

async function postBackupHooks(hooks: ServerHooks | null, server: ServerConfig, backupId: string): Promise<void> {
  if (!hooks?.has('backup')) return;
  const backup = await loadBackup(server.paths, backupId);
  if (!backup) return;
  await hooks.post('backup', () => currentBackupHookEnv(server.paths, backupId, backup.info));
}

async function completeBackup(
  ctx: CliContext,
  server: ServerConfig,
  outcome: BackupOutcome,
  hooks: ServerHooks | null,
  opts: { wait?: boolean; waitTimeout: number; signal: AbortSignal },
): Promise<boolean> {
  const { backupId, info } = outcome;

  // Archive what is queued first, so the purge also sees WAL that was still in streaming/.
  await runArchiveWal(ctx, server.name);
  // Barman's rule: the first backup makes older archived WAL useless.
  const others = (await listBackups(server.paths)).backups.filter((b) => b.backupId !== backupId && (b.info.status === 'DONE' || b.info.status === 'WAITING_FOR_WALS'));
  if (others.length === 0 && info.begin_wal) {
    ctx.print(`This is the first backup for server ${server.name}`);
    const removed = await purgeWalBefore(server, info.begin_wal, {
      hooks,
      onHookStop: (m) => ctx.warning(`${m}: the WAL files not removed yet are kept`),
      // Older backups in the bucket may still need it there.
      protectFrom: await cloudKeepFrom(server.paths, server.settings.cloud_destination),
    });
    if (removed.length > 0) {
      ctx.print('WAL segments preceding the current backup have been found:');
      for (const wal of removed) ctx.print(`\t${wal} from server ${server.name} has been removed`);
    }
  }

  let status = await refresh(server, backupId);
  if (opts.wait && status === 'WAITING_FOR_WALS') {
    ctx.print(`Waiting for the WAL files of backup ${backupId} to be archived (up to ${info.end_wal}${opts.waitTimeout ? `, max: ${opts.waitTimeout} seconds` : ''})`);
    const deadline = opts.waitTimeout ? Date.now() + opts.waitTimeout * 1000 : Infinity;
    // A signal ends the wait only: the copy is complete, and the maintenance pass finishes the backup.
    while (status === 'WAITING_FOR_WALS' && Date.now() < deadline && !opts.signal.aborted) {
      await new Promise((r) => setTimeout(r, 500));
      await archiveWal(server, { hooks }).catch(() => undefined);
      status = await refresh(server, backupId);
    }
    if (status === 'WAITING_FOR_WALS') {
      ctx.error(
        opts.signal.aborted
          ? `Interrupted (${String(opts.signal.reason)}) while waiting for the WAL files of backup ${backupId}: it stays WAITING_FOR_WALS until they are archived`
          : `The WAL files of backup ${backupId} were not archived within ${opts.waitTimeout} seconds: it stays WAITING_FOR_WALS`,
      );
      return false;
    }
  }
  if (status === 'DONE') {
    ctx.logger.info({ server: server.name, backupId, size: info.size }, 'backup DONE');
    if (opts.wait) ctx.print(`Backup ${backupId} is DONE (size ${prettySize(info.size ?? 0)})`);
    if (server.settings.verify_backup !== false && (await runVerifyBackup(ctx, server.name, backupId)) !== 0) {
      // A backup that does not match its own manifest must never count as valid.
      await markFailed(server, backupId, `failure verifying the backup (run 'barkeep verify-backup ${server.name} ${backupId}' for the details)`);
      ctx.error(`Backup ${backupId} failed verification and is marked FAILED`);
      return false;
    }
    return true;
  }
  if (status === 'FAILED') {
    ctx.error(`Backup ${backupId} FAILED: a WAL file it needs is missing from the archive (see 'barkeep show-backup ${server.name} ${backupId}')`);
    return false;
  }
  ctx.warning(
    "IMPORTANT: this backup is classified as WAITING_FOR_WALS, meaning that barkeep has not received yet all the required WAL files for the backup consistency.\n" +
      'This is a common behaviour in concurrent backup scenarios, and barkeep automatically sets the backup as DONE once all the required WAL files have been archived.\n' +
      "Hint: execute the backup command with '--wait'",
  );
  return true;
}

async function markFailed(server: ServerConfig, backupId: string, error: string): Promise<void> {
  const backup = await loadBackup(server.paths, backupId);
  if (!backup) return;
  backup.info.status = 'FAILED';
  backup.info.error = error;
  await writeBackupInfo(metaBackupInfoPath(server.paths, backupId), backup.info);
}

async function refresh(server: ServerConfig, backupId: string): Promise<string> {
  const r = await refreshBackupStatus(server, backupId);
  if (r.kind === 'checked') return r.status;
  if (r.kind === 'failed') return 'FAILED';
  return 'WAITING_FOR_WALS';
}
