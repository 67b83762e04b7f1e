import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  acquireLock,
  globalLockPath,
  LockBusyError,
  readLockOwner,
  serverLockPath,
  tryAcquireLock,
  withLock,
} from '../../src/catalog/locks.ts';
import { makeScratchDir } from './support.ts';

const CHILD = fileURLToPath(new URL('./fixtures/lock-child.ts', import.meta.url));

let dir: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await makeScratchDir('locks');
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface ChildReport {
  won: boolean;
  pid: number;
  owner?: number;
}

function startContender(lockPath: string, startAt = 0): { child: ChildProcess; report: Promise<ChildReport> } {
  const child = spawn(process.execPath, [CHILD, lockPath, String(startAt)], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  const lines = createInterface({ input: child.stdout! });
  const report = (async () => {
    const [line] = (await once(lines, 'line')) as [string];
    return JSON.parse(line) as ChildReport;
  })();
  return { child, report };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.stdin?.end();
  await exited;
}

/** A process that is alive for the duration of a test, and its /proc start time. */
async function liveProcess(): Promise<{ pid: number; startTime: string; child: ChildProcess }> {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  children.push(child);
  await once(child, 'spawn');
  const stat = await readFile(`/proc/${child.pid}/stat`, 'utf8');
  const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] as string;
  return { pid: child.pid as number, startTime, child };
}

async function deadPid(): Promise<number> {
  const child = spawn('true', [], { stdio: 'ignore' });
  await once(child, 'exit');
  return child.pid as number;
}

describe('lock names', () => {
  it('follows Barman', () => {
    expect(serverLockPath('/var/lib/barman', 'pg', 'backup')).toBe('/var/lib/barman/.pg-backup.lock');
    expect(serverLockPath('/var/lib/barman', 'pg', 'receive-wal')).toBe('/var/lib/barman/.pg-receive-wal.lock');
    expect(globalLockPath('/var/lib/barman', 'cron')).toBe('/var/lib/barman/.cron.lock');
  });
});

describe('within one process', () => {
  it('records the owner, refuses a second holder, and releases', async () => {
    const path = join(dir, '.pg-backup.lock');
    const handle = await tryAcquireLock(path);
    expect(handle.busy).toBe(false);
    const content = await readFile(path, 'utf8');
    expect(content).toMatch(new RegExp(`^${process.pid}\\n\\d+\\n$`));
    expect(await readLockOwner(path)).toMatchObject({ pid: process.pid, live: true });

    expect(await tryAcquireLock(path)).toEqual({ busy: true, pid: process.pid });
    await expect(withLock(path, async () => 'ran')).rejects.toThrow(new LockBusyError(path, process.pid));
    await expect(withLock(path, async () => 'ran')).rejects.toThrow(`lock ${path} is held by process ${process.pid}`);

    if (!handle.busy) await handle.release();
    expect(await readLockOwner(path)).toBeNull();
    expect(await withLock(path, async () => 'ran')).toBe('ran');
    // Nothing left behind: no lock, no temp or break files.
    expect(await readdir(dir)).toEqual([]);
  });

  it('release leaves alone a lock file that no longer names the holder', async () => {
    const path = join(dir, '.pg-xlogdb.lock');
    const handle = await tryAcquireLock(path);
    if (handle.busy) throw new Error('unexpectedly busy');
    await writeFile(path, '1\n1\n');
    await handle.release();
    expect(await readFile(path, 'utf8')).toBe('1\n1\n');
    await rm(path);
  });
});

