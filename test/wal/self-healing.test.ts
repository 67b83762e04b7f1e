import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barkeepServer, completeSegments, makeWal, switchWal, waitFor } from '../support/barkeep-server.ts';
import { cloneAsStandby, startCluster, type PgCluster } from '../support/pg-cluster.ts';

// What breaks Barman's streaming most often: a failover to a server whose
// history branched off before what was streamed, and WAL that PostgreSQL
// removed before it was received. With create_slot = auto the receiver heals
// itself and says what happened; a gap stays visible in check until
// acknowledged. Also the synchronous mode, where commits wait for barkeep.

function sameBytes(a: string, b: string): boolean {
  return spawnSync('cmp', ['-s', a, b]).status === 0;
}

function state(home: string, name = 'pg'): { events: { kind: string; message: string }[]; gap: unknown } {
  return JSON.parse(readFileSync(join(home, name, '.receive-wal.state.json'), 'utf8'));
}

describe('failover to a standby whose timeline branched off earlier', () => {
  let primary: PgCluster;
  let standby: PgCluster;

  beforeAll(async () => {
    primary = await startCluster({ major: 17, settings: { wal_keep_size: '512MB' } });
    standby = await cloneAsStandby(primary, { wal_keep_size: '512MB' });
  });
  afterAll(async () => {
    await standby?.destroy();
    await primary?.destroy();
  });

  it('recreates the slot, continues on the new timeline and keeps the diverged WAL aside', async () => {
    const server = barkeepServer(primary);
    let receiver = server.startReceiver();
    await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
    // The standby stops following; the primary goes on, and barkeep with it.
    await standby.stop('fast');
    await makeWal(primary, 100_000);
    const old = await switchWal(primary);
    await makeWal(primary, 2_000);
    await waitFor(old, () => existsSync(join(server.streamingDir, old)), 60_000);
    await receiver.stop();
    await primary.stop('immediate');

    // Failover: the lagging standby is promoted and takes over the address.
    await standby.start();
    await standby.promote();
    await waitFor('promotion', async () => (await standby.superuserQuery<{ r: boolean }>('SELECT pg_is_in_recovery() AS r'))[0]!.r === false);
    writeFileSync(server.conf, readFileSync(server.conf, 'utf8').replaceAll(`port=${primary.port}`, `port=${standby.port}`));
    writeFileSync(server.env['PGPASSFILE']!, `127.0.0.1:${standby.port}:*:barman:${standby.barmanPassword}\n`, { mode: 0o600 });

    receiver = server.startReceiver();
    await waitFor('streaming on timeline 2', () => /starting log streaming at \S+ \(timeline 2\)/.test(receiver.output()), 30_000);
    await makeWal(standby, 50_000);
    const next = await switchWal(standby);
    await waitFor(next, () => existsSync(join(server.streamingDir, next)), 60_000);
    await receiver.stop();

    const kinds = state(server.home).events.map((e) => e.kind);
    expect(kinds).toContain('diverged');
    expect(kinds.filter((k) => k === 'slot-created').length).toBe(2);
    expect(readdirSync(server.streamingDir)).toContain('00000002.history');
    const tl2 = completeSegments(server.streamingDir).filter((f) => f.startsWith('00000002'));
    expect(tl2.length).toBeGreaterThan(0);
    for (const f of tl2) expect(sameBytes(join(server.streamingDir, f), join(standby.dataDir, 'pg_wal', f)), f).toBe(true);
    // What barkeep held past the branch point is kept, not overwritten.
    expect(readdirSync(join(server.home, 'pg', 'errors')).some((f) => f.endsWith('.diverged'))).toBe(true);
    const check = await server.run(['check', 'pg']);
    expect(check.stdout).toMatch(/\tarchiver errors: FAILED \(diverged: 1\)\n/);
  });
});

