import { copyFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { serverLockPath, tryAcquireLock } from '../../src/catalog/locks.ts';
import {
  archiverErrorsCheck,
  emptyIncomingCheck,
  emptyStreamingCheck,
  walArchiveCheck,
  walQueueLimitCheck,
  walSizeCheck,
} from '../../src/checks/wal-archive-checks.ts';
import { prettySize } from '../../src/util/human.ts';
import { barkeep } from '../support/cli.ts';
import { makeArchiveHome, makeWalSegments, type ArchiveHome, type WalFixture } from './fixtures.ts';

// `barkeep archive-wal` prints what Barman prints, and the WAL archive checks.

let wal: WalFixture;
const seg = (i: number) => wal.names[i]!;

beforeAll(async () => {
  wal = await makeWalSegments(4);
});

function put(h: ArchiveHome, dir: 'incoming' | 'streaming', index: number, as?: string): void {
  copyFileSync(join(wal.dir, seg(index)), join(h[dir], as ?? seg(index)));
}

describe('archive-wal', () => {
  it("prints Barman's lines for both sources, and 'no file found' when idle", async () => {
    const h = makeArchiveHome({ compression: 'gzip' });
    put(h, 'incoming', 0);
    put(h, 'incoming', 1);
    put(h, 'streaming', 2, `${seg(2)}.partial`);
    let r = await barkeep(['-c', h.conf, 'archive-wal', 'pg']);
    expect(r.stdout).toBe(`Processing xlog segments from file archival for pg\n\t${seg(0)}\n\t${seg(1)}\nProcessing xlog segments from streaming for pg\n\tno file found\n`);
    expect(r.code).toBe(0);
    r = await barkeep(['-c', h.conf, 'archive-wal', 'pg']);
    expect(r.stdout).toBe('Processing xlog segments from file archival for pg\n\tno file found\nProcessing xlog segments from streaming for pg\n\tno file found\n');
    expect(r.code).toBe(0);
  });

  it('prints only the enabled sources, the batch size when it limits the run, and -q silences it', async () => {
    const h = makeArchiveHome({ archiver: 'off', streaming_archiver_batch_size: 1 });
    put(h, 'streaming', 0);
    put(h, 'streaming', 1);
    put(h, 'streaming', 2);
    put(h, 'streaming', 3, `${seg(3)}.partial`);
    let r = await barkeep(['-c', h.conf, 'archive-wal', 'pg']);
    expect(r.stdout).toBe(`Processing xlog segments from streaming for pg (batch size: 1)\n\t${seg(0)}\n`);
    r = await barkeep(['-c', h.conf, '-q', 'archive-wal', 'pg']);
    expect(r.stdout).toBe('');
    expect(r.code).toBe(0);
    expect(readdirSync(h.streaming).sort()).toEqual([seg(2), `${seg(3)}.partial`]);
  });

  it('reports duplicates and unknown files as Barman does', async () => {
    const h = makeArchiveHome({ streaming_archiver: 'off' });
    put(h, 'incoming', 0);
    await barkeep(['-c', h.conf, 'archive-wal', 'pg']);
    put(h, 'incoming', 1, seg(0));
    writeFileSync(join(h.incoming, 'notes.txt'), 'not a WAL');
    const r = await barkeep(['-c', h.conf, 'archive-wal', 'pg']);
    expect(r.stdout).toBe(
      [
        'Processing xlog segments from file archival for pg',
        `\t${seg(0)}`,
        `\tError: ${seg(0)} is already present in server pg. File moved to errors directory.`,
        'Some unknown objects have been found while processing xlog segments for pg. Objects moved to errors directory:',
        '\tnotes.txt',
        '',
      ].join('\n'),
    );
    expect(r.code).toBe(0);
    expect(await archiverErrorsCheck(h.server)).toEqual({ name: 'archiver errors', ok: false, hint: 'duplicates: 1, unknown: 1' });
  });

  it('skips politely while another archive-wal runs', async () => {
    const h = makeArchiveHome();
    const lock = await tryAcquireLock(serverLockPath(h.server.paths.lockDirectory, 'pg', 'archive-wal'));
    if (lock.busy) throw new Error('busy');
    try {
      const r = await barkeep(['-c', h.conf, 'archive-wal', 'pg']);
      expect(r.stdout).toBe('Another archive-wal process is already running on server pg. Skipping to the next server\n');
      expect(r.code).toBe(0);
    } finally {
      await lock.release();
    }
  });

  it('fails clearly for an unknown server and an unsupported compression', async () => {
    const h = makeArchiveHome({ compression: 'custom', streaming_archiver: 'off' });
    let r = await barkeep(['-c', h.conf, 'archive-wal', 'nope']);
    expect(r.stderr).toContain("ERROR: Unknown server 'nope'");
    expect(r.code).toBe(1);
    r = await barkeep(['-c', h.conf, 'archive-wal', 'pg']);
    expect(r.stderr).toContain("ERROR: compression 'custom' of server 'pg' is not supported by barkeep");
    expect(r.code).toBe(1);
  });
});

describe('WAL archive checks', () => {
  it('archiver errors: OK when errors/ is empty, else counts by kind', async () => {
    const h = makeArchiveHome();
    expect(await archiverErrorsCheck(h.server)).toEqual({ name: 'archiver errors', ok: true, hint: '' });
    for (const n of [`${seg(0)}.20240101T000000Z.duplicate`, `${seg(1)}.20240101T000000Z.duplicate`, 'x.20240101T000000Z.unknown', 'y.error', 'z.something']) {
      writeFileSync(join(h.errors, n), '');
    }
    expect(await archiverErrorsCheck(h.server)).toEqual({ name: 'archiver errors', ok: false, hint: 'duplicates: 2, unknown: 1, not relevant: 1, unknown failure: 1' });
  });

  it('empty incoming/streaming directory: reported only when files wait for a disabled archiver', async () => {
    const h = makeArchiveHome({ archiver: 'off' });
    expect(await emptyIncomingCheck(h.server)).toBeNull();
    writeFileSync(join(h.incoming, 'x.tmp'), '');
    writeFileSync(join(h.incoming, '.hidden'), '');
    expect(await emptyIncomingCheck(h.server)).toBeNull();
    put(h, 'incoming', 0);
    expect(await emptyIncomingCheck(h.server)).toEqual({ name: 'empty incoming directory', ok: false, hint: `'${h.incoming}' must be empty when archiver=off` });

    const s = makeArchiveHome({ streaming_archiver: 'off' });
    put(s, 'streaming', 1, `${seg(1)}.partial`);
    expect(await emptyStreamingCheck(s.server)).toBeNull();
    put(s, 'streaming', 0);
    expect(await emptyStreamingCheck(s.server)).toEqual({ name: 'empty streaming directory', ok: false, hint: `'${s.streaming}' must be empty when streaming_archiver=off` });
    // Enabled archivers never report it.
    expect(await emptyStreamingCheck(h.server)).toBeNull();
  });

  it('incoming WALs directory: only past max_incoming_wals_queue', async () => {
    const h = makeArchiveHome({ max_incoming_wals_queue: 1 });
    put(h, 'incoming', 0);
    expect(await walQueueLimitCheck(h.server, 'incoming')).toBeNull();
    put(h, 'incoming', 1);
    expect(await walQueueLimitCheck(h.server, 'incoming')).toEqual({ name: 'incoming WALs directory', ok: false, hint: 'there are too many WALs in queue: 2, max 1' });
  });

  it('wal size: the size of the catalogued WAL, Barman-style after the last backup', async () => {
    const h = makeArchiveHome({ compression: 'gzip', streaming_archiver: 'off' });
    expect(await walSizeCheck(h.server)).toEqual({ name: 'wal size', ok: true, hint: '0 B', bytes: 0 });
    for (const i of [0, 1, 2]) put(h, 'incoming', i);
    writeFileSync(join(h.incoming, '00000002.history'), '1\t0/3000000\tno recovery target specified\n');
    await barkeep(['-c', h.conf, 'archive-wal', 'pg']);
    const sizes = [0, 1, 2].map((i) => statSync(join(h.wals, seg(i).slice(0, 16), seg(i))).size);
    const total = sizes.reduce((a, b) => a + b, 0);
    expect(await walSizeCheck(h.server)).toEqual({ name: 'wal size', ok: true, hint: prettySize(total), bytes: total });
    expect((await walSizeCheck(h.server, { lastBackup: { beginWal: seg(0), endWal: seg(0) } })).bytes).toBe(sizes[1]! + sizes[2]!);
    expect(await walSizeCheck(h.server, { lastBackup: null })).toEqual({ name: 'wal size', ok: true, hint: '0 B', bytes: 0 });
  });

  it('WAL archive: FAILED until a WAL is catalogued, archiving what already waits first', async () => {
    const h = makeArchiveHome({ streaming_archiver: 'off' });
    let switched = 0;
    expect(await walArchiveCheck(h.server, { trySwitchWal: async () => void switched++ })).toEqual({ name: 'WAL archive', ok: false, hint: 'please make sure WAL shipping is setup' });
    expect(switched).toBe(1);
    expect((await walArchiveCheck(h.server, { hasWaitingBackup: true })).ok).toBe(true);
    put(h, 'incoming', 0);
    expect(await walArchiveCheck(h.server)).toEqual({ name: 'WAL archive', ok: true, hint: '' });
    expect(readdirSync(h.incoming)).toEqual([]);
  });
});
