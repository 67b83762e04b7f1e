// One maintenance pass over a server, in the order of Barman's `cron` (server.py
// Server.cron): archive the WAL queues, bring WAITING_FOR_WALS backups up to date,
// enforce the retention policy. `barkeep cron` runs it once per server; the daemon
// runs the same pass every minute.
//
// Barman spawns archive-wal and check-backup as detached processes and learns
// nothing of their fate; barkeep runs them inline so that the pass can report what
// each step did. Every step has its own error boundary: a step that fails is
// reported and the later steps still run (a full streaming/ must not stop
// retention, nor a damaged backup.info the archiving).
//
// Locks are the ones the commands take, so a pass never races them:
// `.<server>-cron.lock` for the whole pass (one pass per server at a time, CLI or
// daemon), `.<server>-archive-wal.lock` inside archiveWal, `.<server>-<id>.lock`
// around each check and each deletion, and retention waits for the next pass while
// `.<server>-backup.lock` is held by a running backup.
import { basename, dirname } from 'node:path';
import { refreshBackupStatus } from '../backup/check-backup.ts';
import { deleteBackup } from '../backup/delete-backup.ts';
import type { ServerHooks } from '../hooks/server-hooks.ts';
import { retentionStatusOf } from '../backup/retention.ts';
import { serverRetentionReport } from '../backup/server-retention.ts';
import { type BackupStatus, STATUS_COPY_DONE } from '../catalog/backup-info.ts';
import { type CatalogBackup, type CatalogProblem, listBackups } from '../catalog/catalog.ts';
import { backupDataDirectory, deleteAnnotationPath, xlogDbPath } from '../catalog/layout.ts';
import { readLockOwner, serverLockPath, tryAcquireLock } from '../catalog/locks.ts';
import { readXlogDb } from '../catalog/xlog-db.ts';
import type { ServerConfig } from '../config/load.ts';
import { formatRetentionPolicy } from '../config/retention-policy.ts';
import type { Logger } from '../log.ts';
import { ensureDir, listDirOrEmpty, pathExists, unlinkDurable } from '../util/durable-fs.ts';
import { prettySize } from '../util/human.ts';
import { type ArchiveEvent, type ArchiveQueueReport, archiveWal } from '../wal/archiver.ts';
import { failInterruptedBackups } from './interrupted-backups.ts';

export type MaintenanceStep = 'archive-wal' | 'check-backup' | 'retention';

/** ok: done (possibly with nothing to do); skipped: not applicable or left to the next pass; failed: see `message`. */
export type StepOutcome = 'ok' | 'skipped' | 'failed';

interface StepBase {
  outcome: StepOutcome;
  /** Why the step failed or was skipped; null when it went fine. */
  message: string | null;
}

export interface ArchiveQueueSummary {
  source: ArchiveQueueReport['source'];
  directory: string;
  found: number;
  archived: string[];
  /** Already archived with other content: moved to errors/. */
  duplicates: string[];
  /** Not WAL: moved to errors/. */
  unknown: string[];
  failure: { name: string; message: string } | null;
}

export interface ArchiveStepReport extends StepBase {
  step: 'archive-wal';
  queues: ArchiveQueueSummary[];
}

export interface CheckedBackup {
  backupId: string;
  previous: BackupStatus;
  status: BackupStatus;
  /** backup.info's error (why it is FAILED), or why it could not be checked. */
  error: string | null;
}

export interface CheckStepReport extends StepBase {
  step: 'check-backup';
  backups: CheckedBackup[];
}

export interface DeletedBackup {
  backupId: string;
  /** Why retention removed it, e.g. "OBSOLETE under REDUNDANCY 2". */
  reason: string;
  /** Incremental backups removed with it (its tree). */
  dependents: string[];
  /** Size of the backup data removed (deduplicated size from backup.info). */
  backupBytes: number;
  /** WAL files removed from the archive, in xlog.db order. */
  walRemoved: string[];
  walBytes: number;
}

export interface RetentionStepReport extends StepBase {
  step: 'retention';
  /** The policy enforced, in Barman's spelling; null when none is configured. */
  policy: string | null;
  deleted: DeletedBackup[];
  /** OBSOLETE backups left in place, and why (keep request, minimum_redundancy, busy...). */
  notDeleted: { backupId: string; reason: string }[];
}

