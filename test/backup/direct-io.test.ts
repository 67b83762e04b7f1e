import { spawnSync } from 'node:child_process';
import { constants, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DIRECT_MIN_SIZE, DirectWriter } from '../../src/backup/direct-io.ts';

// Large backup files go to the disk with O_DIRECT from a few shared buffers,
// in the background. Whatever the sizes, the chunking and whether the reader
// waits when asked, each file must end up byte for byte what was written,
// with its exact size (the padded tail cut off), its mtime and mode, and no
// descriptor left open; a failed write must fail the archive, naming the file.

const FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function scratch(): string {
  const d = mkdtempSync(join(tmpdir(), 'barkeep-direct-'));
  dirs.push(d);
  return d;
}

function pattern(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 2654435761 + seed) >>> 24;
  return b;
}

const openFds = () => readdirSync('/proc/self/fd').length;

describe('DirectWriter', () => {
  it('leaves small files to the page cache', () => {
    const dir = scratch();
    const w = new DirectWriter(dir);
    const small = w.open(join(dir, 'small'), FLAGS, 0o600, DIRECT_MIN_SIZE - 1);
    expect(small.direct).toBe(false);
    small.end();
  });

  for (const chunk of [4096, 32_768 + 5, 1 << 20, 3 << 20]) {
    it(`writes files exactly whatever their size, fed in ${chunk}-byte chunks with back-pressure`, async () => {
      const dir = scratch();
      const before = openFds();
      const w = new DirectWriter(dir);
      const sizes = [DIRECT_MIN_SIZE, DIRECT_MIN_SIZE + 1, 3.5 * 2 ** 20 + 123, 8 * 2 ** 20 + 4096, 5 * 2 ** 20 - 1];
      const files = sizes.map((size, i) => ({ path: join(dir, `f${i}`), data: pattern(size, i) }));
      for (const [i, f] of files.entries()) {
        const out = w.open(f.path, FLAGS, 0o640, f.data.length);
        expect(out.direct, 'opened for direct writes').toBe(true);
        for (let at = 0; at < f.data.length; at += chunk) {
          out.write(f.data.subarray(at, at + chunk));
          const ready = w.whenReady();
          if (ready) await ready;
        }
        out.end(1_700_000_000 + i);
      }
      await w.drain();
      expect(openFds()).toBe(before);
      for (const [i, f] of files.entries()) {
        const st = statSync(f.path);
        expect(st.size, f.path).toBe(f.data.length);
        expect(readFileSync(f.path).equals(f.data), f.path).toBe(true);
        expect(st.mtimeMs).toBe((1_700_000_000 + i) * 1000);
        expect(st.mode & 0o777).toBe(0o640);
      }
    });
  }

  it('a reader that does not wait gets its bytes written all the same (through the page cache)', async () => {
    const dir = scratch();
    const before = openFds();
    const w = new DirectWriter(dir);
    // 3 files of 6 MiB in one go: far more than the shared buffers hold.
    const files = [0, 1, 2].map((i) => ({ path: join(dir, `f${i}`), data: pattern(6 * 2 ** 20 + 777 * i, i) }));
    for (const f of files) {
      const out = w.open(f.path, FLAGS, 0o600, f.data.length);
      for (let at = 0; at < f.data.length; at += 65_536) out.write(f.data.subarray(at, at + 65_536));
      out.end();
    }
    await w.drain();
    expect(openFds()).toBe(before);
    for (const f of files) expect(readFileSync(f.path).equals(f.data), f.path).toBe(true);
  });

  it('files filled side by side (every buffer held, none being written) never make the reader wait forever', async () => {
    const dir = scratch();
    const writers = Array.from({ length: 10 }, () => new DirectWriter(dir));
    const files = writers.map((w, i) => ({ w, path: join(dir, `f${i}`), data: pattern(2 * 2 ** 20 + 99, i) }));
    const outs = files.map((f) => f.w.open(f.path, FLAGS, 0o600, f.data.length)!);
    // Half a buffer each: all 8 shared buffers are being filled, none is on its way to the disk.
    for (const [i, f] of files.entries()) outs[i]!.write(f.data.subarray(0, 2 ** 19));
    expect(files.every((f) => f.w.whenReady() === null)).toBe(true);
    for (const [i, f] of files.entries()) {
      outs[i]!.write(f.data.subarray(2 ** 19));
      outs[i]!.end();
    }
    await Promise.all(writers.map((w) => w.drain()));
    for (const f of files) expect(readFileSync(f.path).equals(f.data), f.path).toBe(true);
  });

  it('an aborted file is closed once its writes are done, and the buffers come back', async () => {
    const dir = scratch();
    const before = openFds();
    const w = new DirectWriter(dir);
    const out = w.open(join(dir, 'cut'), FLAGS, 0o600, 4 * 2 ** 20);
    out.write(pattern(2 * 2 ** 20 + 5, 9));
    out.abort();
    await w.drain();
    expect(openFds()).toBe(before);
    // All the buffers are free again: a full-size file goes direct with no wait.
    const again = w.open(join(dir, 'again'), FLAGS, 0o600, 6 * 2 ** 20);
    const data = pattern(6 * 2 ** 20, 3);
    again.write(data);
    again.end();
    await w.drain();
    expect(readFileSync(join(dir, 'again')).equals(data)).toBe(true);
  });

  it.runIf(process.getuid?.() === 0)('a file system not known to do direct I/O well (here ramfs) is written through the page cache', () => {
    const mnt = join(scratch(), 'ram');
    mkdirSync(mnt);
    expect(spawnSync('mount', ['-t', 'ramfs', 'ramfs', mnt]).status).toBe(0);
    try {
      const ram = new DirectWriter(mnt).open(join(mnt, 'big'), FLAGS, 0o600, 64 * 2 ** 20);
      expect(ram.direct).toBe(false);
      ram.end();
      // The same size on the scratch directory's file system (ext4 here) goes direct.
      const dir = scratch();
      const out = new DirectWriter(dir).open(join(dir, 'big'), FLAGS, 0o600, 64 * 2 ** 20);
      expect(out.direct).toBe(true);
      out.abort();
    } finally {
      spawnSync('umount', [mnt]);
    }
  });

  it.runIf(process.getuid?.() === 0)('a full disk fails the archive, naming the file, and every later write', async () => {
    const mnt = join(scratch(), 'tiny');
    mkdirSync(mnt);
    expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]).status).toBe(0);
    try {
      const before = openFds();
      const w = new DirectWriter(mnt);
      const path = join(mnt, 'base', '16385');
      mkdirSync(join(mnt, 'base'));
      const out = w.open(path, FLAGS, 0o600, 6 * 2 ** 20);
      expect(out.direct, 'tmpfs takes O_DIRECT on this kernel').toBe(true);
      const data = pattern(6 * 2 ** 20, 1);
      let thrown: unknown = null;
      try {
        for (let at = 0; at < data.length; at += 1 << 20) {
          out.write(data.subarray(at, at + (1 << 20)));
          const ready = w.whenReady();
          if (ready) await ready;
        }
        out.end();
      } catch (e) {
        thrown = e;
        out.abort();
      }
      const drained = await w.drain().then(() => null, (e: unknown) => e);
      const failure = (thrown ?? drained) as Error;
      expect(failure?.message).toMatch(/ENOSPC/);
      expect(failure.message).toContain(path);
      expect(() => w.open(join(mnt, 'next'), FLAGS, 0o600, 2 * 2 ** 20)).toThrow(/ENOSPC/);
      expect(openFds()).toBe(before);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});
