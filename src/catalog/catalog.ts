// A server's backup catalog is nothing but its backup.info files (Barman keeps no
// other index): meta/<id>-backup.info since 3.13.2, base/<id>/backup.info before.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureDir, isErrno, unlinkDurable, writeFileDurable, listDirOrEmpty } from '../util/durable-fs.ts';
import { type BackupInfo, type BackupStatus, isFullBackup, readBackupInfo, STATUS_COPY_DONE } from './backup-info.ts';
import { keepAnnotationPath, legacyBackupInfoPath, legacyKeepAnnotationPath, metaBackupInfoPath, metaDirectory, type ServerPaths } from './layout.ts';

export interface CatalogBackup {
  backupId: string;
  info: BackupInfo;
  /** The file the entry was read from (meta/ or the legacy base/<id>/ location). */
  infoPath: string;
  legacy: boolean;
}

export interface CatalogProblem {
  path: string;
  message: string;
}

export interface BackupCatalog {
  /** Sorted by backup ID, i.e. chronologically. */
  backups: CatalogBackup[];
  /** backup.info files that could not be read; one bad file does not hide the others. */
  errors: CatalogProblem[];
  warnings: string[];
}

const META_INFO_RE = /^(.+?)-backup\.info$/;

export async function listBackups(paths: ServerPaths): Promise<BackupCatalog> {
  const found = new Map<string, { path: string; legacy: boolean }>();
  for (const name of await listDirOrEmpty(paths.basebackupsDirectory)) {
    if (name.startsWith('.')) continue;
    const path = legacyBackupInfoPath(paths, name);
    if (await isFile(path)) found.set(name, { path, legacy: true });
  }
  // Same precedence as Barman's _load_backup_cache: the meta/ copy overrides the legacy one.
  for (const name of await listDirOrEmpty(metaDirectory(paths))) {
    const m = META_INFO_RE.exec(name);
    if (!m || name.startsWith('.')) continue;
    found.set(m[1] as string, { path: join(metaDirectory(paths), name), legacy: false });
  }

  const catalog: BackupCatalog = { backups: [], errors: [], warnings: [] };
  const entries = [...found.entries()];
  // Bounded parallelism: fast on hundreds of backups without exhausting file descriptors.
  for (let i = 0; i < entries.length; i += 32) {
    const chunk = entries.slice(i, i + 32);
    const results = await Promise.allSettled(chunk.map(([, { path }]) => readBackupInfo(path)));
    results.forEach((result, j) => {
      const [backupId, { path, legacy }] = chunk[j] as [string, { path: string; legacy: boolean }];
      if (result.status === 'fulfilled') {
        catalog.backups.push({ backupId, info: result.value.info, infoPath: path, legacy });
        catalog.warnings.push(...result.value.warnings);
      } else {
        const reason: unknown = result.reason;
        catalog.errors.push({ path, message: reason instanceof Error ? reason.message : String(reason) });
      }
    });
  }
  catalog.backups.sort((a, b) => compareIds(a.backupId, b.backupId));
  return catalog;
}

