// Writing the WAL catalog safely from the archiver: always under the server's
// `.<server>-xlogdb.lock`, always into the current file name, without losing the
// entries of a catalog still in Barman's legacy place (wals/xlog.db).
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { acquireLock, serverLockPath } from '../catalog/locks.ts';
import type { ServerPaths } from '../catalog/layout.ts';
import { currentXlogDbPath, legacyXlogDbPath, xlogDbPath } from '../catalog/layout.ts';
import { readXlogDb } from '../catalog/xlog-db.ts';
import { ensureDir, isErrno, pathExists } from '../util/durable-fs.ts';
import { streamToDurableFile } from './durable-stream.ts';

// Barman blocks on this lock without a limit; a bound turns a stuck holder into an error.
const XLOGDB_LOCK_TIMEOUT_MS = 10 * 60 * 1000;

export function xlogDbLockPath(paths: ServerPaths): string {
  return serverLockPath(paths.lockDirectory, paths.name, 'xlogdb');
}

export async function withXlogDbLock<T>(paths: ServerPaths, fn: () => Promise<T>): Promise<T> {
  const lock = await acquireLock(xlogDbLockPath(paths), { timeoutMs: XLOGDB_LOCK_TIMEOUT_MS, pollMs: 20 });
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}

/**
 * The xlog.db to append to. When only a legacy wals/xlog.db exists, its content is first
 * copied to the current name: readers prefer the current file as soon as it exists, so
 * appending to a new empty one would hide every earlier entry. Call under the lock.
 */
export async function writableXlogDb(paths: ServerPaths): Promise<string> {
  const current = currentXlogDbPath(paths);
  if (await pathExists(current)) return current;
  await ensureDir(paths.xlogdbDirectory);
  const legacy = legacyXlogDbPath(paths);
  if (legacy !== current && (await pathExists(legacy))) {
    await streamToDurableFile(current, createReadStream(legacy), []);
  }
  return current;
}

/** Whether the catalog has a line for `name` (lines that do not parse are skipped). */
export async function xlogDbHasEntry(paths: ServerPaths, name: string): Promise<boolean> {
  for await (const entry of readXlogDb(await xlogDbPath(paths), { onInvalidLine: () => undefined })) {
    if (entry.name === name) return true;
  }
  return false;
}

