import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { serverLockPath, tryAcquireLock } from '../../src/catalog/locks.ts';
import { walTimeFromStats } from '../../src/catalog/xlog-db.ts';
import { archiverErrorsCheck } from '../../src/checks/wal-archive-checks.ts';
import { archiveWal, type ArchiveEvent } from '../../src/wal/archiver.ts';
import { detectCompression } from '../../src/wal/compression.ts';
import { makeArchiveHome, makeWalSegments, type ArchiveHome, type WalFixture } from './fixtures.ts';

// archive-wal on real WAL segments: placement, xlog.db lines, Barman's streaming
// rules, duplicates, unknown files, batches, the lock, and crash recovery.

let wal: WalFixture;
const seg = (i: number) => wal.names[i]!;
const walFile = (h: ArchiveHome, name: string) => join(h.wals, name.slice(0, 16), name);

beforeAll(async () => {
  wal = await makeWalSegments(6);
});

function put(h: ArchiveHome, dir: 'incoming' | 'streaming', index: number, as?: string): string {
  const target = join(h[dir], as ?? seg(index));
  copyFileSync(join(wal.dir, seg(index)), target);
  return target;
}

function xlogLines(h: ArchiveHome): string[][] {
  if (!existsSync(h.xlogdb)) return [];
  return readFileSync(h.xlogdb, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\t'));
}

function decompressed(path: string): Buffer {
  const head = readFileSync(path).subarray(0, 4).toString('hex');
  if (head.startsWith('1f8b')) return execFileSync('gzip', ['-dc', path], { maxBuffer: 64 << 20 });
  if (head.startsWith('425a68')) return execFileSync('bzip2', ['-dc', path], { maxBuffer: 64 << 20 });
  if (head === '04224d18') return execFileSync('lz4', ['-dc', path], { maxBuffer: 64 << 20 });
  if (head === '28b52ffd') return execFileSync('zstd', ['-dc', path], { maxBuffer: 64 << 20 });
  return readFileSync(path);
}

describe('archiveWal', () => {
  it('compresses incoming files into wals/<hash>/ with one xlog.db line each, in name order', async () => {
    const h = makeArchiveHome({ compression: 'gzip', streaming_archiver: 'off' });
    const sources = [put(h, 'incoming', 1), put(h, 'incoming', 0)];
    const expected = sources.map((p) => ({ time: walTimeFromStats(statSync(p, { bigint: true })) }));
    const events: ArchiveEvent[] = [];
    const result = await archiveWal(h.server, { onEvent: (e) => events.push(e) });
    expect(result.busy).toBe(false);
    if (result.busy) return;
    expect(result.queues.map((q) => q.source)).toEqual(['file archival']);
    expect(result.queues[0]!.files.map((f) => [f.name, f.outcome])).toEqual([
      [seg(0), 'archived'],
      [seg(1), 'archived'],
    ]);
    expect(events.map((e) => e.type)).toEqual(['queue-start', 'file', 'file', 'queue-end']);
    const lines = xlogLines(h);
    expect(lines.map((l) => l[0])).toEqual([seg(0), seg(1)]);
    for (const [i, name] of [seg(0), seg(1)].entries()) {
      const stored = walFile(h, name);
      expect(await detectCompression(stored)).toBe('gzip');
      expect(decompressed(stored).equals(readFileSync(join(wal.dir, name)))).toBe(true);
      expect(lines[i]).toEqual([name, String(statSync(stored).size), lines[i]![2], 'gzip', 'None']);
      // The source's mtime, as Barman records it (sources[1] is seg(0)).
      expect(Number(lines[i]![2])).toBe(expected[1 - i]!.time);
    }
    expect(readdirSync(h.incoming)).toEqual([]);
    expect(readdirSync(join(h.wals, seg(0).slice(0, 16))).sort()).toEqual([seg(0), seg(1)]);
  });

  it('stores uncompressed with compression = none, and keeps history files at the root of wals/', async () => {
    const h = makeArchiveHome({ streaming_archiver: 'off' });
    put(h, 'incoming', 2);
    writeFileSync(join(h.incoming, '00000002.history'), '1\t0/3000000\tno recovery target specified\n');
    const r = await archiveWal(h.server);
    expect(r.busy).toBe(false);
    expect(readFileSync(walFile(h, seg(2))).equals(readFileSync(join(wal.dir, seg(2))))).toBe(true);
    expect(readFileSync(join(h.wals, '00000002.history'), 'utf8')).toContain('no recovery target');
    expect(xlogLines(h).map((l) => [l[0], l[3]])).toEqual([
      [seg(2), 'None'],
      ['00000002.history', 'None'],
    ]);
  });

  it('keeps a file that arrives compressed as it is, recording its own compression', async () => {
    const h = makeArchiveHome({ compression: 'bzip2', streaming_archiver: 'off' });
    const gz = execFileSync('gzip', ['-c', join(wal.dir, seg(0))], { maxBuffer: 64 << 20 });
    writeFileSync(join(h.incoming, seg(0)), gz);
    await archiveWal(h.server);
    expect(readFileSync(walFile(h, seg(0))).equals(gz)).toBe(true);
    expect(xlogLines(h)[0]!.slice(1, 4)).toEqual([String(gz.length), xlogLines(h)[0]![2], 'gzip']);
  });

  it("records the configured alias (pigz) while writing gzip", async () => {
    const h = makeArchiveHome({ compression: 'pigz', streaming_archiver: 'off' });
    put(h, 'incoming', 0);
    await archiveWal(h.server);
    expect(xlogLines(h)[0]![3]).toBe('pigz');
    expect(await detectCompression(walFile(h, seg(0)))).toBe('gzip');
  });

  it('streaming: leaves the partial file; with no partial, archives every complete segment (the receiver resumes from its state)', async () => {
    const h = makeArchiveHome({ compression: 'lz4', archiver: 'off' });
    put(h, 'streaming', 0);
    put(h, 'streaming', 1);
    put(h, 'streaming', 2, `${seg(2)}.partial`);
    writeFileSync(join(h.streaming, `${seg(3)}.tmp`), 'in progress');
    let r = await archiveWal(h.server);
    if (r.busy) throw new Error('busy');
    expect(r.queues.map((q) => q.source)).toEqual(['streaming']);
    expect(r.queues[0]!.files.map((f) => f.name)).toEqual([seg(0), seg(1)]);
    expect(readdirSync(h.streaming).sort()).toEqual([`${seg(2)}.partial`, `${seg(3)}.tmp`]);

    const h2 = makeArchiveHome({ archiver: 'off' });
    put(h2, 'streaming', 0);
    put(h2, 'streaming', 1);
    r = await archiveWal(h2.server);
    if (r.busy) throw new Error('busy');
    expect(r.queues[0]!.files.map((f) => f.name)).toEqual([seg(0), seg(1)]);
    expect(readdirSync(h2.streaming)).toEqual([]);
  });

  it('streaming: after a timeline switch every partial but the newest is archived under its .partial name', async () => {
    const h = makeArchiveHome({ archiver: 'off', compression: 'zstd' });
    put(h, 'streaming', 0, `${seg(0)}.partial`);
    put(h, 'streaming', 1, `${seg(1).replace(/^00000001/, '00000002')}`);
    put(h, 'streaming', 2, `${seg(2).replace(/^00000001/, '00000002')}.partial`);
    const r = await archiveWal(h.server);
    if (r.busy) throw new Error('busy');
    expect(r.queues[0]!.files.map((f) => f.name)).toEqual([`${seg(0)}.partial`, seg(1).replace(/^00000001/, '00000002')]);
    expect(decompressed(join(h.wals, seg(0).slice(0, 16), `${seg(0)}.partial`)).equals(readFileSync(join(wal.dir, seg(0))))).toBe(true);
    expect(readdirSync(h.streaming)).toEqual([`${seg(2).replace(/^00000001/, '00000002')}.partial`]);
    expect(xlogLines(h).map((l) => l[0])).toEqual([`${seg(0)}.partial`, seg(1).replace(/^00000001/, '00000002')]);
  });

  it('drops an identical duplicate silently and moves a different one to errors/', async () => {
    const h = makeArchiveHome({ compression: 'gzip', streaming_archiver: 'off' });
    put(h, 'incoming', 0);
    await archiveWal(h.server);
    // The same WAL again (e.g. archive_command retried), this time uncompressed by the client.
    put(h, 'incoming', 0);
    let r = await archiveWal(h.server);
    if (r.busy) throw new Error('busy');
    expect(r.queues[0]!.files).toMatchObject([{ name: seg(0), outcome: 'already-archived' }]);
    expect(r.queues[0]!.files[0]!.entry).toBeUndefined();
    expect(readdirSync(h.incoming)).toEqual([]);
    expect(readdirSync(h.errors)).toEqual([]);
    expect(xlogLines(h)).toHaveLength(1);
    expect((await archiverErrorsCheck(h.server)).ok).toBe(true);

    // Different content under the same name.
    put(h, 'incoming', 1, seg(0));
    r = await archiveWal(h.server);
    if (r.busy) throw new Error('busy');
    expect(r.queues[0]!.files).toMatchObject([{ name: seg(0), outcome: 'duplicate' }]);
    const errors = readdirSync(h.errors);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(new RegExp(`^${seg(0)}\\.\\d{8}T\\d{6}Z\\.duplicate$`));
    expect(readFileSync(join(h.errors, errors[0]!)).equals(readFileSync(join(wal.dir, seg(1))))).toBe(true);
    expect(decompressed(walFile(h, seg(0))).equals(readFileSync(join(wal.dir, seg(0))))).toBe(true);
    expect(xlogLines(h)).toHaveLength(1);
    expect(await archiverErrorsCheck(h.server)).toEqual({ name: 'archiver errors', ok: false, hint: 'duplicates: 1' });
  });

  it('moves names that are not WAL files (and directories) to errors/ as .unknown; ignores hidden and .tmp files', async () => {
    const h = makeArchiveHome({ streaming_archiver: 'off' });
    writeFileSync(join(h.incoming, 'backup_label.old'), 'x');
    mkdirSync(join(h.incoming, '000000010000000000000099'));
    writeFileSync(join(h.incoming, '.12345-000000010000000000000042'), 'put-wal temp');
    writeFileSync(join(h.incoming, `${seg(3)}.tmp`), 'rsync temp');
    put(h, 'incoming', 3);
    const r = await archiveWal(h.server);
    if (r.busy) throw new Error('busy');
    expect(r.queues[0]!.files.map((f) => f.name)).toEqual([seg(3)]);
    expect(r.queues[0]!.unknown.map((u) => u.name)).toEqual(['000000010000000000000099', 'backup_label.old']);
    expect(readdirSync(h.errors).map((n) => n.replace(/\.\d{8}T\d{6}Z\./, '.STAMP.')).sort()).toEqual(['000000010000000000000099.STAMP.unknown', 'backup_label.old.STAMP.unknown']);
    expect(readdirSync(h.incoming).sort()).toEqual(['.12345-000000010000000000000042', `${seg(3)}.tmp`]);
    expect(await archiverErrorsCheck(h.server)).toEqual({ name: 'archiver errors', ok: false, hint: 'unknown: 2' });
  });

  it('takes at most archiver_batch_size / streaming_archiver_batch_size files per run', async () => {
    const h = makeArchiveHome({ archiver_batch_size: 2, streaming_archiver_batch_size: 1 });
    for (const i of [0, 1, 2]) put(h, 'incoming', i);
    for (const i of [3, 4]) put(h, 'streaming', i);
    put(h, 'streaming', 5, `${seg(5)}.partial`);
    const r = await archiveWal(h.server);
    if (r.busy) throw new Error('busy');
    expect(r.queues.map((q) => [q.source, q.found, q.runSize, q.files.map((f) => f.name)])).toEqual([
      ['file archival', 3, 2, [seg(0), seg(1)]],
      ['streaming', 2, 1, [seg(3)]],
    ]);
    expect(readdirSync(h.incoming)).toEqual([seg(2)]);
  });

  it('reports busy while another archive-wal holds the lock', async () => {
    const h = makeArchiveHome();
    put(h, 'incoming', 0);
    const lock = await tryAcquireLock(serverLockPath(h.server.paths.lockDirectory, 'pg', 'archive-wal'));
    if (lock.busy) throw new Error('lock unexpectedly busy');
    try {
      expect(await archiveWal(h.server)).toEqual({ busy: true, pid: process.pid });
      expect(readdirSync(h.incoming)).toEqual([seg(0)]);
    } finally {
      await lock.release();
    }
    expect((await archiveWal(h.server)).busy).toBe(false);
  });

  it('adds the missing xlog.db line when a killed run left the file archived but not catalogued', async () => {
    const h = makeArchiveHome({ compression: 'gzip', streaming_archiver: 'off' });
    // State after "rename done, xlog.db not yet appended": wals/ has it, incoming/ still has it.
    mkdirSync(join(h.wals, seg(0).slice(0, 16)), { recursive: true });
    writeFileSync(walFile(h, seg(0)), execFileSync('gzip', ['-c', join(wal.dir, seg(0))], { maxBuffer: 64 << 20 }));
    const source = put(h, 'incoming', 0);
    const time = walTimeFromStats(statSync(source, { bigint: true }));
    // And a temp file from a run killed while compressing the next one.
    put(h, 'incoming', 1);
    mkdirSync(join(h.wals, seg(1).slice(0, 16)), { recursive: true });
    writeFileSync(join(h.wals, seg(1).slice(0, 16), `.${seg(1)}.tmp-999999-abcdef012345`), 'half written');
    await archiveWal(h.server);
    expect(xlogLines(h).map((l) => l[0])).toEqual([seg(0), seg(1)]);
    const [name, size, when, compression, encryption] = xlogLines(h)[0]!;
    expect([name, Number(size), Number(when), compression, encryption]).toEqual([seg(0), statSync(walFile(h, seg(0))).size, time, 'gzip', 'None']);
    expect(readdirSync(join(h.wals, seg(1).slice(0, 16))).sort()).toEqual([seg(0), seg(1)]);
    expect(readdirSync(h.incoming)).toEqual([]);
  });

  it('carries over the entries of a legacy wals/xlog.db before appending', async () => {
    const h = makeArchiveHome({ streaming_archiver: 'off' });
    writeFileSync(join(h.wals, 'xlog.db'), '000000010000000000000000\t16777216\t1600000000.5\tNone\n');
    put(h, 'incoming', 0);
    await archiveWal(h.server);
    expect(xlogLines(h).map((l) => l[0])).toEqual(['000000010000000000000000', seg(0)]);
  });

  it('refuses a compression it cannot write, touching nothing', async () => {
    const h = makeArchiveHome({ compression: 'snappy', streaming_archiver: 'off' });
    put(h, 'incoming', 0);
    await expect(archiveWal(h.server)).rejects.toThrow("compression 'snappy' of server 'pg' is not supported by barkeep");
    expect(readdirSync(h.incoming)).toEqual([seg(0)]);
  });

  it('stops a queue at a file it cannot archive, leaving it and the later ones in place', async () => {
    const h = makeArchiveHome({ streaming_archiver: 'off' });
    put(h, 'incoming', 0);
    // Looks like bzip2 but is not: the comparison with the archived copy must fail.
    put(h, 'incoming', 1);
    await archiveWal(h.server);
    writeFileSync(join(h.incoming, seg(1)), Buffer.concat([Buffer.from('425a6839', 'hex'), Buffer.alloc(100)]));
    put(h, 'incoming', 2);
    const r = await archiveWal(h.server);
    if (r.busy) throw new Error('busy');
    expect(r.queues[0]!.failure).toMatchObject({ name: seg(1) });
    expect(r.queues[0]!.failure!.message).toMatch(/bzip2/);
    expect(readdirSync(h.incoming).sort()).toEqual([seg(1), seg(2)]);
  });
});

describe('archive-wal killed with SIGKILL at random points', () => {
  let many: WalFixture;
  beforeAll(async () => {
    many = await makeWalSegments(30, 500);
  }, 180_000);

  it('ends, after re-runs, with every segment archived once and catalogued once', async () => {
    const { spawn } = await import('node:child_process');
    const { BARKEEP_BIN } = await import('../support/cli.ts');
    const runArchiver = (conf: string, killAfterMs: number | null): Promise<number | string> =>
      new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [BARKEEP_BIN, '-c', conf, '-q', 'archive-wal', 'pg'], { stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const timer = killAfterMs === null ? null : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
        child.on('error', reject);
        child.on('close', (code, signal) => {
          if (timer) clearTimeout(timer);
          if (code !== null && code !== 0) reject(new Error(`archive-wal exited ${code}: ${stderr}`));
          else resolve(code ?? signal ?? 'unknown');
        });
      });

    // Kills that landed while segments were being archived (not before the first or after the last).
    let midRun = 0;
    for (let round = 0; round < 10; round++) {
      const compression = ['gzip', 'lz4', 'bzip2', 'zstd', 'none'][round % 5]!;
      const h = makeArchiveHome({ compression, streaming_archiver: 'off' }, `kill-${round}`);
      for (const name of many.names) linkSync(join(many.dir, name), join(h.incoming, name));
      let kills = 0;
      for (let attempt = 0; attempt < 6; attempt++) {
        // Past node's start-up (~150 ms) most kills land mid-archiving.
        const outcome = await runArchiver(h.conf, 100 + Math.floor(Math.random() * 900));
        if (outcome !== 'SIGKILL') break;
        kills++;
        const left = readdirSync(h.incoming).filter((n) => !n.startsWith('.')).length;
        if (left > 0 && left < many.names.length) midRun++;
      }
      await runArchiver(h.conf, null);
      expect(kills, `round ${round}: no run was killed`).toBeGreaterThan(0);

      const lines = xlogLines(h);
      expect(lines.map((l) => l[0]).sort(), `round ${round} (${compression})`).toEqual([...many.names].sort());
      for (const l of lines) expect(l).toHaveLength(5);
      expect(readdirSync(h.incoming)).toEqual([]);
      expect(readdirSync(h.errors)).toEqual([]);
      const hashDirs = readdirSync(h.wals).filter((n) => n !== 'pg-xlog.db');
      const stored = hashDirs.flatMap((d) => readdirSync(join(h.wals, d)));
      expect(stored.sort(), 'no temp file left behind').toEqual([...many.names].sort());
      for (const name of many.names) {
        expect(decompressed(walFile(h, name)).equals(readFileSync(join(many.dir, name))), name).toBe(true);
        const line = lines.find((l) => l[0] === name)!;
        expect(Number(line[1])).toBe(statSync(walFile(h, name)).size);
        expect(line[3]).toBe(compression === 'none' ? 'None' : compression);
      }
    }
    expect(midRun, 'kills that interrupted a batch half-way').toBeGreaterThan(3);
  }, 600_000);
});
