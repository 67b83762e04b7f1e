// Crash-safe file primitives. A catalog file must never be seen half-written and
// must survive power loss once a call has returned: data goes to a temporary file
// in the same directory (rename is only atomic within one filesystem), is fsynced,
// renamed over the target, and the directory is fsynced so the rename itself is durable.
import { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

export type DurableData = string | Uint8Array | Iterable<string | Uint8Array> | AsyncIterable<string | Uint8Array>;

/** The name of a temporary sibling of `path`: hidden, unique per call, never matching catalog globs. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
}

export async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Replaces `path` atomically. Readers see either the old or the new content, and the new
 * content is on disk when this resolves. `mode` is applied exactly (not filtered by umask).
 */
export async function writeFileDurable(path: string, data: DurableData, mode?: number): Promise<void> {
  const tmp = tempPathFor(path);
  const fh = await open(tmp, 'wx', mode ?? 0o666);
  let renamed = false;
  try {
    try {
      await writeAll(fh, data);
      if (mode !== undefined) await fh.chmod(mode);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    renamed = true;
    await fsyncDir(dirname(resolve(path)));
  } finally {
    if (!renamed) await unlink(tmp).catch(() => undefined);
  }
}

async function writeAll(fh: FileHandle, data: DurableData): Promise<void> {
  if (typeof data === 'string' || data instanceof Uint8Array) {
    await fh.writeFile(data);
    return;
  }
  // Streamed content is batched so a million small lines do not cost a million syscalls,
  // while memory stays bounded by the batch size.
  const batch: Buffer[] = [];
  let batched = 0;
  for await (const chunk of data) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    batch.push(buf);
    batched += buf.length;
    if (batched >= 1 << 16) {
      await fh.write(Buffer.concat(batch));
      batch.length = 0;
      batched = 0;
    }
  }
  if (batched > 0) await fh.write(Buffer.concat(batch));
}

/**
 * Appends text to a line-oriented file and fsyncs it. Lines that do not end in a newline get one.
 * If the file's last line was torn by a crash (no trailing newline), the new text starts on a
 * fresh line so the damage stays confined to that one line instead of corrupting the next record.
 */
export async function appendLinesDurable(path: string, lines: readonly string[]): Promise<void> {
  if (lines.length === 0) return;
  const text = lines.map((l) => (l.endsWith('\n') ? l : `${l}\n`)).join('');
  const fh = await open(path, 'a+');
  let created = false;
  try {
    const { size } = await fh.stat();
    created = size === 0;
    let prefix = '';
    if (size > 0) {
      const last = Buffer.alloc(1);
      await fh.read(last, 0, 1, size - 1);
      if (last[0] !== 0x0a) prefix = '\n';
    }
    await fh.write(prefix + text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  // An empty file may have just been created: its directory entry must be durable too.
  if (created) await fsyncDir(dirname(resolve(path)));
}

export async function appendLineDurable(path: string, line: string): Promise<void> {
  await appendLinesDurable(path, [line]);
}

/** Removes a file durably; a file that is already gone is not an error. Returns whether it existed. */
/** The names in a directory; a directory that does not exist (or whose parent does not) is empty. */
export async function listDirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return [];
    throw err;
  }
}

/** Whether `path` is a directory (false when absent). */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return false;
    throw err;
  }
}

/** Whether something exists at `path`; a missing parent directory counts as absent. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return false;
    throw err;
  }
}

export async function unlinkDurable(path: string): Promise<boolean> {
  try {
    await unlink(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
  await fsyncDir(dirname(resolve(path)));
  return true;
}

/**
 * mkdir -p that makes every newly created directory entry durable by fsyncing its parent.
 * Returns the directories it created, outermost first.
 */
export async function ensureDir(path: string, mode?: number): Promise<string[]> {
  const missing: string[] = [];
  let current = resolve(path);
  for (;;) {
    try {
      const st = await stat(current);
      if (!st.isDirectory()) throw new Error(`cannot create directory ${path}: ${current} exists and is not a directory`);
      break;
    } catch (err) {
      // ENOTDIR: an ancestor is a file; walking up reaches it and reports it clearly.
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
      missing.push(current);
      const parent = dirname(current);
      if (parent === current) break;
      current = parent;
    }
  }
  const created: string[] = [];
  for (const dir of missing.reverse()) {
    try {
      await mkdir(dir, mode);
      created.push(dir);
    } catch (err) {
      // Another process may create the same directory concurrently; that is fine
      // as long as it really is a directory.
      if (!isErrno(err, 'EEXIST')) throw err;
      if (!(await stat(dir)).isDirectory()) throw new Error(`cannot create directory ${path}: ${dir} exists and is not a directory`);
    }
    await fsyncDir(dirname(dir));
  }
  return created;
}

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}