export type StepReport = ArchiveStepReport | CheckStepReport | RetentionStepReport;

export type MessageLevel = 'info' | 'warning' | 'error';

export interface MaintenanceMessage {
  level: MessageLevel;
  text: string;
}

export interface MaintenanceReport {
  server: string;
  /** The instant the pass judged retention against (ISO 8601). */
  now: string;
  /** failed when any step failed; skipped when the pass did not run (another pass holds the server). */
  outcome: StepOutcome;
  /** Why the whole pass was skipped or could not run. */
  message: string | null;
  steps: StepReport[];
  /** What `barman cron` (and the commands it spawns) would print, in order. */
  messages: MaintenanceMessage[];
}

export type MaintenanceEvent =
  | { type: 'message'; server: string; level: MessageLevel; text: string }
  /** A step has ended (whatever its outcome). */
  | { type: 'step'; server: string; report: StepReport };

export interface MaintenanceOptions {
  logger: Logger;
  /** Injected clock for the retention policy (tests, dry runs); default: now. */
  now?: Date;
  onEvent?: (e: MaintenanceEvent) => void;
  /** The server's hook scripts (archive and WAL-delete hooks per file, delete hooks per backup). */
  hooks?: ServerHooks | null;
}

const STEP_TITLE: Record<MaintenanceStep, string> = {
  'archive-wal': 'WAL archiving',
  'check-backup': 'checking WAITING_FOR_WALS backups',
  retention: 'enforcing the retention policy',
};

/** What the steps share: the server, the clock, and the channels for messages and logs. */
interface Pass {
  server: ServerConfig;
  now: Date;
  log: Logger;
  hooks: ServerHooks | null;
  say(level: MessageLevel, text: string): void;
}

export async function maintenancePass(server: ServerConfig, opts: MaintenanceOptions): Promise<MaintenanceReport> {
  const now = opts.now ?? new Date();
  const log = opts.logger.child({ server: server.name, task: 'maintenance' });
  const report: MaintenanceReport = { server: server.name, now: now.toISOString(), outcome: 'ok', message: null, steps: [], messages: [] };
  const emit = opts.onEvent ?? (() => undefined);
  const pass: Pass = {
    server,
    now,
    log,
    hooks: opts.hooks ?? null,
    say(level, text) {
      report.messages.push({ level, text });
      if (level === 'warning') log.warn(text);
      else if (level === 'error') log.error(text);
      emit({ type: 'message', server: server.name, level, text });
    },
  };

  if (server.settings.primary_ssh_command) {
    // A Barman passive node only syncs from its primary; barkeep cannot, and must not
    // apply a local retention policy to a copy it does not own.
    report.outcome = 'skipped';
    report.message = `server ${server.name} is a passive node (primary_ssh_command), which barkeep does not support: nothing done`;
    pass.say('warning', report.message);
    return report;
  }

  const lockPath = serverLockPath(server.paths.lockDirectory, server.name, 'cron');
  let lock: Awaited<ReturnType<typeof tryAcquireLock>>;
  try {
    await ensureDir(server.paths.lockDirectory);
    lock = await tryAcquireLock(lockPath);
  } catch (err) {
    report.outcome = 'failed';
    report.message = `cannot take the lock ${lockPath}: ${errorText(err)}`;
    pass.say('error', `Maintenance of server ${server.name} could not start: ${report.message}`);
    return report;
  }
  if (lock.busy) {
    report.outcome = 'skipped';
    report.message = `another maintenance pass (PID ${lock.pid}) is running`;
    pass.say('info', `Another cron process is already running on server ${server.name}. Skipping to the next server`);
    return report;
  }
  const run = async (step: StepReport, body: () => Promise<void>): Promise<void> => {
    await boundary(pass, step, body);
    report.steps.push(step);
    emit({ type: 'step', server: server.name, report: step });
  };
  try {
    const archive: ArchiveStepReport = { step: 'archive-wal', outcome: 'ok', message: null, queues: [] };
    await run(archive, () => archiveStep(pass, archive));
    const check: CheckStepReport = { step: 'check-backup', outcome: 'ok', message: null, backups: [] };
    await run(check, () => checkStep(pass, check));
    const retention: RetentionStepReport = { step: 'retention', outcome: 'ok', message: null, policy: null, deleted: [], notDeleted: [] };
    await run(retention, () => retentionStep(pass, retention));
  } finally {
    await lock.release();
  }
  if (report.steps.some((s) => s.outcome === 'failed')) report.outcome = 'failed';
  // What happened is logged where it happened; this line only closes the pass.
  log.debug({ outcome: report.outcome, steps: report.steps.map((s) => ({ step: s.step, outcome: s.outcome, message: s.message })) }, 'maintenance pass finished');
  return report;
}

