// cloud-backup and cloud-restore on other majors than the main tests' 15: 14
// (BASE_BACKUP's older protocol, tars without end-of-archive blocks) and 17
// (manifest version 2), each with a recovery to the restore point
// cloud-backup creates after the backup.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { giveToPostgres, startRestored } from '../recovery/restored-server.ts';
import type { PgCluster } from '../support/pg-cluster.ts';
import { type S3Server, startS3Server } from '../support/s3-server.ts';
import { makeTempDir } from '../support/tmp.ts';
import { backupIdOf, runCloudBin, startArchivingCluster, switchAndWaitArchived, walCommands } from './backup-restore-support.ts';

const URL = 's3://barkeep-test/prefix/';

for (const major of [14, 17] as const) describe(`PostgreSQL ${major}`, () => {
  const SERVER = `pg${major}`;
  let s3: S3Server;
  let cluster: PgCluster;

  beforeAll(async () => {
    s3 = await startS3Server({ name: `cloud-br${major}` });
    cluster = await startArchivingCluster(s3, URL, SERVER, major);
    await cluster.superuserQuery('CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100000)');
  });
  afterAll(async () => {
    await cluster?.destroy();
    await s3?.stop();
  });

  it('restores to the barman_<id> restore point: the rows written after the backup are not there', async () => {
    const b = await runCloudBin('backup', ['--endpoint-url', s3.endpoint, '-h', cluster.host, '-p', String(cluster.port), '-U', 'barman', '--immediate-checkpoint', '--zstd', URL, SERVER], s3, {
      env: { PGPASSWORD: cluster.barmanPassword },
    });
    expect(b.stderr).toBe('');
    expect(b.code).toBe(0);
    const id = backupIdOf(b);
    await cluster.superuserQuery('INSERT INTO t SELECT generate_series(100001, 100010)');
    await switchAndWaitArchived(cluster);

    const dest = join(makeTempDir(`cloud-restore${major}`), 'pgdata');
    const r = await runCloudBin(
      'restore',
      ['--endpoint-url', s3.endpoint, '--recovery-target-name', `barman_${id}`, '--recovery-target-action', 'promote', '--restore-command', walCommands(s3, URL, SERVER).restore, URL, SERVER, 'latest', dest],
      s3,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/files verified against the backup_manifest/);
    giveToPostgres(dest);
    const srv = await startRestored(dest, cluster.binDir);
    try {
      await srv.waitPromoted(90_000);
      expect(await srv.query('SELECT count(*)::int AS c, max(id) AS m FROM t')).toEqual([{ c: 100000, m: 100000 }]);
    } finally {
      srv.stop();
    }
  });
});
