import { appendFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { barkeepServer, waitFor, type BarkeepServer, type ReceiverProcess } from '../support/barkeep-server.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { makeTempDir } from '../support/tmp.ts';
import { envFile, recorder } from './hook-support.ts';

// Hook scripts against a real PostgreSQL 15 through the barkeep CLI, as a user
// configures them: backup hooks seeing EMPTY then DONE, archive hooks per WAL,
// a pre_backup_retry_script's ABORT_STOP failing the backup before any copy,
// delete hooks, and recovery hooks around a local restore.



describe('hook scripts with PostgreSQL 15', () => {
  let cluster: PgCluster;
  let server: BarkeepServer;
  let receiver: ReceiverProcess;
  const dir = makeTempDir('hooks-env');
  let firstId = '';

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    const ok = recorder(dir);
    server = barkeepServer(cluster, {
      immediate_checkpoint: 'true',
      compression: 'gzip',
      pre_backup_script: ok,
      post_backup_script: ok,
      pre_archive_script: ok,
      post_archive_retry_script: ok,
      pre_delete_script: ok,
      post_delete_script: ok,
      pre_recovery_script: ok,
      post_recovery_retry_script: ok,
    });
    receiver = server.startReceiver();
    await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
  });
  afterAll(async () => {
    await receiver?.stop();
    await cluster?.destroy();
  });

  const paths = () => ({ base: join(server.home, 'pg', 'base'), meta: join(server.home, 'pg', 'meta'), wals: join(server.home, 'pg', 'wals') });

  it('backup --wait: pre hooks see the EMPTY backup, post hooks the DONE one; every archived WAL had its archive hooks', async () => {
    const r = await server.run(['backup', '--wait', 'pg']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    firstId = readdirSync(paths().base).sort().at(-1)!;
    const backupVars = {
      BARMAN_BACKUP_DIR: join(paths().base, firstId),
      BARMAN_BACKUP_INFO_PATH: join(paths().meta, `${firstId}-backup.info`),
      BARMAN_BACKUP_ID: firstId,
      BARMAN_PREVIOUS_ID: '',
      BARMAN_NEXT_ID: '',
      BARMAN_ERROR: '',
      BARMAN_SERVER: 'pg',
      BARMAN_CONFIGURATION: server.conf,
      BARMAN_VERSION: '3.17.0',
      BARMAN_RETRY: '0',
      BARMAN_HOOK: 'backup_script',
    };
    expect(envFile(dir, 'pre-backup_script')).toEqual({ ...backupVars, BARMAN_PHASE: 'pre', BARMAN_STATUS: 'EMPTY' });
    expect(envFile(dir, 'post-backup_script')).toEqual({ ...backupVars, BARMAN_PHASE: 'post', BARMAN_STATUS: 'DONE' });
    // Script output goes to the log, not to the console.
    expect(r.stdout + r.stderr).not.toContain('output of');
    expect(readFileSync(join(server.home, '..', 'barkeep.log'), 'utf8')).toContain('output of pre backup_script');

    const xlogDb = readFileSync(join(paths().wals, 'pg-xlog.db'), 'utf8');
    const archived = xlogDb
      .split('\n')
      .filter((l) => /^[0-9A-F]{24}\t/.test(l))
      .map((l) => l.split('\t'));
    expect(archived.length).toBeGreaterThan(0);
    for (const [name, size, time, compression] of archived) {
      const pre = envFile(dir, `pre-archive_script-${name}`);
      expect(pre).toMatchObject({ BARMAN_SEGMENT: name, BARMAN_FILE: join(server.streamingDir, name!), BARMAN_SIZE: String(16 * 1024 * 1024), BARMAN_COMPRESSION: '', BARMAN_ERROR: '', BARMAN_RETRY: '0' });
      const post = envFile(dir, `post-archive_retry_script-${name}`);
      expect(post).toEqual({
        BARMAN_SEGMENT: name,
        BARMAN_FILE: join(paths().wals, name!.slice(0, 16), name!),
        BARMAN_SIZE: size,
        BARMAN_TIMESTAMP: time,
        BARMAN_COMPRESSION: compression,
        BARMAN_ERROR: '',
        BARMAN_HOOK: 'archive_retry_script',
        BARMAN_PHASE: 'post',
        BARMAN_RETRY: '1',
        BARMAN_SERVER: 'pg',
        BARMAN_CONFIGURATION: server.conf,
        BARMAN_VERSION: '3.17.0',
      });
      expect(compression).toBe('gzip');
    }
  });

  it('pre_backup_retry_script exiting 63 fails the backup before any copy, and the post hook sees FAILED; delete hooks run on delete', async () => {
    const stop = recorder(dir, 63);
    const conf = readFileSync(server.conf, 'utf8');
    appendFileSync(server.conf, `pre_backup_retry_script = ${stop}\n`);
    let r;
    try {
      r = await server.run(['backup', 'pg']);
    } finally {
      writeFileSync(server.conf, conf);
    }
    expect(r.code).toBe(1);
    const message = `Abort 'pre_backup_retry_script' retry hook script (${stop}, exit code: 63)`;
    expect(r.stderr).toContain(`Backup failed starting backup: ${message}`);
    const failedId = readdirSync(paths().base).sort().at(-1)!;
    expect(failedId).not.toBe(firstId);
    // Nothing was copied: the backup directory is empty.
    expect(readdirSync(join(paths().base, failedId))).toEqual([]);
    const list = await server.run(['list-backup', 'pg']);
    expect(list.stdout).toMatch(new RegExp(`^pg ${failedId}.* - FAILED$`, 'm'));
    expect(envFile(dir, 'pre-backup_retry_script')).toMatchObject({ BARMAN_BACKUP_ID: failedId, BARMAN_STATUS: 'EMPTY', BARMAN_PREVIOUS_ID: firstId });
    expect(envFile(dir, 'post-backup_script')).toMatchObject({ BARMAN_BACKUP_ID: failedId, BARMAN_STATUS: 'FAILED', BARMAN_ERROR: `failure starting backup (${message})` });

    const d = await server.run(['delete', 'pg', failedId]);
    expect(d.code, d.stdout + d.stderr).toBe(0);
    expect(existsSync(join(paths().base, failedId))).toBe(false);
    for (const phase of ['pre', 'post']) {
      expect(envFile(dir, `${phase}-delete_script`)).toMatchObject({
        BARMAN_PHASE: phase,
        BARMAN_BACKUP_ID: failedId,
        BARMAN_STATUS: 'FAILED',
        BARMAN_PREVIOUS_ID: firstId,
        BARMAN_NEXT_ID: '',
        BARMAN_BACKUP_INFO_PATH: join(paths().meta, `${failedId}-backup.info`),
      });
    }
  });

  it('recovery hooks run around a local recover, with the destination and the options given', async () => {
    const dest = join(makeTempDir('hooks-recover'), 'pgdata');
    const r = await server.run(['recover', '--target-immediate', 'pg', firstId, dest]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(existsSync(join(dest, 'PG_VERSION'))).toBe(true);
    const expected = {
      BARMAN_BACKUP_ID: firstId,
      BARMAN_STATUS: 'DONE',
      BARMAN_DESTINATION_DIRECTORY: dest,
      BARMAN_TABLESPACES: '',
      BARMAN_REMOTE_COMMAND: '',
      BARMAN_RECOVER_OPTIONS: '{"target_immediate": true}',
      BARMAN_ERROR: '',
    };
    expect(envFile(dir, 'pre-recovery_script')).toMatchObject({ ...expected, BARMAN_RETRY: '0' });
    expect(envFile(dir, 'post-recovery_retry_script')).toMatchObject({ ...expected, BARMAN_RETRY: '1' });
  });
});
