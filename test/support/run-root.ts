// Per-run scratch root shared by the test helpers, binary lookup for every
// PostgreSQL major, and the clean-up that stops whatever a crashed test left
// running under the root.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const RUN_ROOT_ENV = 'BARKEEP_TEST_ROOT';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url)).replace(/\/$/, '');

export type PgMajor = 14 | 15 | 16 | 17 | 18;
export const PG_MAJORS: readonly PgMajor[] = [14, 15, 16, 17, 18];

// Servers refuse to run as root, so everything they touch belongs to this user.
export const SERVER_USER = 'postgres';

export const IS_ROOT = process.getuid?.() === 0;

let serverIds: { uid: number; gid: number } | undefined;

export function serverUserIds(): { uid: number; gid: number } {
  if (serverIds) return serverIds;
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === SERVER_USER && f.length >= 4) {
      serverIds = { uid: Number(f[2]), gid: Number(f[3]) };
      return serverIds;
    }
  }
  throw new Error(`OS user ${SERVER_USER} not found in /etc/passwd`);
}

/** Gives a path to the server user (no-op when not root: then we already are that user). */
export function chownToServer(path: string): void {
  if (!IS_ROOT) return;
  const { uid, gid } = serverUserIds();
  chownSync(path, uid, gid);
}

/** Prefixes a command so it runs as the server user when we are root. */
export function asServerUser(file: string, args: string[]): [string, string[]] {
  return IS_ROOT ? ['runuser', ['-u', SERVER_USER, '--', file, ...args]] : [file, args];
}

/**
 * Directory holding initdb/pg_ctl/postgres for a major. BARKEEP_PG<major>_BINDIR
 * overrides; otherwise the npm alias packages come first because they are pinned
 * by package.json, then Debian's packaged server.
 */
export function pgBinDir(major: PgMajor): string {
  const override = process.env[`BARKEEP_PG${major}_BINDIR`];
  const candidates = [
    ...(override ? [override] : []),
    ...(major === 15 ? [`/usr/lib/postgresql/15/bin`] : []),
    join(REPO_ROOT, 'node_modules', `pg${major}`, 'native', 'bin'),
    `/usr/lib/postgresql/${major}/bin`,
  ];
  for (const dir of candidates) {
    if (existsSync(join(dir, 'pg_ctl')) && existsSync(join(dir, 'initdb'))) return reachableBinDir(major, dir);
  }
  throw new Error(`no PostgreSQL ${major} binaries; looked in ${candidates.join(', ')}`);
}

const reachable = new Map<string, string>();

/**
 * The server user must be able to execute the binaries. A checkout in a
 * private directory (mktemp -d makes it 0700) hides node_modules from it:
 * then the package's native/ tree (bin, lib, share; the binaries find their
 * libraries relative to themselves) is copied once into the run root.
 */
function reachableBinDir(major: PgMajor, dir: string): string {
  const known = reachable.get(dir);
  if (known) return known;
  let result = dir;
  if (IS_ROOT && spawnSync('runuser', ['-u', SERVER_USER, '--', 'test', '-x', join(dir, 'postgres')]).status !== 0) {
    const target = join(runRoot(), 'pg-binaries', `pg${major}`);
    if (!existsSync(join(target, 'bin', 'postgres'))) {
      // Copy beside the target, then rename: parallel workers may race here.
      const tmp = `${target}.${process.pid}.${randomBytes(3).toString('hex')}`;
      mkdirSync(dirname(target), { recursive: true, mode: 0o755 });
      const cp = spawnSync('cp', ['-a', dirname(dir), tmp]);
      if (cp.status !== 0) throw new Error(`cannot copy PostgreSQL ${major} binaries to ${tmp}: ${cp.stderr}`);
      spawnSync('chmod', ['-R', 'a+rX', tmp]);
      try {
        renameSync(tmp, target);
      } catch {
        rmSync(tmp, { recursive: true, force: true });
      }
    }
    result = join(target, 'bin');
  }
  reachable.set(dir, result);
  return result;
}

let lazyRoot: string | undefined;

/**
 * The run root: the one global setup exported, or (outside vitest, e.g. a demo or
 * bench script) one created for this process and cleaned when it exits.
 */