describe('a WAL gap: PostgreSQL removed WAL barkeep never received', () => {
  let cluster: PgCluster;

  beforeAll(async () => {
    cluster = await startCluster({ major: 15, settings: { wal_keep_size: 0, max_wal_size: '48MB', min_wal_size: '32MB' } });
  });
  afterAll(async () => cluster?.destroy());

  it('is healed by streaming from the slot, reported by check with the first missing segment, and cleared by --reset', async () => {
    const server = barkeepServer(cluster);
    let receiver = server.startReceiver();
    await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
    const first = await switchWal(cluster);
    await waitFor(first, () => existsSync(join(server.streamingDir, first)), 30_000);
    await receiver.stop();

    // Without the slot, PostgreSQL recycles the WAL barkeep has not seen yet.
    await cluster.superuserQuery("SELECT pg_drop_replication_slot('barman')");
    for (let i = 0; i < 4; i++) {
      await makeWal(cluster, 150_000);
      await switchWal(cluster);
      await cluster.superuserQuery('CHECKPOINT');
    }
    const nextAfterFirst = (parseInt(first.slice(16), 16) + 1).toString(16).toUpperCase().padStart(8, '0');
    const missing = `${first.slice(0, 16)}${nextAfterFirst}`;
    const inPgWal = await cluster.superuserQuery<{ name: string }>('SELECT name FROM pg_ls_waldir() WHERE name = $1', [missing]);
    expect(inPgWal).toEqual([]);

    receiver = server.startReceiver();
    await waitFor('streaming again after the gap', () => (receiver.output().match(/starting log streaming/g)?.length ?? 0) >= 2, 30_000);
    const latest = await switchWal(cluster);
    await waitFor(latest, () => existsSync(join(server.streamingDir, latest)), 30_000);
    await receiver.stop();

    const check = await server.run(['check', 'pg']);
    expect(check.code).toBe(1);
    expect(check.stdout).toMatch(new RegExp(`\\tWAL continuity: FAILED \\(WAL gap detected at \\S+: segments ${missing} to [0-9A-F]{24} \\(PostgreSQL removed WAL before barkeep received it: .*58P01.*\\); point-in-time recovery cannot cross it: take a new base backup, then acknowledge with 'barkeep receive-wal --reset pg'\\)\\n`));

    const reset = await server.run(['receive-wal', '--reset', 'pg']);
    expect(reset.code).toBe(0);
    const after = await server.run(['check', 'pg']);
    expect(after.stdout).not.toContain('WAL continuity');
    expect(state(server.home).events.map((e) => e.kind)).toEqual(expect.arrayContaining(['gap', 'reset']));
  });
});

describe('synchronous streaming (streaming_archiver_name in synchronous_standby_names)', () => {
  let cluster: PgCluster;

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    // Only now: with it set before the harness creates its role, that commit would wait for a standby.
    await cluster.superuserQuery("ALTER SYSTEM SET synchronous_standby_names = 'barman_receive_wal'");
    await cluster.superuserQuery('SELECT pg_reload_conf()');
  });
  afterAll(async () => cluster?.destroy());

  it('acknowledges every commit only once it is fsynced in streaming/', async () => {
    const server = barkeepServer(cluster);
    const receiver = server.startReceiver();
    try {
      await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
      await waitFor('sync state', async () => (await cluster.superuserQuery<{ s: string }>("SELECT sync_state AS s FROM pg_stat_replication WHERE application_name = 'barman_receive_wal'"))[0]?.s === 'sync');
      const durations: number[] = [];
      for (let i = 0; i < 20; i++) {
        const started = Date.now();
        await cluster.superuserQuery("SET statement_timeout = '10s'; CREATE TABLE IF NOT EXISTS sync_t (i int); INSERT INTO sync_t VALUES (1)");
        durations.push(Date.now() - started);
        const [row] = await cluster.superuserQuery<{ ok: boolean }>(
          "SELECT flush_lsn >= pg_current_wal_flush_lsn() AS ok FROM pg_stat_replication WHERE application_name = 'barman_receive_wal'",
        );
        expect(row?.ok).toBe(true);
      }
      // Acknowledged at once, not on the next status tick (1 s): commits are not held back.
      durations.sort((a, b) => a - b);
      expect(durations[10]).toBeLessThan(300);
    } finally {
      await receiver.stop();
    }
  });
});
