// Deleting a backup and the WAL only it needed (Barman 3.17 Server.delete_backup +
// BackupManager.delete_backup). The steps run in Barman's order so that a crash at
// any point leaves a state Barman and barkeep recognise:
//   1. meta/<id>-delete_this is written (an interrupted delete is resumed by retention);
//   2. the data (tablespaces, then data/) is removed;
//   3. WAL no remaining backup needs is removed and xlog.db rewritten, under its lock;
//   4. the delete annotation is released, base/<id> removed, backup.info removed last
//      (a backup.info without its directory is what Barman calls an orphan backup).
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { type BackupInfo, type BackupStatus, STATUS_COPY_DONE, writeBackupInfo } from '../catalog/backup-info.ts';
import { BackupNotFoundError, type CatalogBackup, type KeepTarget, listBackups, loadBackup, readKeepAnnotation } from '../catalog/catalog.ts';
import { backupDataDirectory, deleteAnnotationPath, metaBackupInfoPath, metaDirectory, type ServerPaths } from '../catalog/layout.ts';
import { readLockOwner, serverLockPath, tryAcquireLock } from '../catalog/locks.ts';
import { cloudKeepFrom } from '../cloud/tier-state.ts';
import { backupHookEnv } from '../hooks/hook-env.ts';
import { HookStopError, type ServerHooks } from '../hooks/server-hooks.ts';
import { ensureDir, fsyncDir, pathExists, unlinkDurable, writeFileDurable } from '../util/durable-fs.ts';
import { ctime, humanTimedelta } from '../util/human.ts';
import { removeWal, type WalRemovalPlan } from './wal-removal.ts';
import { walTimeline } from './wal-range.ts';

export { purgeWalBefore } from './wal-removal.ts';

/** Where the messages Barman prints go (stdout for info, stderr for the others). */
export interface DeleteMessages {
  info(line: string): void;
  warning(line: string): void;
  error(line: string): void;
}

export interface DeleteServer {
  name: string;
  paths: ServerPaths;
  settings: {
    minimum_redundancy: number | null;
    backup_options: readonly string[] | null;
    cloud_destination?: string | null;
  };
}

export interface DeleteOptions {
  messages: DeleteMessages;
  /**
   * Barman's skip_wal_cleanup_if_standalone: an explicit `delete` (true, the default)
   * removes no WAL when only keep:standalone backups precede the backup; retention
   * (false) removes what those archival backups do not need.
   */
  skipWalCleanupIfStandalone?: boolean;
  /** The server's hook scripts: the delete hooks run around each backup, the WAL-delete ones around each WAL file. */
  hooks?: ServerHooks | null;
}

// Statuses whose WAL Barman's get_timelines_to_protect considers (STATUS_ARCHIVING).
const ARCHIVING: readonly BackupStatus[] = ['STARTED', 'WAITING_FOR_WALS', 'DONE', 'SYNCING'];

/**
 * Deletes backup `backupId` (an exact ID) and, first, every incremental backup that
 * depends on it. Returns false, after saying why through `messages`, when the backup
 * is kept, would break minimum_redundancy, is being taken, or is locked.
 */
