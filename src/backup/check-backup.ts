// check-backup: whether every WAL segment a backup needs for consistency
// (begin_wal..end_wal) is archived, which moves it between WAITING_FOR_WALS, DONE
// and FAILED (Barman's BackupManager.check_backup). The backup executor runs it
// when a backup ends, the scheduler for the oldest WAITING_FOR_WALS backup.
import { stat } from 'node:fs/promises';
import { type BackupInfo, type BackupStatus, DEFAULT_XLOG_SEGMENT_SIZE, writeBackupInfo } from '../catalog/backup-info.ts';
import { BackupNotFoundError, loadBackup } from '../catalog/catalog.ts';
import { metaBackupInfoPath, type ServerPaths, walPath, xlogDbPath } from '../catalog/layout.ts';
import { serverLockPath, tryAcquireLock } from '../catalog/locks.ts';
import { readXlogDb } from '../catalog/xlog-db.ts';
import { isErrno } from '../util/durable-fs.ts';
import { isWalSegment, requiredWalSegments } from './wal-range.ts';

export interface CheckBackupResult {
  status: BackupStatus;
  error: string | null;
}

export type CheckableBackup = Pick<BackupInfo, 'status' | 'error' | 'begin_wal' | 'end_wal' | 'xlog_segment_size' | 'version'>;

/**
 * The status a backup should have given the archived WAL names (segments of any
 * timeline, in any order; other names are ignored):
 * - no segment of the backup's timeline, or none from begin_wal on: WAITING_FOR_WALS;
 * - a required segment missing below the newest archived one: FAILED;
 * - all required segments up to end_wal present: DONE;
 * - otherwise (archive not yet at end_wal): WAITING_FOR_WALS.
 * A backup without end_wal is still running and keeps its status.
 */
export function checkBackupStatus(info: CheckableBackup, walNames: Iterable<string>): CheckBackupResult {
  const unchanged = { status: info.status, error: info.error };
  const begin = info.begin_wal;
  const end = info.end_wal;
  if (end === null || begin === null) return unchanged;
  const timeline = begin.slice(0, 8);
  const archived = new Set<string>();
  let lastArchived: string | null = null;
  for (const name of walNames) {
    if (!isWalSegment(name) || name.slice(0, 8) !== timeline) continue;
    archived.add(name);
    if (lastArchived === null || name > lastArchived) lastArchived = name;
  }
  if (lastArchived === null || lastArchived < begin) return { status: 'WAITING_FOR_WALS', error: info.error };
  for (const wal of requiredWalSegments(begin, end, info.xlog_segment_size ?? DEFAULT_XLOG_SEGMENT_SIZE, info.version)) {
    if (wal > lastArchived) break;
    if (!archived.has(wal)) {
      return { status: 'FAILED', error: `At least one WAL file is missing. The first missing WAL file is ${wal}` };
    }
  }
  return { status: end <= lastArchived ? 'DONE' : 'WAITING_FOR_WALS', error: info.error };
}

export type RefreshOutcome =
  | { kind: 'checked'; previous: BackupStatus; status: BackupStatus; error: string | null; changed: boolean }
  /** Another process holds `.<server>-<id>.lock` (e.g. it is deleting the backup). */
  | { kind: 'busy'; pid: number }
  /** FAILED backups are never re-validated: a copy error must not turn into DONE. */
  | { kind: 'failed' };

export interface RefreshTarget {
  name: string;
  paths: ServerPaths;
}

/**
 * Runs checkBackupStatus on a catalog backup under its `.<server>-<id>.lock` and
 * saves backup.info durably when the status changes. The archive is what xlog.db
 * lists, minus required segments whose file is missing from wals/.
 */
export async function refreshBackupStatus(server: RefreshTarget, backupId: string): Promise<RefreshOutcome> {
  const first = await loadBackup(server.paths, backupId);
  if (first === null) throw new BackupNotFoundError(`Unknown backup '${backupId}' for server '${server.name}'`, backupId);
  if (first.info.status === 'FAILED') return { kind: 'failed' };
  const lock = await tryAcquireLock(serverLockPath(server.paths.lockDirectory, server.name, backupId));
  if (lock.busy) return { kind: 'busy', pid: lock.pid };
  try {
    // Read again under the lock: a delete or another check may have run meanwhile.
    const current = await loadBackup(server.paths, backupId);
    if (current === null) throw new BackupNotFoundError(`Unknown backup '${backupId}' for server '${server.name}'`, backupId);
    const info = current.info;
    if (info.status === 'FAILED') return { kind: 'failed' };
    const result = checkBackupStatus(info, await archivedSegments(server.paths, info));
    const changed = result.status !== info.status || result.error !== info.error;
    if (changed) await writeBackupInfo(metaBackupInfoPath(server.paths, backupId), { ...info, status: result.status, error: result.error });
    return { kind: 'checked', previous: info.status, status: result.status, error: result.error, changed };
  } finally {
    await lock.release();
  }
}

/** Segment names of the backup's timeline that xlog.db lists and (in the required range) exist on disk. */
async function archivedSegments(paths: ServerPaths, info: BackupInfo): Promise<string[]> {
  if (info.begin_wal === null || info.end_wal === null) return [];
  const timeline = info.begin_wal.slice(0, 8);
  const names: string[] = [];
  // A line torn by a concurrent append is skipped: it is complete on the next check.
  for await (const entry of readXlogDb(await xlogDbPath(paths), { onInvalidLine: () => undefined })) {
    if (entry.name.startsWith(timeline) && isWalSegment(entry.name)) names.push(entry.name);
  }
  const listed = new Set(names);
  const missing = new Set<string>();
  for (const wal of requiredWalSegments(info.begin_wal, info.end_wal, info.xlog_segment_size ?? DEFAULT_XLOG_SEGMENT_SIZE, info.version)) {
    if (listed.has(wal) && !(await fileExists(walPath(paths, wal)))) missing.add(wal);
  }
  return missing.size === 0 ? names : names.filter((n) => !missing.has(n));
}

async function fileExists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return false;
    throw err;
  }
}