/** Runs a step; whatever it throws becomes its failure, and the pass goes on. */
async function boundary(pass: Pass, report: StepReport, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    report.outcome = 'failed';
    report.message = errorText(err);
    // The error line below is what operators read; the stack is for debugging.
    pass.log.debug({ step: report.step, err }, `maintenance step ${report.step} threw`);
  }
  if (report.outcome === 'failed') {
    pass.say('error', `Maintenance of server ${pass.server.name}: ${STEP_TITLE[report.step]} failed: ${report.message ?? 'unknown error'}`);
  }
}

// ------------------------------------------------------------------ archive-wal

async function archiveStep(pass: Pass, report: ArchiveStepReport): Promise<void> {
  const { server } = pass;
  if (!server.settings.archiver && !server.settings.streaming_archiver) {
    report.outcome = 'skipped';
    report.message = 'neither archiver nor streaming_archiver is on';
    return;
  }
  const lockPath = serverLockPath(server.paths.lockDirectory, server.name, 'archive-wal');
  const running = await readLockOwner(lockPath);
  // Barman announces the run once it knows no other archive-wal holds the lock.
  if (!running?.live) pass.say('info', `Starting WAL archiving for server ${server.name}`);
  const result = running?.live ? { busy: true as const, pid: running.pid } : await archiveWal(server, { onEvent: (e) => archiveLines(pass, e), hooks: pass.hooks });
  if (result.busy) {
    report.outcome = 'skipped';
    report.message = `archive-wal is running (PID ${result.pid})`;
    pass.say('info', `Another archive-wal process is already running on server ${server.name}. Skipping to the next server`);
    return;
  }
  report.queues = result.queues.map((q) => ({
    source: q.source,
    directory: q.directory,
    found: q.found,
    archived: q.files.filter((f) => f.outcome !== 'duplicate').map((f) => f.name),
    duplicates: q.files.filter((f) => f.outcome === 'duplicate').map((f) => f.name),
    unknown: q.unknown.map((u) => u.name),
    failure: q.failure,
  }));
  const failures = report.queues.filter((q) => q.failure !== null);
  if (failures.length > 0) {
    report.outcome = 'failed';
    report.message = failures.map((q) => `cannot archive ${q.failure!.name} from ${q.directory}: ${q.failure!.message}`).join('; ');
  }
}

/** archive-wal's console lines and log entries for one archiver event. */
function archiveLines(pass: Pass, e: ArchiveEvent): void {
  const name = pass.server.name;
  if (e.type === 'queue-start') {
    const batch = e.runSize < e.found ? ` (batch size: ${e.runSize})` : '';
    pass.say('info', `Processing xlog segments from ${e.source} for ${name}${batch}`);
  } else if (e.type === 'file') {
    pass.say('info', `\t${e.file.name}`);
    if (e.file.outcome === 'duplicate') {
      pass.say('info', `\tError: ${e.file.name} is already present in server ${name}. File moved to errors directory.`);
      pass.log.warn({ wal: e.file.name, errorPath: e.file.path }, 'duplicate WAL with different content moved to errors directory');
    } else {
      pass.log.info({ wal: e.file.name, outcome: e.file.outcome, entry: e.file.entry }, 'archived WAL');
    }
  } else {
    const r = e.report;
    if (r.files.length === 0 && r.failure === null) pass.say('info', '\tno file found');
    if (r.failure) pass.say('error', `Cannot archive ${r.failure.name} from ${r.source} for server ${name}: ${r.failure.message}`);
    if (r.unknown.length > 0) {
      pass.say('info', `Some unknown objects have been found while processing xlog segments for ${name}. Objects moved to errors directory:`);
      for (const u of r.unknown) pass.say('info', `\t${u.name}`);
      pass.log.warn({ files: r.unknown }, 'unexpected files moved to errors directory');
    }
  }
}

