import { createWriteStream } from 'node:fs';
import { readdir, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Duplex, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fsyncDir, tempPathFor } from '../../util/durable-fs.ts';

// Files the WAL clients hand to PostgreSQL (%p) or keep in the spool: written
// to a hidden sibling, fsynced, and renamed only when the caller says the
// data is good, so a cut transfer never leaves a short file under a WAL name.
// The stream owns its descriptor (autoClose) and fsyncs it before closing
// (`flush`): a FileHandle stream with autoClose off would keep the handle
// referenced and make FileHandle.close() wait forever.

export interface TempFile {
  path: string;
  size: number;
}

/** Streams `source` through `filters` into a complete, fsynced temp file beside `dest`. */
export async function writeTempFile(dest: string, source: Readable, filters: readonly Duplex[] = []): Promise<TempFile> {
  const path = tempPathFor(dest);
  try {
    await pipeline([source, ...filters, createWriteStream(path, { flags: 'wx', mode: 0o600, flush: true, highWaterMark: 1 << 20 })]);
    return { path, size: (await stat(path)).size };
  } catch (e) {
    await unlink(path).catch(() => {});
    throw e;
  }
}

/** Puts a temp file in place under `dest` and makes the rename durable. */
export async function commitTempFile(temp: TempFile, dest: string): Promise<void> {
  await rename(temp.path, dest);
  await fsyncDir(dirname(dest));
}

export async function discardTempFile(temp: TempFile | null): Promise<void> {
  if (temp) await unlink(temp.path).catch(() => {});
}

/**
 * Removes temp files a killed earlier run left beside `dest`. Only for a
 * destination nobody else writes meanwhile: PostgreSQL runs one
 * restore_command at a time, so %p qualifies.
 */
export async function removeStaleTempFiles(dest: string): Promise<void> {
  const prefix = `.${basename(dest)}.tmp-`;
  const dir = dirname(dest);
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) if (name.startsWith(prefix)) await unlink(join(dir, name)).catch(() => {});
}
