// The errors/ directory: WAL files the archiver or put-wal could not accept, kept
// for a person to look at as `<name>.<UTC stamp>.<kind>` (Barman's
// move_wal_file_to_errors_directory). Never overwrites an earlier error file.
import { constants } from 'node:fs';
import { copyFile, link, lstat, open, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ensureDir, fsyncDir, isErrno } from '../util/durable-fs.ts';

export type ErrorKind = 'duplicate' | 'unknown';

/** `YYYYMMDDTHHMMSSZ` in UTC, as Barman stamps error files. */
export function errorStamp(now: Date = new Date()): string {
  return now.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');
}

/**
 * Moves `source` into `errorsDir` durably; returns the new path. Exclusive creation
 * (link, or an exclusive copy across filesystems) instead of rename(), so that two
 * errors for one name within the same second cannot replace each other: the later
 * one gets `-N` after the stamp.
 */
export async function moveToErrors(source: string, errorsDir: string, name: string, kind: ErrorKind, now: Date = new Date()): Promise<string> {
  await ensureDir(errorsDir);
  const stamp = errorStamp(now);
  for (let n = 0; ; n++) {
    const dest = join(errorsDir, `${name}.${stamp}${n === 0 ? '' : `-${n}`}.${kind}`);
    try {
      await placeExclusively(source, dest);
    } catch (err) {
      if (isErrno(err, 'EEXIST')) continue;
      throw err;
    }
    await fsyncDir(errorsDir);
    await rm(source, { force: true });
    await fsyncDir(dirname(source));
    return dest;
  }
}

async function placeExclusively(source: string, dest: string): Promise<void> {
  if ((await lstat(source)).isDirectory()) {
    // A directory dropped into incoming/: moved whole, as Barman's shutil.move does.
    if (await lstat(dest).then(() => true, () => false)) throw Object.assign(new Error(`${dest} exists`), { code: 'EEXIST' });
    await rename(source, dest);
    return;
  }
  try {
    await link(source, dest);
    return;
  } catch (err) {
    // errors/ on another filesystem, or one without hard links: copy instead.
    if (!isErrno(err, 'EXDEV') && !isErrno(err, 'EPERM') && !isErrno(err, 'ENOTSUP')) throw err;
  }
  await copyFile(source, dest, constants.COPYFILE_EXCL);
  const fh = await open(dest, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
