import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { ServerPaths } from '../../src/catalog/layout.ts';
import { PrimaryLagTracker } from '../../src/wal/primary-lag.ts';
import { emptyReceiverState, readReceiverState, receiverStatePath, writeReceiverState } from '../../src/wal/receiver-state.ts';
import { makeTempDir } from '../support/tmp.ts';

// The receiver's bookkeeping of its lag behind the server: which announcement
// of the server's WAL end the oldest unflushed byte belongs to, within a
// bounded memory, and how it is persisted.

const T0 = 1_700_000_000_000;

describe('PrimaryLagTracker', () => {
  it('dates the oldest unflushed WAL by when the server first announced it, and is caught up once flushed', () => {
    const t = new PrimaryLagTracker();
    expect(t.settle(0n)).toEqual({ primaryWalEnd: null, behindSince: null });
    t.observe(1000n, T0);
    t.observe(2000n, T0 + 100);
    t.observe(3000n, T0 + 200);
    expect(t.settle(0n)).toEqual({ primaryWalEnd: 3000n, behindSince: T0 });
    // The byte at 1000 was announced with 2000, later.
    expect(t.settle(1000n)).toEqual({ primaryWalEnd: 3000n, behindSince: T0 + 100 });
    expect(t.settle(2500n)).toEqual({ primaryWalEnd: 3000n, behindSince: T0 + 200 });
    expect(t.settle(3000n)).toEqual({ primaryWalEnd: 3000n, behindSince: null });
    expect(t.size).toBe(0);
    // Nothing new: still caught up; something new: behind since it was heard.
    t.observe(3000n, T0 + 300);
    expect(t.settle(3000n).behindSince).toBeNull();
    t.observe(3500n, T0 + 400);
    expect(t.settle(3000n)).toEqual({ primaryWalEnd: 3500n, behindSince: T0 + 400 });
  });

  it('ignores a keepalive that reports less than an earlier XLogData announced', () => {
    const t = new PrimaryLagTracker();
    t.observe(5000n, T0);
    t.observe(4000n, T0 + 100);
    expect(t.settle(4500n)).toEqual({ primaryWalEnd: 5000n, behindSince: T0 });
  });

  it('keeps a bounded queue under a flood of messages, never understating the lag', () => {
    const t = new PrimaryLagTracker();
    // A message every millisecond for ten minutes, never flushed.
    for (let i = 1; i <= 600_000; i++) t.observe(BigInt(i) * 8192n, T0 + i);
    expect(t.size).toBeLessThanOrEqual(128);
    const all = t.settle(0n);
    expect(all).toEqual({ primaryWalEnd: 600_000n * 8192n, behindSince: T0 + 1 });
    // Half flushed: the oldest unflushed byte was announced at T0 + 300_001; the
    // coarser entries may date it earlier, never later.
    const half = t.settle(300_000n * 8192n).behindSince!;
    expect(half).toBeLessThanOrEqual(T0 + 300_001);
    expect(half).toBeGreaterThanOrEqual(T0);
    // Announcements within the resolution share an entry, dated by the first.
    const u = new PrimaryLagTracker();
    for (let i = 1; i <= 10; i++) u.observe(BigInt(i), T0 + i);
    expect(u.size).toBe(1);
    expect(u.settle(5n)).toEqual({ primaryWalEnd: 10n, behindSince: T0 + 1 });
  });

  it('forgets the old history when a new connection finds the server behind what was heard (failover, restore)', () => {
    const t = new PrimaryLagTracker();
    t.observe(9000n, T0);
    t.reconnected(9500n, T0 + 1000);
    expect(t.settle(8000n)).toEqual({ primaryWalEnd: 9500n, behindSince: T0 });
    t.reconnected(4000n, T0 + 2000);
    expect(t.settle(3000n)).toEqual({ primaryWalEnd: 4000n, behindSince: T0 + 2000 });
    // Our own WAL reaching past the new server's end is no lag.
    expect(t.settle(8000n)).toEqual({ primaryWalEnd: 4000n, behindSince: null });
  });

  it('starts from what a previous run recorded', () => {
    const t = new PrimaryLagTracker();
    t.seed(7000n, T0, 5000n, T0 + 60_000);
    expect(t.settle(5000n)).toEqual({ primaryWalEnd: 7000n, behindSince: T0 });
    t.seed(7000n, null, 5000n, T0 + 60_000);
    expect(t.settle(5000n)).toEqual({ primaryWalEnd: 7000n, behindSince: T0 + 60_000 });
    t.seed(7000n, null, 7000n, T0 + 60_000);
    expect(t.settle(7000n)).toEqual({ primaryWalEnd: 7000n, behindSince: null });
    t.seed(null, null, null, T0);
    expect(t.settle(0n)).toEqual({ primaryWalEnd: null, behindSince: null });
  });
});

describe('the receiver state file', () => {
  it('loads a file written before the lag fields existed, and keeps them across a restart', async () => {
    // The state file lives in the server's directory; nothing else of the layout is needed.
    const paths = { backupDirectory: makeTempDir('receiver-lag') } as ServerPaths;
    const old = { pid: 1, state: 'stopped', updatedAt: '2024-01-01T00:00:00.000Z', timeline: 1, writtenLsn: '0/3000000', flushedLsn: '0/3000000', lastError: null, gap: null, events: [] };
    writeFileSync(receiverStatePath(paths), JSON.stringify(old));
    const read = await readReceiverState(paths);
    expect(read).toEqual({ ...old, primaryWalEnd: null, behindSince: null });

    const next = emptyReceiverState(read);
    next.primaryWalEnd = '0/3000500';
    next.behindSince = '2024-01-01T00:00:01.000Z';
    await writeReceiverState(paths, next);
    expect(JSON.parse(readFileSync(receiverStatePath(paths), 'utf8'))).toMatchObject({ primaryWalEnd: '0/3000500', behindSince: '2024-01-01T00:00:01.000Z' });
    expect(emptyReceiverState(await readReceiverState(paths))).toMatchObject({ flushedLsn: '0/3000000', primaryWalEnd: '0/3000500', behindSince: '2024-01-01T00:00:01.000Z' });
  });
});