// ------------------------------------------------------------------ check-backup

/**
 * EMPTY or STARTED backups nothing is taking any more become FAILED (interrupted-backups.ts); then
 * every WAITING_FOR_WALS backup, oldest first (Barman checks only the oldest per
 * run; inline checks are cheap, and a later backup need not wait for the next pass).
 */
async function checkStep(pass: Pass, report: CheckStepReport): Promise<void> {
  const { server } = pass;
  const problems: string[] = [];
  // First the EMPTY/STARTED backups whose process is gone (barkeep's addition: Barman leaves them so).
  try {
    for (const b of await failInterruptedBackups(server, undefined, pass.hooks)) {
      report.backups.push({ backupId: b.backupId, previous: b.previous, status: 'FAILED', error: b.error });
      pass.log.error({ backup: b.backupId, error: b.error }, `backup ${b.backupId} is now FAILED`);
      pass.say('error', `Backup ${b.backupId} of server ${server.name} has been marked as FAILED: ${b.error}`);
    }
  } catch (err) {
    problems.push(`interrupted backups: ${errorText(err)}`);
  }
  const catalog = await listBackups(server.paths);
  for (const w of catalog.warnings) pass.log.warn({ warning: w }, 'backup catalog');
  for (const b of catalog.backups.filter((x) => x.info.status === 'WAITING_FOR_WALS')) {
    pass.say('info', `Starting check-backup for backup ${b.backupId} of server ${server.name}`);
    const entry: CheckedBackup = { backupId: b.backupId, previous: b.info.status, status: b.info.status, error: null };
    report.backups.push(entry);
    try {
      const outcome = await refreshBackupStatus(server, b.backupId);
      if (outcome.kind === 'busy') {
        entry.error = `another process (PID ${outcome.pid}) holds the lock of backup ${b.backupId}`;
        pass.log.debug({ backup: b.backupId, pid: outcome.pid }, 'check-backup: backup lock busy, left to the next pass');
      } else if (outcome.kind === 'failed') {
        entry.status = 'FAILED';
      } else {
        entry.status = outcome.status;
        entry.error = outcome.error;
        if (outcome.changed) pass.log.info({ backup: b.backupId, from: outcome.previous, to: outcome.status, error: outcome.error }, `backup ${b.backupId} is now ${outcome.status}`);
        if (outcome.status === 'FAILED') pass.say('error', `This backup has been marked as FAILED due to the following reason: ${outcome.error ?? ''}`);
      }
    } catch (err) {
      entry.error = errorText(err);
      problems.push(`backup ${b.backupId}: ${entry.error}`);
    }
  }
  for (const p of catalog.errors) problems.push(`unreadable backup.info: ${problemText(p)}`);
  if (problems.length > 0) {
    report.outcome = 'failed';
    report.message = problems.join('; ');
  }
}

// ------------------------------------------------------------------ retention

