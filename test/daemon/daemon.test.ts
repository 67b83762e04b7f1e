import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barkeepServer, switchWal, waitFor, type BarkeepServer } from '../support/barkeep-server.ts';
import { freePort } from '../support/free-port.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { makeTempDir } from '../support/tmp.ts';
import { giveToPostgres, startRestored, type RestoredServer } from '../recovery/restored-server.ts';
import { get, logFile as confLogFile, serverSection, startDaemon as startWith, step, type Daemon } from './daemon-support.ts';

// `barkeep daemon` as a user runs it: one process streaming WAL over a slot it
// creates, a backup from backup_schedule, the minute maintenance pass (here
// every 2 s), /health and /metrics, SIGHUP reloads, and a clean SIGTERM.

function startDaemon(server: BarkeepServer): Daemon {
  return startWith(server.conf, server.env);
}

describe('barkeep daemon (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let server: BarkeepServer;
  let daemon: Daemon | undefined;
  let port = 0;

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    // A backup every 15 seconds: the first one is what the test waits for.
    server = barkeepServer(cluster, { immediate_checkpoint: 'true', backup_schedule: '*/15 * * * * *', slot_name: 'daemon' });
    port = await freePort();
    writeFileSync(server.conf, readFileSync(server.conf, 'utf8').replace('[barman]\n', `[barman]\nhttp_listen = 127.0.0.1:${port}\n`));
  });

  afterAll(async () => {
    if (daemon && daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    await cluster?.destroy();
  });

  it('streams, backs up on schedule, reports health, reloads on SIGHUP and stops on SIGTERM', { timeout: 240_000 }, async () => {
    daemon = startDaemon(server);
    const d = daemon;
    await waitFor('the daemon to start', () => d.output().includes('barkeep daemon running'), 20_000);
    expect(d.output()).toContain(`http://127.0.0.1:${port}/metrics`);

    step('// A second daemon on the same barman_ho');
    // A second daemon on the same barman_home refuses to start.
    const second = startDaemon(server);
    expect(await second.exited).toBe(1);
    expect(second.output()).toMatch(/ERROR: another barkeep daemon \(PID \d+\) is already running for /);

    step('// The slot is created');
    // The slot is created and WAL streams; the maintenance pass archives it.
    await waitFor('streaming', async () => (await server.run(['check', 'pg'])).stdout.includes('receive-wal running: OK'), 30_000);
    // On a fresh barman_home the receiver starts right the first time: no error, no restart.
    expect(readFileSync(logFile(server), 'utf8')).not.toMatch(/"level":50|the WAL receiver stopped/);
    await switchWal(cluster);
    // list-backup shows a status only when it is not DONE.
    await waitFor('a scheduled backup DONE', async () => /^pg \d{8}T\d{6} - \w{3} .* - Size: [^\n]*B\n$/m.test((await server.run(['list-backup', 'pg'])).stdout), 60_000);
    step("await waitFor('healthy', async");
    await waitFor('healthy', async () => (await get(port, '/health')).status === 200, 60_000);
    const metrics = await get(port, '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.body).toMatch(/barkeep_backups\{[^}]*server="pg"[^}]*status="DONE"[^}]*\} [1-9]/);

    step('// PostgreSQL down');
    // PostgreSQL down: /health says which checks fail; back up: healthy again.
    await cluster.stop('fast');
    await waitFor('unhealthy', async () => (await get(port, '/health')).status === 503, 30_000);
    expect((await get(port, '/health')).body).toContain('PostgreSQL');
    await cluster.start();
    await waitFor('healthy again', async () => (await get(port, '/health')).status === 200, 90_000);

    step('// SIGHUP with an invalid file');
    // SIGHUP with an invalid file: the running configuration stays.
    const good = readFileSync(server.conf, 'utf8');
    writeFileSync(server.conf, `${good}\n[broken\n`);
    d.child.kill('SIGHUP');
    await waitFor('the reload to be refused', () => readFileSync(logFile(server), 'utf8').includes('the new configuration is not used'), 10_000);
    expect((await get(port, '/health')).status).toBe(200);

    step('// SIGHUP adding a server');
    // SIGHUP adding a server: it starts streaming, the first one is left alone.
    writeFileSync(server.conf, `${good}\n[pg2]\n${serverSection(good).replace('slot_name = daemon', 'slot_name = daemon2').replace(/backup_schedule = .*\n/, '')}`);
    d.child.kill('SIGHUP');
    await waitFor('pg2 streaming', async () => (await server.run(['check', 'pg2'])).stdout.includes('receive-wal running: OK'), 30_000);
    expect(readFileSync(logFile(server), 'utf8')).toMatch(/"added":\["pg2"\][^\n]*"kept":\["pg"\]/);

    step('// SIGTERM: a clean stop');
    // SIGTERM: a clean stop, well within 10 s.
    const t0 = Date.now();
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(d.output()).toContain('barkeep daemon stopped');
    expect((await server.run(['check', 'pg'])).stdout).toContain('receive-wal running: FAILED');
  });
});

describe('barkeep daemon after a restore and promotion (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let restored: RestoredServer | undefined;
  let daemon: Daemon | undefined;

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
  });
  afterAll(async () => {
    if (daemon && daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    restored?.stop();
    await cluster?.destroy();
  });

  it('follows the new timeline and takes a fresh backup without any manual step', { timeout: 240_000 }, async () => {
    const server = barkeepServer(cluster, { immediate_checkpoint: 'true', slot_name: 'tl' });
    writeFileSync(server.conf, readFileSync(server.conf, 'utf8').replace('[barman]\n', '[barman]\nhttp_listen =\n'));
    const receiver = server.startReceiver();
    await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
    const b = await server.run(['backup', '--wait', 'pg']);
    expect(b.code, b.stdout + b.stderr).toBe(0);
    await receiver.stop();

    // The database is restored from that backup and promoted (timeline 2); it becomes the server.
    const dir = join(makeTempDir('daemon-restore'), 'pgdata');
    const r = await server.run(['recover', '--target-immediate', '--target-action', 'promote', 'pg', 'latest', dir]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    giveToPostgres(dir);
    restored = await startRestored(dir, cluster.binDir, { tcp: true });
    await restored.waitPromoted();
    await cluster.stop('fast');
    writeFileSync(server.conf, readFileSync(server.conf, 'utf8').replaceAll(`port=${cluster.port}`, `port=${restored.port}`));
    writeFileSync(server.env.PGPASSFILE!, readFileSync(server.env.PGPASSFILE!, 'utf8').replace(`:${cluster.port}:`, `:${restored.port}:`));

    daemon = startDaemon(server);
    const d = daemon;
    await waitFor('the daemon to start', () => d.output().includes('barkeep daemon running'), 20_000);
    await waitFor('a backup on timeline 2', async () => (await server.run(['show-backup', 'pg', 'latest'])).stdout.includes('Timeline             : 2'), 120_000);
    expect(readFileSync(logFile(server), 'utf8')).toContain('WAL streams on a new timeline: taking a fresh base backup');
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  });
});

function logFile(server: BarkeepServer): string {
  return confLogFile(server.conf);
}