export async function deleteBackup(server: DeleteServer, backupId: string, opts: DeleteOptions): Promise<boolean> {
  const { messages } = opts;
  const catalog = (await listBackups(server.paths)).backups;
  const target = catalog.find((b) => b.backupId === backupId);
  if (!target) throw new BackupNotFoundError(`Unknown backup '${backupId}' for server '${server.name}'`, backupId);

  if ((await readKeepAnnotation(server.paths, backupId)) !== null) {
    messages.warning(
      `Skipping delete of backup ${backupId} for server ${server.name} as it has a current keep request. ` +
        'If you really want to delete this backup please remove the keep and try again.',
    );
    return false;
  }
  const minimum = server.settings.minimum_redundancy ?? 0;
  const fullDone = catalog.filter((b) => b.info.status === 'DONE' && b.info.parent_backup_id === null).length;
  if (target.info.status === 'DONE' && target.info.parent_backup_id === null && minimum >= fullDone) {
    messages.warning(
      `Skipping delete of backup ${backupId} for server ${server.name} due to minimum redundancy requirements ` +
        `(minimum redundancy = ${minimum}, current redundancy = ${fullDone})`,
    );
    return false;
  }
  // The backup being taken right now (Barman 3.4's check, which 3.17 replaced by refusing
  // any delete while a backup runs).
  if ((target.info.status === 'STARTED' || target.info.status === 'EMPTY') && (await backupRunning(server))) {
    messages.error(`Cannot delete a running backup (${server.name} ${backupId})`);
    return false;
  }
  if (target.info.children_backup_ids !== null && target.info.children_backup_ids.length > 0) {
    messages.warning(`Backup ${backupId} has incremental backups which depend on it. Deleting all backups in the tree`);
  }

  let deleted = false;
  for (const id of treeBottomUp(target, catalog)) {
    deleted = await deleteOneLocked(server, id, opts);
    if (!deleted && id !== backupId) {
      messages.error('Failed to delete one of its incremental backups. Make sure all its dependent backups are deletable and try again.');
      break;
    }
  }
  return deleted;
}

async function backupRunning(server: DeleteServer): Promise<boolean> {
  const owner = await readLockOwner(serverLockPath(server.paths.lockDirectory, server.name, 'backup'));
  return owner?.live === true;
}

/** The backup and its descendants, children before their parent (walk_backups_tree). */
function treeBottomUp(root: CatalogBackup, catalog: readonly CatalogBackup[]): string[] {
  const byId = new Map(catalog.map((b) => [b.backupId, b]));
  const out: string[] = [];
  const seen = new Set<string>();
  const visit = (id: string): void => {
    if (seen.has(id)) return;
    seen.add(id);
    for (const child of byId.get(id)?.info.children_backup_ids ?? []) visit(child);
    out.push(id);
  };
  visit(root.backupId);
  return out;
}

async function deleteOneLocked(server: DeleteServer, backupId: string, opts: DeleteOptions): Promise<boolean> {
  const lock = await tryAcquireLock(serverLockPath(server.paths.lockDirectory, server.name, backupId));
  if (lock.busy) {
    opts.messages.error(`Another process is holding the lock for backup ${backupId} of server ${server.name}.`);
    return false;
  }
  try {
    // The catalog as it is now: an earlier deletion of the tree changed it.
    const catalog = (await listBackups(server.paths)).backups;
    const backup = catalog.find((b) => b.backupId === backupId);
    // Already gone (e.g. listed as a child but deleted meanwhile): nothing left to do.
    if (!backup) return true;
    return await deleteOne(server, backup, catalog, opts);
  } finally {
    await lock.release();
  }
}

