import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn, parseWalFileName, segmentOffset, walFileNameForLsn } from '../../src/postgres/lsn.ts';
import { barkeepServer, completeSegments, makeWal, switchWal, waitFor, type BarkeepServer } from '../support/barkeep-server.ts';
import { cloneAsStandby, startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { makeTempDir } from '../support/tmp.ts';

// The WAL receiver against real servers: byte-identical output, crash
// safety under kill -9, timeline switches, lost slots and restarts.

const SEG = 16 * 1024 * 1024;
const PG15_BIN = '/usr/lib/postgresql/15/bin';

function sameBytes(a: string, b: string): boolean {
  return spawnSync('cmp', ['-s', a, b]).status === 0;
}

/** Every complete segment in streaming/ equals the server's copy in pg_wal, and none is missing in between. */
function expectMatchesServerWal(server: BarkeepServer, cluster: PgCluster, timeline = 1): string[] {
  const mine = completeSegments(server.streamingDir).filter((f) => f.startsWith(timeline.toString(16).toUpperCase().padStart(8, '0')));
  expect(mine.length).toBeGreaterThan(0);
  const numbers = mine.map((f) => parseWalFileName(f, SEG)!.segNo);
  for (let i = 1; i < numbers.length; i++) expect(numbers[i]! - numbers[i - 1]!, `gap after ${mine[i - 1]}`).toBe(1n);
  for (const f of mine) expect(sameBytes(join(server.streamingDir, f), join(cluster.dataDir, 'pg_wal', f)), `${f} differs from the server's`).toBe(true);
  return mine;
}

describe('streaming next to pg_receivewal (PostgreSQL 15, pgbench load)', () => {
  let cluster: PgCluster;
  let server: BarkeepServer;

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    server = barkeepServer(cluster);
  });
  afterAll(async () => cluster?.destroy());

  it('writes every segment byte-identical to pg_receivewal, and pg_waldump reads them all', async () => {
    const prwDir = makeTempDir('prw');
    chmodSync(prwDir, 0o777);
    await cluster.superuserQuery("SELECT pg_create_physical_replication_slot('prw', true)");
    const receiver = server.startReceiver();
    const prw = spawn(join(PG15_BIN, 'pg_receivewal'), ['-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'barman', '-S', 'prw', '-D', prwDir, '--no-password'], {
      env: server.env,
      stdio: 'ignore',
    });
    try {
      await waitFor('receive-wal to start streaming', () => receiver.output().includes('starting log streaming'));
      const pgbenchEnv = { ...process.env, PGHOST: cluster.socketDir, PGPORT: String(cluster.port), PGUSER: 'postgres' };
      expect(spawnSync(join(PG15_BIN, 'pgbench'), ['-i', '-s', '5', 'postgres'], { env: pgbenchEnv }).status).toBe(0);
      expect(spawnSync(join(PG15_BIN, 'pgbench'), ['-T', '5', '-c', '2', 'postgres'], { env: pgbenchEnv }).status).toBe(0);
      const last = await switchWal(cluster);
      await waitFor(`${last} from both receivers`, () => existsSync(join(server.streamingDir, last)) && existsSync(join(prwDir, last)), 60_000);
    } finally {
      await receiver.stop();
      prw.kill('SIGINT');
    }
    expect(await receiver.exited).toBe(0);
    const theirs = completeSegments(prwDir);
    const mine = completeSegments(server.streamingDir);
    expect(mine.length).toBeGreaterThanOrEqual(5);
    expect(mine).toEqual(theirs);
    for (const f of mine) expect(sameBytes(join(server.streamingDir, f), join(prwDir, f)), f).toBe(true);
    const waldump = spawnSync(join(PG15_BIN, 'pg_waldump'), ['--quiet', '-p', server.streamingDir, mine[0]!, mine.at(-1)!], { encoding: 'utf8' });
    expect(waldump.stderr).toBe('');
    expect(waldump.status).toBe(0);
  });
});

describe.each([14, 16, 17, 18] as const)('streaming from PostgreSQL %i (npm server binaries)', (major) => {
  let cluster: PgCluster;
  let server: BarkeepServer;

  beforeAll(async () => {
    cluster = await startCluster({ major, settings: { wal_keep_size: '1GB' } });
    server = barkeepServer(cluster);
  });
  afterAll(async () => cluster?.destroy());

  it("matches the server's own pg_wal segments", async () => {
    const receiver = server.startReceiver();
    try {
      await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
      await makeWal(cluster, 300_000);
      const last = await switchWal(cluster);
      await waitFor(last, () => existsSync(join(server.streamingDir, last)), 60_000);
    } finally {
      await receiver.stop();
    }
    expect(await receiver.exited).toBe(0);
    expect(expectMatchesServerWal(server, cluster).length).toBeGreaterThanOrEqual(3);
  });
});

