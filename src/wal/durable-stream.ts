// Streams into a file that appears under its final name only once complete and on
// disk: temp file in the same directory, fsync, rename, fsync the directory. A crash
// at any point leaves either nothing or the whole file (plus, at worst, a hidden
// temp file that removeStaleTemps() clears).
import type { BigIntStats } from 'node:fs';
import { open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Writable, type Readable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fsyncDir, isErrno, tempPathFor } from '../util/durable-fs.ts';

export interface DurableStreamOptions {
  /** Times to give the file (Barman keeps the source's mtime on archived WALs). */
  times?: { atime: Date | number; mtime: Date | number };
}

/** Writes `source` through `filters` into `dest`; resolves with the final size once durable. */
export async function streamToDurableFile(dest: string, source: Readable, filters: readonly Duplex[], opts: DurableStreamOptions = {}): Promise<number> {
  const temp = await streamToTempFile(dest, source, filters, opts);
  try {
    await commitTempFile(temp.path, dest);
  } catch (err) {
    await unlink(temp.path).catch(() => undefined);
    throw err;
  }
  return temp.size;
}

export interface TempFile {
  /** Hidden sibling of the destination, complete and fsynced. */
  path: string;
  size: number;
}

/**
 * First half of streamToDurableFile: the complete, fsynced temp file, not yet visible.
 * Lets a caller rename it while holding a lock (the archiver does so under the xlog.db
 * lock). The caller must commit or unlink it.
 */
export async function streamToTempFile(dest: string, source: Readable, filters: readonly Duplex[], opts: DurableStreamOptions = {}): Promise<TempFile> {
  const tmp = tempPathFor(dest);
  const fh = await open(tmp, 'wx', 0o600);
  let ok = false;
  try {
    await pipeline([source, ...filters, fileHandleSink(fh)]);
    // Private while incomplete; then the mode any new file gets (as Barman's files do).
    await fh.chmod(newFileMode());
    if (opts.times) await fh.utimes(opts.times.atime, opts.times.mtime);
    await fh.sync();
    const size = (await fh.stat()).size;
    ok = true;
    return { path: tmp, size };
  } finally {
    await fh.close();
    if (!ok) await unlink(tmp).catch(() => undefined);
  }
}

/** Second half: rename into place and make the rename durable. */
export async function commitTempFile(tmp: string, dest: string): Promise<void> {
  await rename(tmp, dest);
  await fsyncDir(dirname(dest));
}

/** The mode a file created now gets: 0666 less the umask. */
export function newFileMode(): number {
  return 0o666 & ~currentUmask();
}

let umaskValue: number | undefined;
function currentUmask(): number {
  // process.umask() without an argument is deprecated; reading it by setting and restoring is the documented way.
  if (umaskValue === undefined) {
    umaskValue = process.umask(0o022);
    process.umask(umaskValue);
  }
  return umaskValue;
}

/**
 * Removes temp files that tempPathFor() made for `name` in `dir` and a killed process
 * left behind. Only call it while holding the lock that serialises writers of `name`.
 */
export async function removeStaleTemps(dir: string, name: string): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return;
    throw err;
  }
  const prefix = basename(tempPathFor(join(dir, name))).replace(/-[^-]+-[^-]+$/, '-');
  for (const entry of entries) {
    if (entry.startsWith(prefix)) await unlink(join(dir, entry)).catch(() => undefined);
  }
}

/** atime/mtime of a stat result as utimes() takes them (seconds; sub-microsecond digits are lost either way). */
export function timesOf(stats: BigIntStats): { atime: number; mtime: number } {
  const seconds = (ns: bigint) => Number(ns / 1_000_000_000n) + Number(ns % 1_000_000_000n) * 1e-9;
  return { atime: seconds(stats.atimeNs), mtime: seconds(stats.mtimeNs) };
}

/**
 * A Writable onto an open FileHandle that leaves the handle open, so the caller can
 * fsync it once the pipeline is done (fs write streams either close the handle or,
 * with autoClose off, never report completion).
 */
export function fileHandleSink(fh: FileHandle): Writable {
  return new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _encoding, callback) {
      writeFully(fh, chunk).then(() => callback(), callback);
    },
    writev(chunks, callback) {
      writeFully(fh, Buffer.concat(chunks.map((c) => c.chunk as Buffer))).then(() => callback(), callback);
    },
  });
}

async function writeFully(fh: FileHandle, data: Buffer): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const { bytesWritten } = await fh.write(data, offset, data.length - offset, null);
    offset += bytesWritten;
  }
}
