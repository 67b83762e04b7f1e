// Where a catalogued backup's files are (barman-formats §3.1): base/<id>/data holds
// the data directory or its tars plus backup_manifest ("pgdata" in Barman's first
// layout); plain-format tablespaces sit in base/<id>/<oid>.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { BackupInfo } from '../../catalog/backup-info.ts';
import { backupDataDirectory, type ServerPaths } from '../../catalog/layout.ts';
import { isErrno, listDirOrEmpty, isDirectory } from '../../util/durable-fs.ts';
import { MANIFEST_FILE_NAME } from '../manifest.ts';

export interface BackupFiles {
  backupDir: string;
  dataDir: string;
  manifestPath: string;
  format: 'plain' | 'tar';
  tablespaceDirs: Map<number, string>;
}

export async function locateBackupFiles(paths: ServerPaths, backupId: string, info: Pick<BackupInfo, 'tablespaces'>): Promise<BackupFiles> {
  const backupDir = backupDataDirectory(paths, backupId);
  let dataDir = join(backupDir, 'data');
  if (!(await isDirectory(dataDir)) && (await isDirectory(join(backupDir, 'pgdata')))) dataDir = join(backupDir, 'pgdata');
  const names = await listDirOrEmpty(dataDir);
  const format = names.some((n) => /^base\.(tar|tgz)/.test(n)) ? 'tar' : 'plain';

  const tablespaceDirs = new Map<number, string>();
  const oids = new Set<number>((info.tablespaces ?? []).map((t) => t.oid));
  for (const name of await listDirOrEmpty(backupDir)) if (/^[1-9]\d*$/.test(name)) oids.add(Number(name));
  for (const oid of [...oids].sort((a, b) => a - b)) {
    const dir = join(backupDir, String(oid));
    if (await isDirectory(dir)) tablespaceDirs.set(oid, dir);
  }
  return { backupDir, dataDir, manifestPath: join(dataDir, MANIFEST_FILE_NAME), format, tablespaceDirs };
}