/** Barman's cron_retention_policy: every OBSOLETE backup goes, oldest first. */
async function retentionStep(pass: Pass, report: RetentionStepReport): Promise<void> {
  const { server, log } = pass;
  const s = server.settings;
  const policy = s.retention_policy;
  if (policy === null || policy === undefined) {
    report.outcome = 'skipped';
    report.message = 'no retention_policy: not enforced';
    return;
  }
  report.policy = formatRetentionPolicy(policy);
  if ((s.retention_policy_mode ?? 'auto') !== 'auto') {
    report.outcome = 'skipped';
    report.message = `retention_policy_mode is ${s.retention_policy_mode}: not enforced automatically`;
    return;
  }
  const backupLock = await readLockOwner(serverLockPath(server.paths.lockDirectory, server.name, 'backup'));
  if (backupLock?.live) {
    report.outcome = 'skipped';
    report.message = `a backup is running (PID ${backupLock.pid}): retention is left to the next pass`;
    log.info(report.message);
    return;
  }

  const catalog = await listBackups(server.paths);
  const statuses = await serverRetentionReport(server.paths, s, catalog.backups, pass.now);
  if (statuses === null) return;
  const reasons = new Map<string, string>();
  for (const b of catalog.backups) {
    if (retentionStatusOf(statuses, b.backupId) === 'OBSOLETE') reasons.set(b.backupId, `OBSOLETE under ${report.policy}`);
  }
  for (const b of catalog.backups) {
    // Someone is working on it (a delete, a check): neither resumed nor called an orphan.
    if ((await readLockOwner(serverLockPath(server.paths.lockDirectory, server.name, b.backupId)))?.live) continue;
    if (await resumesDelete(pass, b)) {
      reasons.set(b.backupId, 'an interrupted deletion (delete_this annotation) is resumed');
    } else if (await isOrphan(server, b)) {
      pass.say(
        'warning',
        `Backup '${b.backupId}' is an orphan backup, this is possibly the result of an incomplete delete operation. ` +
          `Please manually delete the following files or directories if present:\n* ${backupDataDirectory(server.paths, b.backupId)} \n* ${b.infoPath} \n`,
      );
      if (reasons.delete(b.backupId)) report.notDeleted.push({ backupId: b.backupId, reason: 'orphan backup (its data directory is gone)' });
    }
  }

  const unreadable = catalog.errors.map((p) => ({ backupId: backupIdOfInfoPath(p.path), path: p.path }));
  const failures: string[] = [];
  for (const [id, reason] of [...reasons].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    let outcome: DeleteOutcome;
    try {
      outcome = await deleteObsolete(pass, id, reason, unreadable);
    } catch (err) {
      // One backup that cannot be deleted does not keep the others.
      outcome = { kind: 'failed', reason: errorText(err) };
      pass.say('error', `Failure deleting backup ${id} for server ${server.name}: ${outcome.reason}`);
    }
    if (outcome.kind === 'deleted') report.deleted.push(outcome.deleted);
    else if (outcome.kind === 'kept') report.notDeleted.push({ backupId: id, reason: outcome.reason });
    else if (outcome.kind === 'failed') failures.push(`backup ${id}: ${outcome.reason}`);
  }
  if (failures.length > 0) {
    report.outcome = 'failed';
    report.message = failures.join('; ');
  }
}

type DeleteOutcome = { kind: 'deleted'; deleted: DeletedBackup } | { kind: 'kept'; reason: string } | { kind: 'failed'; reason: string } | { kind: 'gone' };

async function deleteObsolete(pass: Pass, id: string, reason: string, unreadable: readonly { backupId: string; path: string }[]): Promise<DeleteOutcome> {
  const { server, log } = pass;
  // Read afresh: an earlier deletion in this pass may have taken this backup with its tree.
  const catalog = (await listBackups(server.paths)).backups;
  const backup = catalog.find((b) => b.backupId === id);
  if (!backup) return { kind: 'gone' };

  // Without a readable backup.info, deleteBackup cannot see that backup, and its WAL
  // cleanup would remove WAL the hidden backup needs if it sorts before the next one.
  const next = catalog.find((b) => b.backupId > id && STATUS_COPY_DONE.includes(b.info.status));
  const hidden = unreadable.find((u) => next === undefined || u.backupId < next.backupId);
  if (hidden) {
    const why = `the backup.info ${hidden.path} is unreadable, and removing WAL for backup ${id} could remove WAL that backup needs`;
    pass.say('warning', `Skipping retention policy for backup ${id} of server ${server.name}: ${why}`);
    return { kind: 'kept', reason: why };
  }
  const holder = await readLockOwner(serverLockPath(server.paths.lockDirectory, server.name, id));
  if (holder?.live) {
    pass.say('warning', `Another action is in progress for the backup ${id} of server ${server.name}, skipping retention policy application`);
    return { kind: 'kept', reason: `another process (PID ${holder.pid}) holds the lock of the backup` };
  }

  const dependents = descendants(backup, catalog);
  const backupBytes = [backup, ...dependents].reduce((sum, b) => sum + (b.info.deduplicated_size ?? b.info.size ?? 0), 0);
  const walBefore = await walSizes(server);
  const warnings: string[] = [];
  const errors: string[] = [];
  pass.say('info', `Enforcing retention policy: removing backup ${id} for server ${server.name}`);
  const done = await deleteBackup(server, id, {
    skipWalCleanupIfStandalone: false,
    hooks: pass.hooks,
    messages: {
      info: (l) => pass.say('info', l),
      warning: (l) => {
        warnings.push(l);
        pass.say('warning', l);
      },
      error: (l) => {
        errors.push(l);
        pass.say('error', l);
      },
    },
  });
  const walAfter = await walSizes(server);
  const walRemoved = [...walBefore.keys()].filter((name) => !walAfter.has(name));
  const walBytes = walRemoved.reduce((sum, name) => sum + (walBefore.get(name) ?? 0), 0);
  if (!done) {
    if (errors.length > 0) {
      log.error({ backup: id, reason, errors, walRemoved: walRemoved.length }, `retention: deleting backup ${id} failed`);
      return { kind: 'failed', reason: errors.join(' ') };
    }
    log.info({ backup: id, reason, refused: warnings }, `retention: backup ${id} not deleted`);
    return { kind: 'kept', reason: warnings.join(' ') || 'deletion refused' };
  }
  const deleted: DeletedBackup = { backupId: id, reason, dependents: dependents.map((b) => b.backupId), backupBytes, walRemoved, walBytes };
  log.info(
    {
      backup: id,
      reason,
      dependents: deleted.dependents,
      backupBytes,
      walFilesRemoved: walRemoved.length,
      walBytes,
      freedBytes: backupBytes + walBytes,
      firstWal: walRemoved[0] ?? null,
      lastWal: walRemoved.at(-1) ?? null,
    },
    `retention: deleted backup ${id} (${reason}): freed ${prettySize(backupBytes + walBytes)}, ${walRemoved.length} WAL files removed`,
  );
  if (walRemoved.length > 0) log.debug({ backup: id, walRemoved }, 'retention: WAL files removed');
  return { kind: 'deleted', deleted };
}