/** One backup by exact ID, or null if it has no backup.info. */
export async function loadBackup(paths: ServerPaths, backupId: string): Promise<CatalogBackup | null> {
  for (const [path, legacy] of [
    [metaBackupInfoPath(paths, backupId), false],
    [legacyBackupInfoPath(paths, backupId), true],
  ] as const) {
    try {
      const { info } = await readBackupInfo(path);
      return { backupId, info, infoPath: path, legacy };
    } catch (err) {
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
    }
  }
  return null;
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ------------------------------------------------------------------ backup ID resolution

export const BACKUP_ID_SHORTCUTS = ['latest', 'last', 'oldest', 'first', 'last-failed', 'latest-full', 'last-full'] as const;

export class BackupNotFoundError extends Error {
  readonly query: string;
  constructor(message: string, query: string) {
    super(message);
    this.name = 'BackupNotFoundError';
    this.query = query;
  }
}

type Resolvable = Pick<CatalogBackup, 'backupId'> & { info: Pick<BackupInfo, 'status' | 'backup_name' | 'mode' | 'parent_backup_id'> };

/** Barman's utils.is_backup_id: the YYYYMMDDTHHMMSS shape, whatever the catalog holds. */
export function isBackupId(text: string): boolean {
  return /^\d{8}T\d{6}$/.test(text);
}

/**
 * Resolves what a user typed (`barman show-backup pg <this>`) the way Barman's
 * parse_backup_id does:
 * - `latest`/`last`, `oldest`/`first`: newest/oldest backup in WAITING_FOR_WALS or DONE;
 * - `latest-full`/`last-full`: the same restricted to full backups (not incremental, not snapshot);
 * - `last-failed`: newest FAILED backup;
 * - a backup ID (YYYYMMDDTHHMMSS): that backup, whatever its status;
 * - anything else: the backup whose backup_name matches, among WAITING_FOR_WALS/DONE ones.
 */
export function resolveBackupId<T extends Resolvable>(backups: readonly T[], query: string, serverName?: string): T {
  const where = serverName === undefined ? '' : ` for server '${serverName}'`;
  const sorted = [...backups].sort((a, b) => compareIds(a.backupId, b.backupId));
  const withStatus = (statuses: readonly BackupStatus[]) => sorted.filter((b) => statuses.includes(b.info.status));
  const pick = (candidates: T[], which: 'first' | 'last', why: string): T => {
    const hit = which === 'first' ? candidates[0] : candidates[candidates.length - 1];
    if (hit === undefined) throw new BackupNotFoundError(`Unknown backup '${query}'${where}: ${why}`, query);
    return hit;
  };

  switch (query) {
    case 'latest':
    case 'last':
      return pick(withStatus(STATUS_COPY_DONE), 'last', 'no backup in status WAITING_FOR_WALS or DONE');
    case 'oldest':
    case 'first':
      return pick(withStatus(STATUS_COPY_DONE), 'first', 'no backup in status WAITING_FOR_WALS or DONE');
    case 'last-failed':
      return pick(withStatus(['FAILED']), 'last', 'no FAILED backup');
    case 'latest-full':
    case 'last-full':
      return pick(
        withStatus(STATUS_COPY_DONE).filter((b) => isFullBackup(b.info)),
        'last',
        'no full backup in status WAITING_FOR_WALS or DONE',
      );
  }
  if (isBackupId(query)) {
    return pick(
      sorted.filter((b) => b.backupId === query),
      'last',
      'no such backup ID',
    );
  }
  const named = withStatus(STATUS_COPY_DONE).filter((b) => b.info.backup_name === query);
  if (named.length > 1) {
    throw new BackupNotFoundError(
      `Multiple backups found matching name '${query}'${where} (try using backup ID instead): ${named.map((b) => b.backupId).join(' ')}`,
      query,
    );
  }
  const failedWithName = sorted.some((b) => b.info.backup_name === query);
  return pick(
    named,
    'first',
    failedWithName ? `the backup named '${query}' is not in status WAITING_FOR_WALS or DONE (use its backup ID)` : 'no backup ID, shortcut or backup name matches',
  );
}

// ------------------------------------------------------------------ keep annotations

export type KeepTarget = 'full' | 'standalone';

/**
 * The keep annotation of a backup: meta/<id>-keep, or the pre-3.13.3 base/<id>/annotations/keep.
 * Null when the backup is not kept.
 */
export async function readKeepAnnotation(paths: ServerPaths, backupId: string): Promise<KeepTarget | null> {
  for (const path of [keepAnnotationPath(paths, backupId), legacyKeepAnnotationPath(paths, backupId)]) {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) continue;
      throw err;
    }
    const target = text.trim();
    if (target === 'full' || target === 'standalone') return target;
    throw new Error(`${path}: expected keep target 'full' or 'standalone', found ${JSON.stringify(target.slice(0, 40))}`);
  }
  return null;
}

/** Records a keep annotation where Barman >= 3.13.3 looks for it, superseding a legacy one. */
export async function writeKeepAnnotation(paths: ServerPaths, backupId: string, target: KeepTarget): Promise<void> {
  await ensureDir(metaDirectory(paths));
  // Written without a trailing newline, as Barman's AnnotationManagerFile does.
  await writeFileDurable(keepAnnotationPath(paths, backupId), target);
  await unlinkDurable(legacyKeepAnnotationPath(paths, backupId)).catch((err: unknown) => {
    if (!isErrno(err, 'ENOTDIR')) throw err;
  });
}

/** Releases a keep annotation in both locations. Returns whether one existed. */
export async function removeKeepAnnotation(paths: ServerPaths, backupId: string): Promise<boolean> {
  let removed = false;
  for (const path of [keepAnnotationPath(paths, backupId), legacyKeepAnnotationPath(paths, backupId)]) {
    try {
      removed = (await unlinkDurable(path)) || removed;
    } catch (err) {
      if (!isErrno(err, 'ENOTDIR')) throw err;
    }
  }
  return removed;
}


async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return false;
    throw err;
  }
}
