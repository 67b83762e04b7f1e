// Where things live inside a server's Barman directories (barman_home/<server>/...).
// Writes always target the current layout (meta/, <server>-xlog.db); reads fall back to
// the layout of Barman < 3.13 so an existing catalog keeps working unchanged.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureDir, isErrno, pathExists } from '../util/durable-fs.ts';

/** A server's resolved directories, as computed from its configuration. */
export interface ServerPaths {
  name: string;
  backupDirectory: string;
  basebackupsDirectory: string;
  walsDirectory: string;
  incomingWalsDirectory: string;
  streamingWalsDirectory: string;
  errorsDirectory: string;
  xlogdbDirectory: string;
  lockDirectory: string;
}

export function metaDirectory(paths: ServerPaths): string {
  return join(paths.backupDirectory, 'meta');
}

/** base/<id>: the backup's data (and, before Barman 3.13.2, its backup.info). */
export function backupDataDirectory(paths: ServerPaths, backupId: string): string {
  return join(paths.basebackupsDirectory, checkedId(backupId));
}

export function metaBackupInfoPath(paths: ServerPaths, backupId: string): string {
  return join(metaDirectory(paths), `${checkedId(backupId)}-backup.info`);
}

export function legacyBackupInfoPath(paths: ServerPaths, backupId: string): string {
  return join(backupDataDirectory(paths, backupId), 'backup.info');
}

/**
 * The backup.info to read: meta/<id>-backup.info, or the legacy base/<id>/backup.info when
 * only that one exists (Barman's LocalBackupInfo.get_filename). Writers must use
 * metaBackupInfoPath.
 */
export async function backupInfoPath(paths: ServerPaths, backupId: string): Promise<string> {
  const current = metaBackupInfoPath(paths, backupId);
  if (await pathExists(current)) return current;
  const legacy = legacyBackupInfoPath(paths, backupId);
  return (await pathExists(legacy)) ? legacy : current;
}

/** <xlogdb_directory>/<server>-xlog.db, the name used since Barman 3.13. */
export function currentXlogDbPath(paths: ServerPaths): string {
  return join(paths.xlogdbDirectory, `${paths.name}-xlog.db`);
}

export function legacyXlogDbPath(paths: ServerPaths): string {
  return join(paths.walsDirectory, 'xlog.db');
}

/** The xlog.db to read: the current one, or the legacy wals/xlog.db when only that exists. */
export async function xlogDbPath(paths: ServerPaths): Promise<string> {
  const current = currentXlogDbPath(paths);
  if (await pathExists(current)) return current;
  const legacy = legacyXlogDbPath(paths);
  return (await pathExists(legacy)) ? legacy : current;
}

export function identityPath(paths: ServerPaths): string {
  return join(paths.backupDirectory, 'identity.json');
}

/** meta/<id>-keep (Barman >= 3.13.3); content `full` or `standalone`. */
export function keepAnnotationPath(paths: ServerPaths, backupId: string): string {
  return join(metaDirectory(paths), `${checkedId(backupId)}-keep`);
}

export function legacyKeepAnnotationPath(paths: ServerPaths, backupId: string): string {
  return join(backupDataDirectory(paths, backupId), 'annotations', 'keep');
}

/** meta/<id>-delete_this: marks a deletion in progress. */
export function deleteAnnotationPath(paths: ServerPaths, backupId: string): string {
  return join(metaDirectory(paths), `${checkedId(backupId)}-delete_this`);
}

// Barman's xlog._xlog_re: segments, .backup labels, .partial files and .history files.
const WAL_NAME_RE = /^([0-9A-Fa-f]{8})(?:([0-9A-Fa-f]{8})([0-9A-Fa-f]{8})(?:\.[0-9A-Fa-f]{8}\.backup|\.partial)?|\.history)$/;

export function isWalFileName(name: string): boolean {
  return WAL_NAME_RE.test(name);
}

/**
 * The wals/ subdirectory for a WAL file: timeline + log id (the first 16 hex digits,
 * upper-cased as Barman re-encodes them). History files live at the root of wals/: ''.
 */
export function walHashDir(walName: string): string {
  const m = WAL_NAME_RE.exec(walName);
  if (!m) throw new Error(`not a WAL file name: ${JSON.stringify(walName)} (expected e.g. 000000010000000000000004, 00000002.history)`);
  return m[2] === undefined ? '' : `${m[1]}${m[2]}`.toUpperCase();
}

export function walPath(paths: ServerPaths, walName: string): string {
  return join(paths.walsDirectory, walHashDir(walName), walName);
}

/** Creates the server's directory tree (idempotent, every new entry made durable). */
export async function createServerLayout(paths: ServerPaths): Promise<void> {
  for (const dir of [
    paths.backupDirectory,
    paths.basebackupsDirectory,
    metaDirectory(paths),
    paths.walsDirectory,
    paths.xlogdbDirectory,
    paths.incomingWalsDirectory,
    paths.streamingWalsDirectory,
    paths.errorsDirectory,
  ]) {
    await ensureDir(dir);
  }
}

// A backup ID becomes part of a path: refuse anything that could escape the directory.
function checkedId(backupId: string): string {
  if (backupId === '' || backupId === '.' || backupId === '..' || backupId.includes('/') || backupId.includes('\0')) {
    throw new Error(`invalid backup ID ${JSON.stringify(backupId)}`);
  }
  return backupId;
}

