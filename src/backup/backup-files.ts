// list-files: the files that make up a backup (Barman's
// LocalBackupInfo.get_directory_entries), one absolute path each.
import type { Dirent } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_XLOG_SEGMENT_SIZE } from '../catalog/backup-info.ts';
import type { CatalogBackup } from '../catalog/catalog.ts';
import { backupDataDirectory, type ServerPaths, walPath, xlogDbPath } from '../catalog/layout.ts';
import { readXlogDb } from '../catalog/xlog-db.ts';
import { isErrno, isDirectory } from '../util/durable-fs.ts';
import { requiredWalSegments } from './wal-range.ts';
import { WalsUntilNextBackup } from './wal-stats.ts';

export const LIST_FILES_TARGETS = ['standalone', 'data', 'wal', 'full'] as const;
export type ListFilesTarget = (typeof LIST_FILES_TARGETS)[number];

export interface ListFilesOptions {
  /** Also list directories that contain nothing (--list-empty-directories). */
  emptyDirectories?: boolean;
  /** end_wal of the next WAITING_FOR_WALS/DONE backup, bounding `wal` and `full`. */
  nextBackupEndWal: string | null;
}

/**
 * - data: everything under base/<id>/ (plus meta/<id>-backup.info when the backup.info
 *   lives there, so the list still starts with it as in Barman 3.4's layout);
 * - standalone: data plus the WAL segments begin_wal..end_wal;
 * - wal: archived segments and history files from begin_wal to the next backup;
 * - full: data plus wal.
 */
export async function* backupFiles(paths: ServerPaths, backup: CatalogBackup, target: ListFilesTarget, opts: ListFilesOptions): AsyncGenerator<string> {
  if (target !== 'wal') {
    if (!backup.legacy) yield backup.infoPath;
    yield* walkFiles(backupDataDirectory(paths, backup.backupId), opts.emptyDirectories ?? false);
  }
  const info = backup.info;
  if (target === 'standalone' && info.begin_wal !== null && info.end_wal !== null) {
    for (const wal of requiredWalSegments(info.begin_wal, info.end_wal, info.xlog_segment_size ?? DEFAULT_XLOG_SEGMENT_SIZE, info.version)) {
      yield walPath(paths, wal);
    }
  }
  if ((target === 'wal' || target === 'full') && info.begin_wal !== null) {
    const filter = new WalsUntilNextBackup(info.begin_wal, opts.nextBackupEndWal, true);
    for await (const entry of readXlogDb(await xlogDbPath(paths), { onInvalidLine: () => undefined })) {
      if (filter.done) break;
      if (filter.accepts(entry)) yield walPath(paths, entry.name);
    }
  }
}

/**
 * os.walk order: a directory's files (sorted), then each subdirectory in turn. Barman
 * takes subdirectories in the filesystem's order; sorting them keeps output stable.
 * Symbolic links to directories are listed by nobody, as os.walk does not follow them.
 */
async function* walkFiles(dir: string, emptyDirectories: boolean): AsyncGenerator<string> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return;
    throw err;
  }
  const files: string[] = [];
  const dirs: string[] = [];
  const linkedDirs: string[] = [];
  for (const e of entries) {
    if (e.isDirectory()) dirs.push(e.name);
    else if (e.isSymbolicLink() && (await isDirectory(join(dir, e.name)))) linkedDirs.push(e.name);
    else files.push(e.name);
  }
  files.sort();
  dirs.sort();
  if (emptyDirectories && files.length + dirs.length + linkedDirs.length === 0) yield dir;
  for (const f of files) yield join(dir, f);
  for (const d of dirs) yield* walkFiles(join(dir, d), emptyDirectories);
}