/**
 * A delete annotation while nobody holds the backup's lock is a deletion that was
 * interrupted: Barman marks the backup OBSOLETE so that this pass finishes it,
 * and drops the annotation (deleteBackup writes it again).
 */
async function resumesDelete(pass: Pass, b: CatalogBackup): Promise<boolean> {
  const annotation = deleteAnnotationPath(pass.server.paths, b.backupId);
  if (!(await pathExists(annotation))) return false;
  await unlinkDurable(annotation);
  pass.log.info({ backup: b.backupId }, 'retention: resuming an interrupted deletion');
  return true;
}

/** Barman's is_orphan: a backup.info whose backup data is gone. */
async function isOrphan(server: ServerConfig, b: CatalogBackup): Promise<boolean> {
  if (b.info.status === 'EMPTY') return false;
  const dir = backupDataDirectory(server.paths, b.backupId);
  if (!b.legacy) return !(await pathExists(dir));
  const left = await listDirOrEmpty(dir);
  return left.length === 1 && left[0] === 'backup.info';
}

function descendants(root: CatalogBackup, catalog: readonly CatalogBackup[]): CatalogBackup[] {
  const byId = new Map(catalog.map((b) => [b.backupId, b]));
  const out: CatalogBackup[] = [];
  const pending = [...(root.info.children_backup_ids ?? [])];
  const seen = new Set<string>([root.backupId]);
  while (pending.length > 0) {
    const id = pending.shift() as string;
    const b = byId.get(id);
    if (seen.has(id) || !b) continue;
    seen.add(id);
    out.push(b);
    pending.push(...(b.info.children_backup_ids ?? []));
  }
  return out;
}

/** name -> size of every file xlog.db lists (a line torn by a concurrent append is skipped). */
async function walSizes(server: ServerConfig): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  for await (const entry of readXlogDb(await xlogDbPath(server.paths), { onInvalidLine: () => undefined })) sizes.set(entry.name, entry.size);
  return sizes;
}

/** The backup ID a backup.info path belongs to: meta/<id>-backup.info or base/<id>/backup.info. */
function backupIdOfInfoPath(path: string): string {
  const file = basename(path);
  const m = /^(.+?)-backup\.info$/.exec(file);
  if (m) return m[1] as string;
  // Unknown layout: '' sorts before every ID, so it protects every deletion.
  return file === 'backup.info' ? basename(dirname(path)) : '';
}

function problemText(p: CatalogProblem): string {
  return p.message.includes(p.path) ? p.message : `${p.path}: ${p.message}`;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
