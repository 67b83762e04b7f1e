import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseBackupTime } from '../../src/catalog/backup-info.ts';
import { listBackups, type CatalogBackup } from '../../src/catalog/catalog.ts';
import { walPath } from '../../src/catalog/layout.ts';
import { loadConfigFile, type ServerConfig } from '../../src/config/load.ts';
import { xlogDbNames } from '../backup/catalog-support.ts';
import { barkeepServer, switchWal, waitFor, type BarkeepServer } from '../support/barkeep-server.ts';
import { freePort } from '../support/free-port.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { descendants, signalAll } from '../support/processes.ts';
import { get, health, logEntries, metric, serverSection, startDaemon, step, type Daemon } from './daemon-support.ts';

// One daemon, two servers of different majors (PostgreSQL 15 and 17), as a DBA
// runs it: slots created, WAL streamed, backups from backup_schedule, retention
// (REDUNDANCY 1) deleting the obsolete backup and the WAL only it needed, and
// /metrics and /health following every step. One server going down is reported
// by name while the other keeps streaming; it heals when the server is back. A
// reload that removes a server stops only that server.

const SERVERS = ['pg15', 'pg17'] as const;
type Name = (typeof SERVERS)[number];

describe('barkeep daemon with two servers (PostgreSQL 15 and 17)', () => {
  const clusters = {} as Record<Name, PgCluster>;
  let server: BarkeepServer;
  let daemon: Daemon | undefined;
  let port = 0;

  const config = (name: Name): ServerConfig => loadConfigFile(server.conf).servers.get(name)!;
  const backups = async (name: Name): Promise<CatalogBackup[]> => (await listBackups(config(name).paths)).backups;
  const done = async (name: Name) => (await backups(name)).filter((b) => b.info.status === 'DONE');
  const slot = async (name: Name) => (await clusters[name].superuserQuery<{ active: boolean; active_pid: number | null }>("SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = 'two'"))[0];
  const metrics = async () => (await get(port, '/metrics')).body;
  /**
   * Segments close only when switched: the scheduled backups and the checks need them archived.
   * Called from polling loops, it switches every few seconds only (each switch is 16 MiB more WAL).
   */
  let lastSwitch = 0;
  const switchBoth = async () => {
    if (Date.now() - lastSwitch < 3000) return;
    lastSwitch = Date.now();
    for (const name of SERVERS) if (clusters[name].isRunning()) await switchWal(clusters[name]);
  };

  beforeAll(async () => {
    const [c15, c17] = await Promise.all([startCluster({ major: 15 }), startCluster({ major: 17 })]);
    clusters.pg15 = c15;
    clusters.pg17 = c17;
    const settings = {
      immediate_checkpoint: 'true',
      slot_name: 'two',
      backup_schedule: '*/15 * * * * *',
      retention_policy: 'REDUNDANCY 1',
      minimum_redundancy: 0,
    };
    // One barman.conf with both sections, and one .pgpass with both passwords.
    server = barkeepServer(c15, settings, 'pg15');
    const other = barkeepServer(c17, settings, 'pg17');
    port = await freePort();
    writeFileSync(server.conf, `${readFileSync(server.conf, 'utf8').replace('[barman]\n', `[barman]\nhttp_listen = 127.0.0.1:${port}\n`)}\n[pg17]\n${serverSection(readFileSync(other.conf, 'utf8'), 'pg17')}`);
    appendFileSync(server.env.PGPASSFILE!, readFileSync(other.env.PGPASSFILE!, 'utf8'));
  });

  afterAll(async () => {
    if (daemon && daemon.child.exitCode === null && daemon.child.pid) signalAll([daemon.child.pid, ...descendants(daemon.child.pid)], 'SIGKILL');
    await Promise.all(Object.values(clusters).map((c) => c.destroy()));
  });

  it('streams, backs up, enforces retention, reports each step, isolates a failing server and stops only a removed one', { timeout: 300_000 }, async () => {
    for (const name of SERVERS) expect(await slot(name)).toBeUndefined();
    daemon = startDaemon(server.conf, server.env, { everyMs: 1000 });
    const d = daemon;
    await waitFor('the daemon to start', () => d.output().includes('barkeep daemon running'), 20_000);

    step('slots and streaming');
    for (const name of SERVERS) {
      await waitFor(`${name}: slot created and active`, async () => (await slot(name))?.active === true, 30_000);
      await waitFor(`${name}: streaming`, async () => metric(await metrics(), 'barkeep_receiver_up', { server: name }) === 1, 30_000);
    }

    step('a scheduled backup of each');
    const first = {} as Record<Name, CatalogBackup>;
    await waitFor(
      'a DONE backup of each server',
      async () => {
        await switchBoth();
        for (const name of SERVERS) {
          const b = (await done(name))[0];
          if (!b) return false;
          first[name] = b;
        }
        return true;
      },
      90_000,
    );
    for (const name of SERVERS) {
      expect(first[name].info.version).toBeGreaterThanOrEqual(name === 'pg15' ? 150000 : 170000);
      expect(first[name].info.version).toBeLessThan(name === 'pg15' ? 160000 : 180000);
    }
    await waitFor(
      '/metrics to show the backups',
      async () => {
        const m = await metrics();
        return SERVERS.every((name) => (metric(m, 'barkeep_backups', { server: name, status: 'DONE' }) ?? 0) >= 1);
      },
      10_000,
    );

    step('retention');
    // REDUNDANCY 1: once a newer backup is DONE, the first is OBSOLETE and goes, with the WAL only it needed.
    await waitFor(
      'the first backups deleted by retention',
      async () => {
        await switchBoth();
        for (const name of SERVERS) if ((await backups(name)).some((b) => b.backupId === first[name].backupId)) return false;
        return true;
      },
      120_000,
    );
    for (const name of SERVERS) {
      // Both servers' backups start on the same second: their IDs may be the same.
      const deletion = logEntries(server.conf).find((e) => e['server'] === name && typeof e['msg'] === 'string' && (e['msg'] as string).startsWith(`retention: deleted backup ${first[name].backupId}`));
      expect(deletion, name).toMatchObject({ server: name, reason: 'OBSOLETE under REDUNDANCY 1' });
      expect(deletion!['walFilesRemoved'], name).toBeGreaterThan(0);
      const oldest = (await backups(name)).find((b) => b.info.status === 'DONE')!;
      expect(oldest.backupId > first[name].backupId).toBe(true);
      // Nothing before the oldest remaining backup's first segment is left, in xlog.db or on disk.
      const segments = xlogDbNames(config(name)).filter((n) => /^[0-9A-F]{24}$/.test(n));
      expect(segments.filter((n) => n < oldest.info.begin_wal!), name).toEqual([]);
      expect(existsSync(walPath(config(name).paths, first[name].info.begin_wal!)), name).toBe(false);
    }
    // /metrics says the same as the catalog: one DONE backup per server, and when the newest ended.
    await waitFor(
      '/metrics to follow retention',
      async () => {
        const m = await metrics();
        for (const name of SERVERS) {
          const catalog = await done(name);
          const newest = catalog.at(-1);
          if (!newest || metric(m, 'barkeep_backups', { server: name, status: 'DONE' }) !== catalog.length || catalog.length !== 1) return false;
          if (metric(m, 'barkeep_last_backup_timestamp_seconds', { server: name }) !== parseBackupTime(newest.info.end_time!)!.getTime() / 1000) return false;
        }
        return true;
      },
      60_000,
    );
    await waitFor('healthy', async () => (await health(port)).status === 200, 60_000);

    step('PostgreSQL 17 down');
    await clusters.pg17.stop('immediate');
    await waitFor(
      '/health to name pg17, and only pg17',
      async () => {
        const h = await health(port);
        return h.status === 503 && h.doc.servers.pg17?.failed.some((c) => c.name === 'PostgreSQL') === true && h.doc.servers.pg15?.ok === true;
      },
      60_000,
    );
    const failed = metric(await metrics(), 'barkeep_check_failed', { server: 'pg17', check: 'PostgreSQL' });
    expect(failed).toBe(1);
    // pg15 keeps streaming meanwhile.
    const before = metric(await metrics(), 'barkeep_receiver_received_lsn', { server: 'pg15' })!;
    expect(before).toBeGreaterThan(0);
    await switchWal(clusters.pg15);
    await waitFor('pg15 to receive more WAL', async () => metric(await metrics(), 'barkeep_receiver_received_lsn', { server: 'pg15' })! > before, 30_000);
    expect((await slot('pg15'))?.active).toBe(true);

    step('PostgreSQL 17 back');
    await clusters.pg17.start();
    await waitFor(
      'healthy again',
      async () => {
        await switchBoth();
        return (await health(port)).status === 200;
      },
      120_000,
    );
    expect(metric(await metrics(), 'barkeep_check_failed', { server: 'pg17', check: 'PostgreSQL' })).toBe(0);
    await waitFor('pg17 streaming again', async () => (await slot('pg17'))?.active === true, 30_000);

    step('SIGHUP removing pg17');
    const walsender15 = (await slot('pg15'))!.active_pid;
    const conf = readFileSync(server.conf, 'utf8');
    writeFileSync(server.conf, conf.slice(0, conf.indexOf('\n[pg17]\n') + 1));
    d.child.kill('SIGHUP');
    await waitFor('the reload', () => logEntries(server.conf).some((e) => e['msg'] === 'configuration reloaded'), 20_000);
    expect(logEntries(server.conf).find((e) => e['msg'] === 'configuration reloaded')).toMatchObject({ removed: ['pg17'], kept: ['pg15'], added: [], restarted: [] });
    // pg17's receiver is gone; pg15's is the very same walsender connection as before.
    await waitFor('pg17 slot inactive', async () => (await slot('pg17'))?.active === false, 20_000);
    expect((await slot('pg15'))!.active_pid).toBe(walsender15);
    // /metrics forgets pg17 (a scrape may reuse the snapshot of the previous second).
    await waitFor('pg17 gone from /metrics', async () => !(await metrics()).includes('server="pg17"'), 5000);
    expect(metric(await metrics(), 'barkeep_receiver_up', { server: 'pg15' })).toBe(1);

    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  });
});
