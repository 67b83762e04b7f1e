// The daemon's cloud tier (cloud_destination) against a real PostgreSQL 15 and
// a real S3-compatible server: streamed WAL and DONE backups land in the
// bucket in barman-cloud's layout, cloud_retention_policy is applied there,
// `check`, `status` and /metrics tell how far behind the bucket is (and say so
// by name when the store is down), and what is in the bucket restores with
// barkeep-cloud-restore and barkeep-cloud-wal-restore alone.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { giveToPostgres, startRestored } from '../recovery/restored-server.ts';
import { barkeepServer, switchWal, waitFor, type BarkeepServer } from '../support/barkeep-server.ts';
import { freePort } from '../support/free-port.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { type S3Server, startS3Server } from '../support/s3-server.ts';
import { makeTempDir } from '../support/tmp.ts';
import { runCloudBin, walCommands } from '../cloud/backup-restore-support.ts';
import { get, metric, startDaemon, step, type Daemon } from './daemon-support.ts';

const NAME = 'pg';

describe('barkeep daemon with cloud_destination', () => {
  let s3: S3Server;
  let cluster: PgCluster;
  let server: BarkeepServer;
  let daemon: Daemon | undefined;
  let port = 0;
  let url = '';
  let env: NodeJS.ProcessEnv;

  const metrics = async () => (await get(port, '/metrics')).body;
  const cloudList = async (): Promise<{ backup_id: string; status: string }[]> => {
    const r = await runCloudBin('backupList', ['--endpoint-url', s3.endpoint, '--format', 'json', url, NAME], s3);
    if (r.code !== 0) return [];
    return (JSON.parse(r.stdout) as { backups_list: { backup_id: string; status: string }[] }).backups_list;
  };
  const bucketWal = (): string[] => {
    const out: string[] = [];
    const root = join(s3.dataDir, s3.bucket, 'tier', NAME, 'wals');
    try {
      for (const dir of readdirSync(root)) {
        for (const f of readdirSync(join(root, dir))) out.push(f.replace(/\._S3rver_object$/, ''));
      }
    } catch {
      return [];
    }
    return out.sort();
  };

  beforeAll(async () => {
    s3 = await startS3Server({ name: 'daemon-cloud' });
    cluster = await startCluster({ major: 15 });
    await cluster.superuserQuery('CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)');
    url = `s3://${s3.bucket}/tier`;
    server = barkeepServer(cluster, {
      immediate_checkpoint: 'true',
      cloud_destination: url,
      cloud_endpoint_url: s3.endpoint,
      cloud_compression: 'gzip',
      cloud_retention_policy: 'REDUNDANCY 1',
      cloud_archive_max_lag: '5 seconds',
    });
    port = await freePort();
    writeFileSync(server.conf, readFileSync(server.conf, 'utf8').replace('[barman]\n', `[barman]\nhttp_listen = 127.0.0.1:${port}\n`));
    env = { ...server.env, ...s3.env };
    daemon = startDaemon(server.conf, env, { everyMs: 1000 });
    await waitFor('the daemon to start', () => daemon!.output().includes('barkeep daemon running'), 20_000);
    await waitFor('streaming', async () => metric(await metrics(), 'barkeep_receiver_up', { server: NAME }) === 1, 30_000);
  });

  afterAll(async () => {
    if (daemon && daemon.child.exitCode === null) {
      daemon.child.kill('SIGTERM');
      await daemon.exited;
    }
    await cluster?.destroy();
    await s3?.stop();
  });

  const run = (args: string[]) => server.run(args);

  it('copies streamed WAL and DONE backups to the bucket; retention there keeps one backup', async () => {
    step('first backup');
    const b1 = await run(['backup', '--wait', NAME]);
    expect(b1.code, b1.stderr).toBe(0);
    await cluster.superuserQuery('INSERT INTO t SELECT generate_series(1001, 2000)');
    await switchWal(cluster);
    await waitFor('the first backup in the bucket', async () => (await cloudList()).some((b) => b.status === 'DONE'), 60_000);
    const first = (await cloudList())[0]!.backup_id;

    step('second backup');
    const b2 = await run(['backup', '--wait', NAME]);
    expect(b2.code, b2.stderr).toBe(0);
    await cluster.superuserQuery('INSERT INTO t SELECT generate_series(2001, 3000)');
    await switchWal(cluster);
    // REDUNDANCY 1 in the bucket: the first goes once the second is there.
    await waitFor(
      'the second backup in the bucket and the first deleted there',
      async () => {
        const list = await cloudList();
        return list.length === 1 && list[0]!.backup_id !== first && list[0]!.status === 'DONE';
      },
      90_000,
    );
    // Every WAL the local archive has from the bucket's backup on is in the bucket, gzip-compressed.
    const last = (await switchWal(cluster)).slice(0, 24);
    await waitFor('the switched WAL in the bucket', () => bucketWal().some((f) => f.startsWith(last)), 30_000);
    expect(bucketWal().filter((f) => /^[0-9A-F]{24}$/.test(f.slice(0, 24)) && !f.includes('.')).length).toBe(0);
    expect(bucketWal().some((f) => f.endsWith('.gz'))).toBe(true);

    const check = await run(['check', NAME]);
    expect(check.stdout).toMatch(/\tcloud archive lag: OK/);
    const status = await run(['status', NAME]);
    expect(status.stdout).toContain(`Cloud destination: ${url}`);
    expect(status.stdout).toMatch(/Cloud backups: 1 \(newest: \d{8}T\d{6}\)/);
    expect(status.stdout).toMatch(/Cloud retention policy: REDUNDANCY 1, last applied .* \(deleted \d{8}T\d{6}\)/);
    const body = await metrics();
    expect(metric(body, 'barkeep_cloud_backups', { server: NAME })).toBe(1);
    expect(metric(body, 'barkeep_cloud_wal_failing', { server: NAME })).toBe(0);
    expect(metric(body, 'barkeep_cloud_wal_copied_total', { server: NAME })).toBeGreaterThan(2);
  });

  it('restores from the bucket alone: every row written before the last switch', async () => {
    await cluster.superuserQuery("SELECT pg_create_restore_point('cloud_tier_test')");
    await switchWal(cluster);
    const switched = (await switchWal(cluster)).slice(0, 24);
    await waitFor('the switched WAL in the bucket', () => bucketWal().some((f) => f.startsWith(switched)), 30_000);
    const dest = join(makeTempDir('daemon-cloud-restore'), 'pgdata');
    const r = await runCloudBin(
      'restore',
      ['--endpoint-url', s3.endpoint, '--recovery-target-name', 'cloud_tier_test', '--recovery-target-action', 'promote', '--restore-command', walCommands(s3, url, NAME).restore, url, NAME, 'latest', dest],
      s3,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    giveToPostgres(dest);
    const srv = await startRestored(dest, cluster.binDir);
    try {
      await srv.waitPromoted(90_000);
      expect(await srv.query('SELECT count(*)::int AS c FROM t')).toEqual([{ c: 3000 }]);
    } finally {
      srv.stop();
    }
  });

  it('says by name when the store is down, and catches up when it is back', async () => {
    await s3.stop();
    await cluster.superuserQuery('INSERT INTO t SELECT generate_series(3001, 4000)');
    await switchWal(cluster);
    await waitFor('a pending WAL in /metrics', async () => (metric(await metrics(), 'barkeep_cloud_wal_pending', { server: NAME }) ?? 0) > 0, 30_000);
    await waitFor('the copy failing in /metrics', async () => metric(await metrics(), 'barkeep_cloud_wal_failing', { server: NAME }) === 1, 30_000);
    // cloud_archive_max_lag is 5 seconds here.
    await new Promise((r) => setTimeout(r, 6000));
    const check = await run(['check', NAME]);
    expect(check.code).toBe(1);
    expect(check.stdout).toMatch(new RegExp(`\\tcloud archive lag: FAILED \\(\\d+ WAL files? not in ${url.replace(/[/.]/g, '\\$&')}, the oldest archived \\d+ seconds? ago`));
    const status = await run(['status', NAME]);
    expect(status.stdout).toMatch(/Cloud WAL: \d+ waiting.*last error: /);

    await s3.restart();
    await waitFor('the bucket caught up', async () => metric(await metrics(), 'barkeep_cloud_wal_pending', { server: NAME }) === 0, 60_000);
    expect(metric(await metrics(), 'barkeep_cloud_wal_failing', { server: NAME })).toBe(0);
    const again = await run(['check', NAME]);
    expect(again.stdout).toMatch(/\tcloud archive lag: OK/);
  });
});
