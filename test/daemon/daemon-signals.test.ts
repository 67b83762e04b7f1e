import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listBackups } from '../../src/catalog/catalog.ts';
import { loadConfigFile, type ServerConfig } from '../../src/config/load.ts';
import { barkeepServer, switchWal, waitFor, type BarkeepServer } from '../support/barkeep-server.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { descendants, signalAll } from '../support/processes.ts';
import { xlogDbNames } from '../backup/catalog-support.ts';
import { segmentRange, setKeys, startDaemon, step, type Daemon } from './daemon-support.ts';

// The daemon stopped the ways it gets stopped in real life: SIGTERM (systemctl
// stop) in the middle of a scheduled backup, with and without --graceful-timeout,
// and SIGKILL (the OOM killer, a power cut of the process) while WAL streams
// under load and a backup runs. Nothing may be lost or reported wrongly: a
// backup that did not finish is FAILED, never DONE; the WAL has no gap.

describe('barkeep daemon stopped during a backup (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let server: BarkeepServer;
  const daemons: Daemon[] = [];
  const config = (): ServerConfig => loadConfigFile(server.conf).servers.get('pg')!;
  const backups = async () => (await listBackups(config().paths)).backups;

  /** A scheduled backup whose copy is under way: STARTED, with data already in its directory. */
  async function backupInFlight(): Promise<string> {
    let id = '';
    await waitFor(
      'a scheduled backup copying',
      async () => {
        const b = (await backups()).find((x) => x.info.status === 'STARTED');
        const data = b ? join(config().paths.basebackupsDirectory, b.backupId, 'data') : '';
        if (!b || !existsSync(data) || readdirSync(data).length === 0) return false;
        id = b.backupId;
        return true;
      },
      30_000,
    );
    return id;
  }

  function start(args: string[] = []): Daemon {
    const d = startDaemon(server.conf, server.env, { args, everyMs: 1000 });
    daemons.push(d);
    return d;
  }

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    server = barkeepServer(cluster, { immediate_checkpoint: 'true', slot_name: 'signals' });
    writeFileSync(server.conf, readFileSync(server.conf, 'utf8').replace('[barman]\n', '[barman]\nhttp_listen =\n'));
  });

  afterAll(async () => {
    for (const d of daemons) if (d.child.exitCode === null && d.child.pid) signalAll([d.child.pid, ...descendants(d.child.pid)], 'SIGKILL');
    await cluster?.destroy();
  });

  it('SIGTERM: the daemon exits within 10 s and the backup it interrupted is FAILED', { timeout: 120_000 }, async () => {
    // 64 kB/s: the copy would take minutes, so it is surely in flight when the signal comes.
    setKeys(server.conf, 'pg', { backup_schedule: '*/2 * * * * *', bandwidth_limit: 64 });
    const d = start();
    await waitFor('the daemon to start', () => d.output().includes('barkeep daemon running'), 20_000);
    const id = await backupInFlight();

    const t0 = Date.now();
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(d.output()).toContain('barkeep daemon stopped');

    // Said by the commands a DBA reads, with nothing else left running.
    expect((await server.run(['list-backup', 'pg'])).stdout).toBe(`pg ${id} - FAILED\n`);
    const shown = await server.run(['show-backup', 'pg', id]);
    const show = shown.stdout;
    expect(shown.code, shown.stderr).toBe(0);
    expect(show).toMatch(/^ {2}Status {17}: FAILED$/m);
    // The backup process records the signal itself before it exits.
    expect(show).toMatch(/^ {2}Error {18}: failure copying the backup \(interrupted \(SIGTERM\)\)$/m);
  });

  it('SIGTERM with --graceful-timeout: a backup that can finish in time finishes', { timeout: 120_000 }, async () => {
    // About 4 s of copy at 8 MB/s: well within the 8 s the daemon may wait.
    setKeys(server.conf, 'pg', { backup_schedule: '*/2 * * * * *', bandwidth_limit: 8000 });
    const d = start(['--graceful-timeout', '8']);
    await waitFor('the daemon to start', () => d.output().includes('barkeep daemon running'), 20_000);
    const id = await backupInFlight();
    const t0 = Date.now();
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
    const b = (await backups()).find((x) => x.backupId === id)!;
    expect(['WAITING_FOR_WALS', 'DONE'], `${b.info.status}: ${b.info.error ?? ''}`).toContain(b.info.status);
  });

  it('SIGKILL under load, then a restart: no WAL lost, the running backup FAILED, streaming resumes', { timeout: 180_000 }, async () => {
    setKeys(server.conf, 'pg', { backup_schedule: null, bandwidth_limit: null });
    let d = start();
    await waitFor('the daemon to start', () => d.output().includes('barkeep daemon running'), 20_000);
    await waitFor('streaming', async () => (await server.run(['check', 'pg'])).stdout.includes('receive-wal running: OK'), 30_000);
    step('first backup');
    const first = await server.run(['backup', '--wait', '--wait-timeout', '60', 'pg']);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    const base = (await backups()).filter((b) => b.info.status === 'DONE').at(-1)!;

    // Load: rows and segment switches, all along, through the kill and the restart.
    let loading = true;
    let killed = '';
    let lastSwitched = '';
    let switches = 0;
    await cluster.superuserQuery('CREATE TABLE IF NOT EXISTS load (id serial, payload text)');
    const load = (async () => {
      while (loading) {
        await cluster.superuserQuery("INSERT INTO load (payload) SELECT repeat(md5(g::text), 20) FROM generate_series(1, 1000) g");
        lastSwitched = await switchWal(cluster);
        switches++;
        await new Promise((r) => setTimeout(r, 1000));
      }
    })();
    try {
      step('a slow scheduled backup');
      setKeys(server.conf, 'pg', { backup_schedule: '*/2 * * * * *', bandwidth_limit: 64 });
      d.child.kill('SIGHUP');
      killed = await backupInFlight();

      step('SIGKILL');
      // The daemon and everything it runs, as a crash of the whole service would.
      signalAll([d.child.pid!, ...descendants(d.child.pid!)], 'SIGKILL');
      await d.exited;
      expect((await backups()).find((b) => b.backupId === killed)!.info.status).toBe('STARTED');
      // WAL keeps coming while nothing receives it (the slot holds it back).
      const atKill = switches;
      await waitFor('more WAL while the daemon is down', () => switches >= atKill + 3, 30_000);

      step('restart');
      setKeys(server.conf, 'pg', { backup_schedule: null, bandwidth_limit: null });
      d = start();
      // Its stale locks (daemon, receiver, backup, maintenance) are taken over without a manual step.
      await waitFor('the daemon to restart', () => d.output().includes('barkeep daemon running'), 20_000);
      await waitFor('streaming again', async () => (await server.run(['check', 'pg'])).stdout.includes('receive-wal running: OK'), 60_000);
      await waitFor('the interrupted backup FAILED', async () => (await backups()).find((b) => b.backupId === killed)?.info.status === 'FAILED', 30_000);
    } finally {
      loading = false;
      await load;
    }

    // Every segment from the first backup's begin_wal to the last one switched is archived: no gap.
    const last = lastSwitched;
    await waitFor(`${last} archived`, () => xlogDbNames(config()).includes(last), 60_000);
    const archived = new Set(xlogDbNames(config()));
    const expected = segmentRange(base.info.begin_wal!, last);
    step(`checking ${expected.length} segments, ${expected[0]} to ${last}`);
    expect(expected.length).toBeGreaterThan(5);
    expect(expected.filter((s) => !archived.has(s))).toEqual([]);

    // No backup is wrongly DONE: after the first one there is only the killed one, FAILED.
    const after = (await backups()).filter((b) => b.backupId > base.backupId);
    expect(after.map((b) => [b.backupId, b.info.status, b.info.error])).toEqual([[killed, 'FAILED', 'failure: interrupted, the backup process is gone (killed or crashed)']]);
    expect((await server.run(['list-backup', 'pg'])).stdout).toMatch(new RegExp(`^pg ${killed} - FAILED$`, 'm'));

    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  });
});
