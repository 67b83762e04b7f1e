// The spool directory of cloud-wal-archive's async mode, shared by the
// archive_command calls (foreground) and the one background pusher:
//
//   <wal>.req      a call is waiting for this WAL; holds its absolute path
//   <wal>.ok       the WAL is in the bucket (written durably, only after the PUT
//                  completed); holds the file's size, mtime and inode then, so a
//                  marker left by another file of the same name never counts
//   <wal>.error    the last push of this WAL failed; holds the message
//   pusher.pid     the running pusher: "PID START_TIME" (START_TIME from
//                  /proc/PID/stat, so a recycled PID is not mistaken for it)
//   pusher.log     the pusher's output
//
// Only this module knows the file names. Everything here is plain fs work: the
// "already pushed" answer must not load anything heavier.
import { link, open, readFile, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { okPath, validMarkerSync, type PushedMarker } from './wal-spool-marker.ts';
import { fsyncDir, isErrno, tempPathFor, writeFileDurable } from '../util/durable-fs.ts';

export { okPath, validMarkerSync, type PushedMarker } from './wal-spool-marker.ts';

export const errorPath = (spool: string, wal: string): string => join(spool, `${wal}.error`);
export const requestPath = (spool: string, wal: string): string => join(spool, `${wal}.req`);
export const lockPath = (spool: string): string => join(spool, 'pusher.pid');
export const logPath = (spool: string): string => join(spool, 'pusher.log');

/** validMarkerSync, for async callers. */
export async function validMarker(spool: string, wal: string, path: string): Promise<PushedMarker | null> {
  return validMarkerSync(spool, wal, path);
}

/** Records durably that `wal` (the file at `path`, as stat'ed before the upload) is in the bucket. */
export async function writeMarker(spool: string, wal: string, marker: PushedMarker): Promise<void> {
  await writeFileDurable(okPath(spool, wal), `${JSON.stringify(marker)}\n`, 0o600);
}

export async function writeError(spool: string, wal: string, message: string): Promise<void> {
  await writeWhole(errorPath(spool, wal), `${message}\n`);
}

/** Asks the pusher for `wal`, the file at `path`. */
export async function writeRequest(spool: string, wal: string, path: string): Promise<void> {
  await writeWhole(requestPath(spool, wal), `${path}\n`);
}

// Readers never see these files half-written (no fsync: they need not survive a crash).
async function writeWhole(path: string, text: string): Promise<void> {
  const tmp = tempPathFor(path);
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, path);
}

export async function readError(spool: string, wal: string): Promise<string | null> {
  try {
    return (await readFile(errorPath(spool, wal), 'utf8')).trim();
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

export async function removeIfPresent(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

/** Names of the WALs with a waiting request, and the paths they gave. */
export async function pendingRequests(spool: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const entry of await readdir(spool)) {
    if (!entry.endsWith('.req')) continue;
    const wal = entry.slice(0, -'.req'.length);
    try {
      const path = (await readFile(join(spool, entry), 'utf8')).trim();
      if (path !== '') out.set(wal, path);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
  }
  return out;
}

// --- the pusher's lock -------------------------------------------------------

/** The kernel's start time of a process (clock ticks since boot), or null when it does not exist. */
export async function processStartTime(pid: number): Promise<string | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Field 22, counted after the command name, which is in parentheses and may hold spaces.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ESRCH')) return null;
    // No /proc (not Linux): fall back to "a process with that PID exists".
    try {
      process.kill(pid, 0);
      return '';
    } catch {
      return null;
    }
  }
}

export interface LockOwner {
  pid: number;
  startTime: string;
}

export async function readLock(spool: string): Promise<LockOwner | null> {
  try {
    const [pid, startTime = ''] = (await readFile(lockPath(spool), 'utf8')).trim().split(' ');
    const n = Number(pid);
    return Number.isInteger(n) && n > 0 ? { pid: n, startTime } : null;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

/** Whether the lock's owner is still that same process. */
export async function isAlive(owner: LockOwner): Promise<boolean> {
  const now = await processStartTime(owner.pid);
  return now !== null && (owner.startTime === '' || now === '' || now === owner.startTime);
}

/** The running pusher of this spool, if any. */
export async function runningPusher(spool: string): Promise<LockOwner | null> {
  const owner = await readLock(spool);
  return owner && (await isAlive(owner)) ? owner : null;
}

/**
 * Takes the pusher lock for this process: created with link() so that exactly one
 * of two racing pushers gets it; a lock whose owner died (kill -9, crash) is taken
 * over. False when a live pusher holds it.
 */
export async function acquireLock(spool: string): Promise<boolean> {
  const me = `${process.pid} ${(await processStartTime(process.pid)) ?? ''}\n`;
  const tmp = tempPathFor(lockPath(spool));
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(me);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await link(tmp, lockPath(spool));
        await fsyncDir(spool);
        return true;
      } catch (err) {
        if (!isErrno(err, 'EEXIST')) throw err;
      }
      const owner = await readLock(spool);
      if (owner && (await isAlive(owner))) return false;
      // Stale: its owner is gone. Another taker may race us here; link() decides.
      await removeIfPresent(lockPath(spool));
    }
    return false;
  } finally {
    await removeIfPresent(tmp);
  }
}

export async function releaseLock(spool: string): Promise<void> {
  const owner = await readLock(spool).catch(() => null);
  if (owner?.pid === process.pid) await removeIfPresent(lockPath(spool));
}

/** releaseLock for signal handlers, which cannot wait. */
export function releaseLockSync(spool: string): void {
  try {
    if (Number(readFileSync(lockPath(spool), 'utf8').split(' ')[0]) === process.pid) unlinkSync(lockPath(spool));
  } catch {
    // no lock, or not ours
  }
}