async function deleteOne(server: DeleteServer, backup: CatalogBackup, catalog: readonly CatalogBackup[], opts: DeleteOptions): Promise<boolean> {
  const { messages } = opts;
  const { paths } = server;
  const id = backup.backupId;
  const hooks = opts.hooks?.has('delete') ? opts.hooks : null;
  // Barman's previous/next IDs and status as they are before the deletion, for both phases.
  const hookEnv = hooks ? backupHookEnv(paths, id, backup.info, catalog, backup.infoPath) : null;
  if (hooks) {
    // Before the delete annotation (Barman writes it first): a stopped delete must not
    // leave one behind, or retention would finish the deletion the script refused.
    try {
      await hooks.pre('delete', hookEnv!);
    } catch (err) {
      if (!(err instanceof HookStopError)) throw err;
      messages.error(`${err.message}: backup ${id} of server ${server.name} was not deleted`);
      return false;
    }
  }
  const annotation = deleteAnnotationPath(paths, id);
  await ensureDir(metaDirectory(paths));
  await writeFileDurable(annotation, 'delete');
  const started = new Date();
  messages.info(`Deleting backup ${id} for server ${server.name}`);

  // Barman's candidates for "previous" and "next": WAITING_FOR_WALS/DONE backups plus this one.
  const available = catalog.filter((b) => STATUS_COPY_DONE.includes(b.info.status) || b.backupId === id);
  const keeps = new Map<string, KeepTarget | null>();
  for (const b of available) keeps.set(b.backupId, await readKeepAnnotation(paths, b.backupId));
  const walDecision = shouldRemoveWals(id, available, (bid) => keeps.get(bid) ?? null, opts.skipWalCleanupIfStandalone ?? true);
  const next = nextBackup(id, available);

  try {
    await deleteBackupData(paths, backup);
  } catch (err) {
    messages.error(`Failure deleting backup ${id} for server ${server.name}.\n${(err as Error).message}`);
    return false;
  }

  if (walDecision.remove) {
    // With no later backup, a concurrent backup keeps the WAL from its own start:
    // a backup started right after may need it.
    const concurrent = server.settings.backup_options === null || server.settings.backup_options.includes('concurrent_backup');
    const removeUntil = next ?? (concurrent ? backup : null);
    const plan: WalRemovalPlan = {
      keepFrom: removeUntil?.info.begin_wal ?? null,
      timelinesToProtect: timelinesToProtect(removeUntil, id, catalog),
      rangesToProtect: walDecision.ranges,
    };
    const protectFrom = await cloudKeepFrom(paths, server.settings.cloud_destination);
    if (protectFrom !== null && (plan.keepFrom === null || protectFrom < plan.keepFrom)) {
      messages.info(`WAL from ${protectFrom} on is kept: it is not in cloud_destination yet`);
    }
    messages.info('Delete associated WAL segments:');
    const removed = await removeWal(paths, plan, {
      protectFrom,
      onInvalidName: (name) => messages.error(`invalid WAL segment name ${JSON.stringify(name)} in xlog.db of server ${server.name}: line dropped`),
      hooks: opts.hooks ?? null,
      onHookStop: (message) => messages.warning(`${message}: the WAL files not removed yet are kept`),
    });
    for (const name of removed) messages.info(`\t${name}`);
  }

  await unlinkDurable(annotation);
  const baseDir = backupDataDirectory(paths, id);
  try {
    await removeTree(baseDir);
  } catch (err) {
    messages.error(`Failure deleting backup ${id} for server ${server.name}.\n${(err as Error).message}\nPlease manually remove the '${baseDir}' directory`);
    return false;
  }
  const infoPath = (await pathExists(metaBackupInfoPath(paths, id))) ? metaBackupInfoPath(paths, id) : backup.infoPath;
  try {
    await unlinkDurable(infoPath);
  } catch (err) {
    messages.error(`Failure deleting file ${infoPath} for server ${server.name}.\n${(err as Error).message}\nPlease manually remove the file`);
    return false;
  }
  messages.info(`Deleted backup ${id} (start time: ${ctime(started)}, elapsed time: ${humanTimedelta((Date.now() - started.getTime()) / 1000)})`);

  await detachFromParent(paths, backup.info, id);
  await unlinkDurable(serverLockPath(paths.lockDirectory, server.name, `${id}-sync-backup`));
  // The backup.info is gone: Barman then names the path it would write.
  if (hooks) await hooks.post('delete', { ...hookEnv!, BARMAN_BACKUP_INFO_PATH: metaBackupInfoPath(paths, id) });
  return true;
}

export interface WalRemovalDecision {
  remove: boolean;
  /** (begin_wal, end_wal) of the keep:standalone backups found before the deleted one. */
  ranges: [string, string][];
}

type WalBackup = Pick<CatalogBackup, 'backupId'> & { info: Pick<BackupInfo, 'status' | 'begin_wal' | 'end_wal'> };

/**
 * Barman's should_remove_wals: WAL goes only if no earlier WAITING_FOR_WALS/DONE
 * backup needs it for point-in-time recovery. Earlier keep:standalone backups need
 * just their own range (and, for an explicit delete, stop the cleanup altogether).
 */
