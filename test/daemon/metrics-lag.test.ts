import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/postgres/lsn.ts';
import { barkeepServer, makeWal, switchWal, waitFor, type BarkeepServer } from '../support/barkeep-server.ts';
import { freePort } from '../support/free-port.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { get, metric, startDaemon, type Daemon } from './daemon-support.ts';

// The receiver's lag behind PostgreSQL as a user watches it: /metrics of a real
// daemon streaming from PostgreSQL 15 under inserts and WAL switches, then idle;
// and the same figures in `barkeep status`.

const LAG = ['barkeep_receiver_primary_lsn', 'barkeep_receiver_flushed_lsn', 'barkeep_receiver_lag_bytes', 'barkeep_receiver_lag_seconds'] as const;
type Sample = Record<(typeof LAG)[number], number | null>;

describe('receiver lag in /metrics (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let server: BarkeepServer;
  let daemon: Daemon | undefined;
  let port = 0;

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    server = barkeepServer(cluster, { slot_name: 'lag' });
    port = await freePort();
    writeFileSync(server.conf, readFileSync(server.conf, 'utf8').replace('[barman]\n', `[barman]\nhttp_listen = 127.0.0.1:${port}\n`));
  });
  afterAll(async () => {
    if (daemon && daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    await cluster?.destroy();
  });

  const scrape = async (): Promise<Sample> => {
    const body = (await get(port, '/metrics')).body;
    return Object.fromEntries(LAG.map((name) => [name, metric(body, name, { server: 'pg' })])) as Sample;
  };
  const flushLsn = async () => Number(parseLsn((await cluster.superuserQuery<{ l: string }>('SELECT pg_current_wal_flush_lsn()::text AS l'))[0]!.l));

  it('follows the server under load and comes back to 0 once idle', { timeout: 180_000 }, async () => {
    daemon = startDaemon(server.conf, server.env);
    const d = daemon;
    await waitFor('the daemon to start', () => d.output().includes('barkeep daemon running'), 20_000);
    await waitFor('streaming', async () => metric((await get(port, '/metrics')).body, 'barkeep_receiver_up', { server: 'pg' }) === 1, 30_000);
    await waitFor('the lag series', async () => (await scrape()).barkeep_receiver_lag_bytes !== null, 10_000);

    // Load, scraped all along.
    const samples: Sample[] = [];
    let loading = true;
    const watcher = (async () => {
      while (loading) {
        samples.push(await scrape());
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const before = await flushLsn();
    try {
      for (let i = 0; i < 4; i++) {
        await makeWal(cluster, 100_000);
        await switchWal(cluster);
      }
    } finally {
      loading = false;
      await watcher;
    }
    const after = await flushLsn();
    // Four WAL switches: more than three whole segments.
    expect(after - before).toBeGreaterThan(3 * 16 * 1024 * 1024);
    expect(samples.length).toBeGreaterThan(5);
    let previous = 0;
    for (const s of samples) {
      // Present in every scrape while streaming, and consistent within one.
      for (const name of LAG) expect(s[name], name).not.toBeNull();
      expect(s.barkeep_receiver_primary_lsn!).toBeGreaterThanOrEqual(previous);
      previous = s.barkeep_receiver_primary_lsn!;
      expect(s.barkeep_receiver_primary_lsn!).toBeGreaterThanOrEqual(s.barkeep_receiver_flushed_lsn!);
      expect(s.barkeep_receiver_lag_seconds!).toBeGreaterThanOrEqual(0);
    }

    // Idle: caught up with exactly where the server's WAL ends now, well past where it
    // was when the receiver connected (a quiet moment between the server's own
    // background records; the figures may be up to a second or two behind).
    let last: Sample | undefined;
    await waitFor(
      'no lag, at the end of the WAL PostgreSQL has flushed',
      async () => {
        const end = await flushLsn();
        last = await scrape();
        return end >= after && last.barkeep_receiver_primary_lsn === end && last.barkeep_receiver_lag_bytes === 0 && last.barkeep_receiver_lag_seconds === 0;
      },
      60_000,
    );
    expect(last!.barkeep_receiver_flushed_lsn).toBe(last!.barkeep_receiver_primary_lsn);
    expect(last!.barkeep_receiver_primary_lsn!).toBeGreaterThan(samples[0]!.barkeep_receiver_primary_lsn!);

    // `barkeep status` says the same to a person.
    const status = await server.run(['status', 'pg']);
    expect(status.stdout).toMatch(/\tWAL receiver: streaming on timeline 1, flushed up to [0-9A-F]+\/[0-9A-F]+ \(pid \d+\)\n\tWAL receiver lag: (caught up with the server|\d+(\.\d)? \w*B and .+ behind the server) \(its WAL ends at [0-9A-F]+\/[0-9A-F]+\)\n/);
    const json = JSON.parse((await server.run(['-f', 'json', 'status', 'pg'])).stdout) as Record<string, Record<string, { description: string; message: string }>>;
    expect(json['pg']!['wal_receiver_lag']!.description).toBe('WAL receiver lag');

    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    // Stopped: no lag line, and the receiver line says so as before.
    const stopped = (await server.run(['status', 'pg'])).stdout;
    expect(stopped).toContain('\tWAL receiver: not running');
    expect(stopped).not.toContain('WAL receiver lag');
  });
});