describe('crash safety: kill -9 during a WAL flood, 20 times', () => {
  let cluster: PgCluster;
  let server: BarkeepServer;

  beforeAll(async () => {
    cluster = await startCluster({ major: 15, settings: { wal_keep_size: '2GB' } });
    server = barkeepServer(cluster);
  });
  afterAll(async () => cluster?.destroy());

  /** What the slot says we flushed must be on disk, identical to the server's WAL. */
  function expectFlushedOnDisk(restartLsn: string): void {
    const lsn = parseLsn(restartLsn);
    if (lsn === 0n) return;
    const name = walFileNameForLsn(1, lsn - 1n, SEG);
    const offset = segmentOffset(lsn - 1n, SEG) + 1;
    const complete = join(server.streamingDir, name);
    const file = existsSync(complete) ? complete : `${complete}.partial`;
    expect(existsSync(file), `flushed up to ${restartLsn} but ${name} is missing`).toBe(true);
    const mine = readFileSync(file).subarray(0, offset);
    const theirs = readFileSync(join(cluster.dataDir, 'pg_wal', name)).subarray(0, offset);
    expect(mine.equals(theirs), `bytes up to ${restartLsn} differ`).toBe(true);
  }

  it('ends gapless and identical to the server, never missing what it reported as flushed', async () => {
    let flooding = true;
    const flood = (async () => {
      while (flooding) await makeWal(cluster, 20_000).catch(() => {});
    })();
    try {
      for (let i = 0; i < 20; i++) {
        const receiver = server.startReceiver();
        await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
        await new Promise((r) => setTimeout(r, 200 + Math.random() * 1200));
        await receiver.stop('SIGKILL');
        const [slot] = await cluster.superuserQuery<{ restart_lsn: string | null }>("SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'barman'");
        if (slot?.restart_lsn) expectFlushedOnDisk(slot.restart_lsn);
      }
    } finally {
      flooding = false;
      await flood;
    }
    const last = await switchWal(cluster);
    const receiver = server.startReceiver();
    try {
      await waitFor(last, () => existsSync(join(server.streamingDir, last)), 60_000);
    } finally {
      await receiver.stop();
    }
    const segments = expectMatchesServerWal(server, cluster);
    expect(segments.at(-1)).toBe(last);
  });
});