export function runRoot(): string {
  const fromEnv = process.env[RUN_ROOT_ENV];
  if (fromEnv) {
    // Global setup made it; recreate only if someone removed it under us.
    if (!existsSync(fromEnv)) makeRootDir(fromEnv);
    return fromEnv;
  }
  if (lazyRoot) return lazyRoot;
  lazyRoot = createRunRoot();
  const root = lazyRoot;
  installExitCleanup(() => cleanupRunRoot(root));
  return root;
}

export function createRunRoot(): string {
  const root = `/tmp/barkeep-test-${process.pid}-${randomBytes(3).toString('hex')}`;
  makeRootDir(root);
  return root;
}

function makeRootDir(root: string): void {
  mkdirSync(root, { recursive: true, mode: 0o755 });
  // The server user must traverse it whatever our umask was.
  chmodSync(root, 0o755);
}

/**
 * Runs `cleanup` once at exit and, with `signals`, on SIGINT/SIGTERM/SIGHUP too,
 * re-raising the signal only if nobody else handles it (so vitest keeps its own
 * interrupt handling).
 */
export function installExitCleanup(cleanup: () => void, signals = true): () => void {
  let done = false;
  const once = (): void => {
    if (done) return;
    done = true;
    try {
      cleanup();
    } catch (err) {
      process.stderr.write(`barkeep test cleanup failed: ${String(err)}\n`);
    }
  };
  const sigs = signals ? (['SIGINT', 'SIGTERM', 'SIGHUP'] as const) : [];
  const onSignal = (sig: NodeJS.Signals): void => {
    once();
    for (const s of sigs) process.removeListener(s, onSignal);
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };
  process.once('exit', once);
  for (const s of sigs) process.on(s, onSignal);
  return () => {
    done = true;
    process.removeListener('exit', once);
    for (const s of sigs) process.removeListener(s, onSignal);
  };
}

/** Data directories under `dir` that have a postmaster.pid (i.e. may be running). */
export function findRunningDataDirs(dir: string, depth = 6): string[] {
  const found: string[] = [];
  const walk = (d: string, left: number): void => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    if (entries.some((e) => e.name === 'PG_VERSION' && e.isFile())) {
      if (entries.some((e) => e.name === 'postmaster.pid')) found.push(d);
      // A data directory never nests another cluster worth stopping.
      return;
    }
    if (left === 0) return;
    for (const e of entries) {
      if (e.isDirectory() && !e.isSymbolicLink()) walk(join(d, e.name), left - 1);
    }
  };
  walk(dir, depth);
  return found;
}

export function postmasterPid(dataDir: string): number | null {
  try {
    const first = readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0];
    const pid = Number(first);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** True when `pid` is alive and is a postmaster for exactly this data directory. */
export function isPostmasterOf(pid: number, dataDir: string): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.some((a) => a.endsWith('postgres')) && argv.includes(dataDir);
  } catch {
    return false;
  }
}

function majorOf(dataDir: string): PgMajor | null {
  try {
    const v = Number(readFileSync(join(dataDir, 'PG_VERSION'), 'utf8').trim());
    return (PG_MAJORS as readonly number[]).includes(v) ? (v as PgMajor) : null;
  } catch {
    return null;
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Immediate-stops one data directory. Only processes whose command line names this
 * data directory are ever signalled, so a stale postmaster.pid whose pid was reused
 * by something else is left alone.
 */
export function stopDataDirSync(dataDir: string): boolean {
  const pid = postmasterPid(dataDir);
  if (pid === null || !isPostmasterOf(pid, dataDir)) return false;
  const major = majorOf(dataDir);
  if (major !== null) {
    try {
      const [file, args] = asServerUser(join(pgBinDir(major), 'pg_ctl'), [
        '-D', dataDir, '-m', 'immediate', '-w', '-t', '30', 'stop',
      ]);
      spawnSync(file, args, { cwd: '/', stdio: 'ignore', timeout: 40_000 });
    } catch {
      // fall through to signals
    }
  }
  for (const sig of ['SIGQUIT', 'SIGKILL'] as const) {
    if (!isPostmasterOf(pid, dataDir)) return true;
    try {
      process.kill(pid, sig);
    } catch {
      return true;
    }
    for (let i = 0; i < 100 && isPostmasterOf(pid, dataDir); i++) sleepSync(50);
  }
  return true;
}

/** Stops every cluster under the root, then removes it. Returns the data dirs it stopped. */
export function cleanupRunRoot(root: string): string[] {
  if (!existsSync(root)) return [];
  const stopped = findRunningDataDirs(root).filter((d) => stopDataDirSync(d));
  rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  return stopped;
}
