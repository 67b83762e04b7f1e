import { createReadStream } from 'node:fs';
import { mkdir, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { commitTempFile, writeTempFile } from './durable-file.ts';
import { fsyncDir, isErrno } from '../../util/durable-fs.ts';

// barman-wal-restore's spool directory: WAL files prefetched by --parallel
// wait there, under their own names, until PostgreSQL asks for them. Only
// complete files ever carry a WAL name there (fetch-wal.ts writes through a
// hidden temp file), so whatever is found can be handed over as is.

export function spoolPath(spoolDir: string, walName: string): string {
  return join(spoolDir, walName);
}

export async function ensureSpoolDir(spoolDir: string): Promise<void> {
  await mkdir(spoolDir, { recursive: true, mode: 0o700 });
}

/** Moves a spooled WAL to `dest` durably; false when there is none. */
export async function deliverFromSpool(spoolDir: string, walName: string, dest: string): Promise<boolean> {
  const spooled = spoolPath(spoolDir, walName);
  try {
    await stat(spooled);
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return false;
    throw e;
  }
  try {
    await rename(spooled, dest);
    await fsyncDir(dirname(dest));
  } catch (e) {
    if (!isErrno(e, 'EXDEV')) throw e;
    // Spool and pg_wal on different filesystems: copy, then drop the spooled one.
    await commitTempFile(await writeTempFile(dest, createReadStream(spooled)), dest);
    await unlink(spooled);
  }
  return true;
}