describe('timeline switch: the upstream standby is promoted while streaming', () => {
  let primary: PgCluster;
  let standby: PgCluster;
  let server: BarkeepServer;

  beforeAll(async () => {
    primary = await startCluster({ major: 15, settings: { wal_keep_size: '512MB' } });
    standby = await cloneAsStandby(primary, { wal_keep_size: '512MB' });
    server = barkeepServer(standby);
  });
  afterAll(async () => {
    await standby?.destroy();
    await primary?.destroy();
  });

  it('follows to the new timeline, keeps the old segment as .partial and archives the .history file', async () => {
    const receiver = server.startReceiver();
    try {
      await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
      await makeWal(primary, 100_000);
      const tl1 = await switchWal(primary);
      await waitFor(`${tl1} through the standby`, () => existsSync(join(server.streamingDir, tl1)), 60_000);
      // Some timeline-1 WAL past the segment boundary, so the switch happens mid-segment.
      await makeWal(primary, 5_000);
      const [cur] = await primary.superuserQuery<{ name: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS name');
      await waitFor(`${cur!.name}.partial from the standby`, () => existsSync(join(server.streamingDir, `${cur!.name}.partial`)), 30_000);
      await standby.promote();
      await waitFor('the standby to accept writes', async () => (await standby.superuserQuery<{ r: boolean }>('SELECT pg_is_in_recovery() AS r'))[0]!.r === false);
      await makeWal(standby, 50_000);
      const tl2 = await switchWal(standby);
      expect(tl2.startsWith('00000002')).toBe(true);
      await waitFor(`${tl2} on the new timeline`, () => existsSync(join(server.streamingDir, tl2)), 60_000);
    } finally {
      await receiver.stop();
    }
    const files = readdirSync(server.streamingDir);
    expect(files).toContain('00000002.history');
    expect(readFileSync(join(server.streamingDir, '00000002.history'), 'utf8')).toBe(readFileSync(join(standby.dataDir, 'pg_wal', '00000002.history'), 'utf8'));
    expect(files.some((f) => f.startsWith('00000001') && f.endsWith('.partial'))).toBe(true);
    expectMatchesServerWal(server, standby, 2);
    const state = JSON.parse(readFileSync(join(server.home, 'pg/.receive-wal.state.json'), 'utf8'));
    expect(state.events.map((e: { kind: string }) => e.kind)).toContain('timeline-switch');
  });
});

describe('a slot dropped under the receiver', () => {
  let cluster: PgCluster;

  beforeAll(async () => {
    cluster = await startCluster({ major: 17, settings: { wal_keep_size: '512MB' } });
  });
  afterAll(async () => cluster?.destroy());

  async function dropActiveSlot(slot: string): Promise<void> {
    await cluster.superuserQuery(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, [slot]);
    await waitFor('the walsender to go', async () => (await cluster.superuserQuery<{ a: boolean }>('SELECT active AS a FROM pg_replication_slots WHERE slot_name = $1', [slot]))[0]?.a === false);
    await cluster.superuserQuery('SELECT pg_drop_replication_slot($1)', [slot]);
  }

  it('is recreated with create_slot = auto, and streaming goes on', async () => {
    const server = barkeepServer(cluster, { slot_name: 'auto_slot' }, 'autoslot');
    const receiver = server.startReceiver();
    try {
      await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
      await dropActiveSlot('auto_slot');
      await waitFor('the slot to be back', async () => (await cluster.superuserQuery("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'auto_slot' AND active")).length === 1, 30_000);
      await makeWal(cluster, 50_000);
      const last = await switchWal(cluster);
      await waitFor(last, () => existsSync(join(server.streamingDir, last)), 60_000);
    } finally {
      await receiver.stop();
    }
    const state = JSON.parse(readFileSync(join(server.home, 'autoslot/.receive-wal.state.json'), 'utf8'));
    expect(state.events.filter((e: { kind: string }) => e.kind === 'slot-created').length).toBe(2);
  });

  it('with create_slot = manual, receive-wal stops and check fails with the hint', async () => {
    const server = barkeepServer(cluster, { slot_name: 'manual_slot', create_slot: 'manual' }, 'manualslot');
    expect((await server.run(['receive-wal', '--create-slot', 'manualslot'])).stdout).toBe("Creating physical replication slot 'manual_slot' on server 'manualslot'\nReplication slot 'manual_slot' created\n");
    const receiver = server.startReceiver();
    await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
    await dropActiveSlot('manual_slot');
    expect(await receiver.exited).toBe(1);
    expect(receiver.output()).toContain("ERROR: replication slot 'manual_slot' doesn't exist. Please execute 'barkeep receive-wal --create-slot manualslot'");
    const check = await server.run(['check', 'manualslot']);
    expect(check.stdout).toContain("\treplication slot: FAILED (replication slot 'manual_slot' doesn't exist. Please execute 'barkeep receive-wal --create-slot manualslot')\n");
    expect(check.code).toBe(1);
  });
});

describe('server restart and connection drop mid-stream', () => {
  let cluster: PgCluster;
  let server: BarkeepServer;

  beforeAll(async () => {
    cluster = await startCluster({ major: 15, settings: { wal_keep_size: '1GB' } });
    server = barkeepServer(cluster);
  });
  afterAll(async () => cluster?.destroy());

  it('resumes without a gap', async () => {
    const receiver = server.startReceiver();
    try {
      await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
      const connections = () => receiver.output().match(/starting log streaming/g)?.length ?? 0;
      await makeWal(cluster, 100_000);
      await cluster.restart('fast');
      await waitFor('a reconnection after the restart', () => connections() >= 2, 30_000);
      await makeWal(cluster, 100_000);
      await cluster.superuserQuery("SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'barman_receive_wal'");
      await waitFor('a reconnection after the dropped connection', () => connections() >= 3, 30_000);
      await makeWal(cluster, 100_000);
      const last = await switchWal(cluster);
      await waitFor(last, () => existsSync(join(server.streamingDir, last)), 60_000);
    } finally {
      await receiver.stop();
    }
    expect(await receiver.exited).toBe(0);
    expect(receiver.output().match(/starting log streaming/g)!.length).toBeGreaterThanOrEqual(3);
    expectMatchesServerWal(server, cluster);
  });
});