describe('stale locks count as free', () => {
  const cases: [string, () => Promise<string>][] = [
    ['an empty file (Barman leaves its lock files behind)', async () => ''],
    ['garbage', async () => 'not a pid\n'],
    ['a Barman lock naming a dead PID', async () => `${await deadPid()}\n`],
    ['our format naming a dead PID', async () => `${await deadPid()}\n12345\n`],
  ];
  it.each(cases)('%s', async (_label, content) => {
    const path = join(dir, '.pg-archive-wal.lock');
    await writeFile(path, await content());
    const handle = await tryAcquireLock(path);
    expect(handle.busy).toBe(false);
    expect(await readLockOwner(path)).toMatchObject({ pid: process.pid, live: true });
    if (!handle.busy) await handle.release();
  });

  it('a live PID with another start time is a recycled PID: stale', async () => {
    const other = await liveProcess();
    const path = join(dir, '.pg-recycled.lock');
    await writeFile(path, `${other.pid}\n${Number(other.startTime) + 1}\n`);
    expect(await readLockOwner(path)).toMatchObject({ pid: other.pid, live: false });
    const handle = await tryAcquireLock(path);
    expect(handle.busy).toBe(false);
    if (!handle.busy) await handle.release();

    // The same PID with its real start time is a live holder.
    await writeFile(path, `${other.pid}\n${other.startTime}\n`);
    expect(await tryAcquireLock(path)).toEqual({ busy: true, pid: other.pid });
    await rm(path);
  });

  it('a Barman lock (PID only) is live only if the process predates the file', async () => {
    const other = await liveProcess();
    const path = join(dir, '.pg-barman.lock');
    await writeFile(path, `${other.pid}\n`);
    expect(await tryAcquireLock(path)).toEqual({ busy: true, pid: other.pid });
    // Written long before that process started: the PID has been reused since.
    const longAgo = new Date(Date.now() - 24 * 3600 * 1000);
    await utimes(path, longAgo, longAgo);
    const handle = await tryAcquireLock(path);
    expect(handle.busy).toBe(false);
    if (!handle.busy) await handle.release();
  });
});

describe('across processes', () => {
  it('exactly one of several simultaneous contenders wins, on a free and on a stale lock', async () => {
    for (let round = 0; round < 6; round++) {
      const path = join(dir, `.pg-race-${round}.lock`);
      // Odd rounds start from a stale lock, so every contender goes through the takeover path.
      if (round % 2 === 1) await writeFile(path, `${await deadPid()}\n1\n`);
      const startAt = Date.now() + 700;
      const contenders = Array.from({ length: 4 }, () => startContender(path, startAt));
      const reports = await Promise.all(contenders.map((c) => c.report));
      const winners = reports.filter((r) => r.won);
      expect(winners, `round ${round}: ${JSON.stringify(reports)}`).toHaveLength(1);
      const winner = winners[0] as ChildReport;
      for (const loser of reports.filter((r) => !r.won)) expect(loser.owner).toBe(winner.pid);
      expect(await readLockOwner(path)).toMatchObject({ pid: winner.pid, live: true });
      await Promise.all(contenders.map((c) => stop(c.child)));
      expect(await readLockOwner(path)).toBeNull();
    }
    expect((await readdir(dir)).filter((n) => n.includes('race'))).toEqual([]);
  });

  it('takes over a lock whose holder was killed with SIGKILL', async () => {
    const path = join(dir, '.pg-receive-wal.lock');
    const { child, report } = startContender(path);
    const r = await report;
    expect(r.won).toBe(true);
    expect(await tryAcquireLock(path)).toEqual({ busy: true, pid: r.pid });

    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
    // The dead holder's file is still there, as after a crash.
    expect((await readFile(path, 'utf8')).split('\n')[0]).toBe(String(r.pid));
    expect(await readLockOwner(path)).toMatchObject({ pid: r.pid, live: false });

    const handle = await tryAcquireLock(path);
    expect(handle.busy).toBe(false);
    expect(await readLockOwner(path)).toMatchObject({ pid: process.pid, live: true });
    if (!handle.busy) await handle.release();
  });

  it('acquireLock waits for the holder to release, and gives up after its timeout', async () => {
    const path = join(dir, '.cron.lock');
    const { child, report } = startContender(path);
    const holder = await report;
    expect(holder.won).toBe(true);

    await expect(acquireLock(path, { timeoutMs: 200, pollMs: 20 })).rejects.toThrow(new LockBusyError(path, holder.pid));

    setTimeout(() => child.stdin?.end(), 300);
    const handle = await acquireLock(path, { timeoutMs: 10_000, pollMs: 20 });
    expect(await readLockOwner(path)).toMatchObject({ pid: process.pid });
    await handle.release();
  });
});