export function shouldRemoveWals(
  backupId: string,
  available: readonly WalBackup[],
  keepOf: (backupId: string) => KeepTarget | null,
  skipWalCleanupIfStandalone: boolean,
): WalRemovalDecision {
  const ranges: [string, string][] = [];
  let previous = previousBackup(backupId, available);
  while (previous !== null) {
    if (keepOf(previous.backupId) !== 'standalone') return { remove: false, ranges: [] };
    if (skipWalCleanupIfStandalone) return { remove: false, ranges: [] };
    if (previous.info.begin_wal !== null && previous.info.end_wal !== null) ranges.push([previous.info.begin_wal, previous.info.end_wal]);
    previous = previousBackup(previous.backupId, available);
  }
  return { remove: true, ranges };
}

function previousBackup<T extends WalBackup>(backupId: string, available: readonly T[]): T | null {
  const sorted = [...available].sort((a, b) => (a.backupId < b.backupId ? -1 : 1));
  const at = sorted.findIndex((b) => b.backupId === backupId);
  for (let i = at - 1; i >= 0; i--) {
    if (STATUS_COPY_DONE.includes(sorted[i]!.info.status)) return sorted[i]!;
  }
  return null;
}

function nextBackup<T extends WalBackup>(backupId: string, available: readonly T[]): T | null {
  const sorted = [...available].sort((a, b) => (a.backupId < b.backupId ? -1 : 1));
  const at = sorted.findIndex((b) => b.backupId === backupId);
  if (at < 0) return null;
  for (let i = at + 1; i < sorted.length; i++) {
    if (STATUS_COPY_DONE.includes(sorted[i]!.info.status)) return sorted[i]!;
  }
  return null;
}

/** Timelines of the other backups, except the one WAL is cut on (get_timelines_to_protect). */
function timelinesToProtect(removeUntil: CatalogBackup | null, deletedId: string, catalog: readonly CatalogBackup[]): Set<number> {
  const out = new Set<number>();
  if (removeUntil === null) return out;
  for (const b of catalog) {
    if (b.backupId === deletedId || !ARCHIVING.includes(b.info.status)) continue;
    const tli = timelineOf(b.info);
    if (tli !== null) out.add(tli);
  }
  const cut = timelineOf(removeUntil.info);
  if (cut !== null) out.delete(cut);
  return out;
}

function timelineOf(info: Pick<BackupInfo, 'timeline' | 'begin_wal'>): number | null {
  if (info.timeline !== null) return info.timeline;
  return info.begin_wal !== null ? walTimeline(info.begin_wal) : null;
}

/** Tablespaces first, then the PGDATA copy (delete_backup_data). */
async function deleteBackupData(paths: ServerPaths, backup: CatalogBackup): Promise<void> {
  const base = backupDataDirectory(paths, backup.backupId);
  // Backup layout v1 (Barman < 2) kept PGDATA in pgdata/ and tablespaces under pg_tblspc.
  const v1 = await pathExists(join(base, 'pgdata'));
  const dataDir = join(base, v1 ? 'pgdata' : 'data');
  const tablespaceRoot = v1 ? join(dataDir, 'pg_tblspc') : base;
  for (const t of backup.info.tablespaces ?? []) await removeTree(join(tablespaceRoot, String(t.oid)));
  await removeTree(dataDir);
}

async function removeTree(path: string): Promise<void> {
  if (!(await pathExists(path))) return;
  await rm(path, { recursive: true, force: true });
  await fsyncDir(dirname(path));
}

/** An incremental backup leaves its parent's children_backup_ids. */
async function detachFromParent(paths: ServerPaths, info: BackupInfo, id: string): Promise<void> {
  if (info.parent_backup_id === null) return;
  const parent = await loadBackup(paths, info.parent_backup_id);
  if (!parent || parent.info.children_backup_ids === null) return;
  const children = parent.info.children_backup_ids.filter((c) => c !== id);
  await writeBackupInfo(metaBackupInfoPath(paths, parent.backupId), { ...parent.info, children_backup_ids: children.length > 0 ? children : null });
}
