// Barman-named lock files (`<lock dir>/.<server>-<name>.lock`) shared by the daemon and
// CLI processes. Barman holds an flock(2) on them; Node has no flock, so ownership is
// the file's existence plus its content instead:
//
//   "<pid>\n<start time of pid, /proc/<pid>/stat field 22>\n"
//
// A lock is taken by link()ing a fully written temp file to the lock name (an atomic
// exclusive create that never exposes a half-written file). Barman writes just "<pid>\n"
// and leaves lock files behind after use, so a lock whose owner is gone (dead PID, a
// recycled PID with another start time, a zombie) or whose content is unreadable is free.
//
// Replacing a stale lock must not let two contenders both win. Whoever wants to replace it
// first takes `<lock>.break` (again with link()), re-checks under it that the lock is
// still the stale one, and renames its own file over it. Only the dead owner could
// otherwise change a stale lock, so the re-check cannot be invalidated in between.
import { randomBytes } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fsyncDir, isErrno } from '../util/durable-fs.ts';

export interface LockOwner {
  pid: number;
  /** Start time of the owner (clock ticks since boot); null in locks written by Barman. */
  startTime: string | null;
  /** Whether that process still exists (and is the same process that wrote the lock). */
  live: boolean;
}

export interface LockHandle {
  readonly busy: false;
  readonly path: string;
  /** Removes the lock file if it still names this holder. Safe to call more than once. */
  release(): Promise<void>;
}

export interface LockBusy {
  readonly busy: true;
  readonly pid: number;
}

export class LockBusyError extends Error {
  readonly lockPath: string;
  readonly pid: number;
  constructor(lockPath: string, pid: number) {
    super(`lock ${lockPath} is held by process ${pid}`);
    this.name = 'LockBusyError';
    this.lockPath = lockPath;
    this.pid = pid;
  }
}

/** `.<server>-<name>.lock`, e.g. name `backup`, `receive-wal`, `archive-wal`, `xlogdb`, a backup ID. */
export function serverLockPath(lockDirectory: string, server: string, name: string): string {
  return join(lockDirectory, `.${server}-${name}.lock`);
}

/** Global locks: `.cron.lock`, `.config-update.lock`. */
export function globalLockPath(lockDirectory: string, name: string): string {
  return join(lockDirectory, `.${name}.lock`);
}

// Limits the retries when other contenders keep changing the lock under us.
const MAX_ATTEMPTS = 20;

export async function tryAcquireLock(path: string): Promise<LockHandle | LockBusy> {
  const lockPath = resolve(path);
  const content = `${process.pid}\n${await ownStartTime()}\n`;
  const tmp = await writeTemp(lockPath, content);
  try {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (attempt > 0) await sleep(1 + Math.random() * 5 * attempt);
      let linked = false;
      try {
        await link(tmp, lockPath);
        linked = true;
        await fsyncDir(dirname(lockPath));
        return makeHandle(lockPath, content);
      } catch (err) {
        // Do not keep a lock the caller will never learn it holds.
        if (linked) await unlink(lockPath).catch(() => undefined);
        if (linked || !isErrno(err, 'EEXIST')) throw err;
      }
      const seen = await inspect(lockPath);
      if (seen === null) continue; // released meanwhile: try again
      if (seen.owner?.live) return { busy: true, pid: seen.owner.pid };
      const outcome = await replaceStale(lockPath, tmp, seen);
      if (outcome === 'acquired') return makeHandle(lockPath, content);
      if (outcome !== 'retry') return outcome;
    }
    const last = await inspect(lockPath);
    return { busy: true, pid: last?.owner?.pid ?? 0 };
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

export interface AcquireOptions {
  /** How long to wait for a busy lock before giving up with LockBusyError. Default 0. */
  timeoutMs?: number;
  pollMs?: number;
}

/** Takes the lock, waiting up to `timeoutMs` for its holder to release it. */
export async function acquireLock(path: string, opts: AcquireOptions = {}): Promise<LockHandle> {
  const deadline = Date.now() + (opts.timeoutMs ?? 0);
  for (;;) {
    const result = await tryAcquireLock(path);
    if (!result.busy) return result;
    if (Date.now() >= deadline) throw new LockBusyError(resolve(path), result.pid);
    await sleep(Math.min(opts.pollMs ?? 100, Math.max(1, deadline - Date.now())));
  }
}

/** Runs `fn` holding the lock; throws LockBusyError (naming lock and holder) if it is taken. */
export async function withLock<T>(path: string, fn: () => Promise<T>, opts: AcquireOptions = {}): Promise<T> {
  const handle = await acquireLock(path, opts);
  try {
    return await fn();
  } finally {
    await handle.release();
  }
}

/** Who holds the lock: null when the file is absent, empty or unreadable (free in all cases). */
export async function readLockOwner(path: string): Promise<LockOwner | null> {
  return (await inspect(resolve(path)))?.owner ?? null;
}

// ---------------------------------------------------------------- internals

interface Observed {
  /** Exact file content: the identity of this particular lock instance. */
  content: string;
  ino: bigint;
  owner: LockOwner | null;
}

async function inspect(path: string): Promise<Observed | null> {
  let content: string;
  let st: BigIntStats;
  try {
    const fh = await open(path, 'r');
    try {
      st = await fh.stat({ bigint: true });
      content = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
  const [first = '', second = ''] = content.split('\n').map((l) => l.trim());
  const pid = /^\d+$/.test(first) ? Number(first) : NaN;
  if (!Number.isSafeInteger(pid) || pid <= 0) return { content, ino: st.ino, owner: null };
  const startTime = /^\d+$/.test(second) ? second : null;
  const live = await isLive(pid, startTime, Number(st.mtimeMs));
  return { content, ino: st.ino, owner: { pid, startTime, live } };
}

type ReplaceOutcome = 'acquired' | 'retry' | LockBusy;

async function replaceStale(lockPath: string, tmp: string, stale: Observed): Promise<ReplaceOutcome> {
  const breakPath = `${lockPath}.break`;
  try {
    await link(tmp, breakPath);
  } catch (err) {
    if (!isErrno(err, 'EEXIST')) throw err;
    const breaker = await inspect(breakPath);
    // Someone is replacing it right now: look again shortly.
    if (breaker === null || breaker.owner?.live) return 'retry';
    // A breaker that died inside its few-microsecond window left its file behind.
    await removeIfUnchanged(breakPath, breaker);
    return 'retry';
  }
  try {
    const now = await inspect(lockPath);
    if (now === null) {
      try {
        await link(tmp, lockPath);
      } catch (err) {
        if (isErrno(err, 'EEXIST')) return 'retry';
        throw err;
      }
    } else if (now.owner?.live) {
      return { busy: true, pid: now.owner.pid };
    } else if (now.content !== stale.content || now.ino !== stale.ino) {
      return 'retry';
    } else {
      // tmp is also linked as the break file; renaming it keeps that link intact.
      await rename(tmp, lockPath);
    }
    await fsyncDir(dirname(lockPath));
    return 'acquired';
  } finally {
    await unlink(breakPath).catch(() => undefined);
  }
}

/** Deletes `path` only if it is still the observed file, by first moving it aside atomically. */
async function removeIfUnchanged(path: string, observed: Observed): Promise<void> {
  const aside = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.stale`;
  try {
    await rename(path, aside);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return;
    throw err;
  }
  const moved = await inspect(aside);
  if (moved !== null && (moved.ino !== observed.ino || moved.content !== observed.content)) {
    // We raced and moved a fresh file: put it back unless someone replaced it already.
    await link(aside, path).catch(() => undefined);
  }
  await unlink(aside).catch(() => undefined);
}

function makeHandle(lockPath: string, content: string): LockHandle {
  let released = false;
  return {
    busy: false,
    path: lockPath,
    async release() {
      if (released) return;
      released = true;
      let current: string;
      try {
        current = await readFile(lockPath, 'utf8');
      } catch (err) {
        if (isErrno(err, 'ENOENT')) return;
        throw err;
      }
      // No directory fsync: if a crash undoes the unlink, the file names a dead process,
      // which already counts as free.
      if (current === content) await unlink(lockPath).catch(() => undefined);
    },
  };
}

async function writeTemp(lockPath: string, content: string): Promise<string> {
  // Not ending in ".lock": Barman's lock cleanup globs `.*.lock` and must not see these.
  const tmp = join(dirname(lockPath), `${basename(lockPath)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return tmp;
}

interface ProcStat {
  state: string;
  startTime: string;
}

async function readProcStat(pid: number): Promise<ProcStat | null | 'unavailable'> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ESRCH')) return (await procAvailable()) ? null : 'unavailable';
    return 'unavailable';
  }
  // The command name (field 2) is in parentheses and may itself contain ") ".
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const startTime = fields[19];
  if (state === undefined || startTime === undefined) return 'unavailable';
  return { state, startTime };
}

let procChecked: boolean | undefined;
async function procAvailable(): Promise<boolean> {
  if (procChecked === undefined) {
    try {
      await stat('/proc/self/stat');
      procChecked = true;
    } catch {
      procChecked = false;
    }
  }
  return procChecked;
}

let ownStart: Promise<string> | undefined;
function ownStartTime(): Promise<string> {
  ownStart ??= readProcStat(process.pid).then((s) => (s !== null && s !== 'unavailable' ? s.startTime : '0'));
  return ownStart;
}

async function isLive(pid: number, startTime: string | null, lockMtimeMs: number): Promise<boolean> {
  const proc = await readProcStat(pid);
  if (proc === 'unavailable') return signalProbe(pid);
  if (proc === null) return false;
  // A zombie has finished; it just has not been reaped by its parent yet.
  if (proc.state === 'Z' || proc.state === 'X' || proc.state === 'x') return false;
  if (startTime !== null) return proc.startTime === startTime;
  // Barman's "<pid>\n" carries no start time: the PID belongs to the writer only if that
  // process already existed when the lock file was last written.
  const started = await processStartEpochMs(proc.startTime);
  return started === null || started <= lockMtimeMs + 1000;
}

function signalProbe(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return !isErrno(err, 'ESRCH');
  }
}

// USER_HZ is 100 on every Linux architecture Node supports; sysconf is not reachable from JS.
const CLOCK_TICKS_PER_SECOND = 100;
let bootTimeMs: Promise<number | null> | undefined;

async function processStartEpochMs(startTicks: string): Promise<number | null> {
  bootTimeMs ??= readFile('/proc/stat', 'utf8').then(
    (text) => {
      const m = /^btime\s+(\d+)$/m.exec(text);
      return m ? Number(m[1]) * 1000 : null;
    },
    () => null,
  );
  const boot = await bootTimeMs;
  if (boot === null) return null;
  return boot + (Number(startTicks) * 1000) / CLOCK_TICKS_PER_SECOND;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
