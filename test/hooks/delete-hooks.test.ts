import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { listBackups } from '../../src/catalog/catalog.ts';
import { deleteAnnotationPath, metaBackupInfoPath, walPath } from '../../src/catalog/layout.ts';
import { addBackup, addWals, backupInfo, makeCatalog, seg, walFilesOnDisk, xlogDbNames } from '../backup/catalog-support.ts';
import { makeTempDir } from '../support/tmp.ts';
import { envFile, recorder } from './hook-support.ts';

// `barkeep delete` on crafted catalogs with hook scripts: the delete hooks around
// the backup, the WAL-delete hooks around each WAL file removed, with Barman's
// variables, and what ABORT_STOP from either pre retry script leaves behind.

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => seg(from + i));



/** Two DONE backups: A (segments 2-3), B (10-11); WAL 1..12. */
async function twoBackups(settings: Record<string, string>) {
  const cat = await makeCatalog(settings);
  await addBackup(cat.server, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(3) }));
  await addBackup(cat.server, '20240103T000000', backupInfo({ begin_wal: seg(10), end_wal: seg(11) }));
  addWals(cat.server, range(1, 12));
  return cat;
}

describe('delete hooks', () => {
  it('run around the deletion with the backup variables, and the WAL-delete hooks around each WAL removed', async () => {
    const dir = makeTempDir('delete-hooks');
    const ok = recorder(dir);
    const cat = await twoBackups({
      pre_delete_script: ok,
      pre_delete_retry_script: ok,
      post_delete_retry_script: ok,
      post_delete_script: ok,
      pre_wal_delete_script: ok,
      post_wal_delete_retry_script: ok,
    });
    const { server } = cat;
    const r = await cat.run(['delete', 'pg', '20240101T000000']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(xlogDbNames(server)).toEqual(range(10, 12));

    const order = readFileSync(join(dir, 'order'), 'utf8').split('\n').filter((l) => l !== '');
    expect(order.slice(0, 2)).toEqual(['pre delete_script', 'pre delete_retry_script']);
    expect(order.slice(2, -2)).toEqual(range(1, 9).flatMap((s) => [`pre wal_delete_script ${s}`, `post wal_delete_retry_script ${s}`]));
    expect(order.slice(-2)).toEqual(['post delete_retry_script', 'post delete_script']);

    const backupVars = {
      BARMAN_BACKUP_DIR: join(server.paths.basebackupsDirectory, '20240101T000000'),
      BARMAN_BACKUP_ID: '20240101T000000',
      BARMAN_PREVIOUS_ID: '',
      BARMAN_NEXT_ID: '20240103T000000',
      BARMAN_STATUS: 'DONE',
      BARMAN_ERROR: '',
      BARMAN_SERVER: 'pg',
      BARMAN_CONFIGURATION: cat.conf,
      BARMAN_VERSION: '3.17.0',
    };
    expect(envFile(dir, 'pre-delete_script')).toEqual({
      ...backupVars,
      BARMAN_BACKUP_INFO_PATH: metaBackupInfoPath(server.paths, '20240101T000000'),
      BARMAN_HOOK: 'delete_script',
      BARMAN_PHASE: 'pre',
      BARMAN_RETRY: '0',
    });
    expect(envFile(dir, 'post-delete_retry_script')).toMatchObject({ ...backupVars, BARMAN_HOOK: 'delete_retry_script', BARMAN_PHASE: 'post', BARMAN_RETRY: '1' });

    expect(envFile(dir, `pre-wal_delete_script-${seg(4)}`)).toEqual({
      BARMAN_SEGMENT: seg(4),
      BARMAN_FILE: walPath(server.paths, seg(4)),
      BARMAN_SIZE: '16384',
      // addWals: time 1700000000 + 60 s per file, in the order given.
      BARMAN_TIMESTAMP: '1700000180.0',
      BARMAN_COMPRESSION: 'gzip',
      BARMAN_ERROR: '',
      BARMAN_HOOK: 'wal_delete_script',
      BARMAN_PHASE: 'pre',
      BARMAN_RETRY: '0',
      BARMAN_SERVER: 'pg',
      BARMAN_CONFIGURATION: cat.conf,
      BARMAN_VERSION: '3.17.0',
    });
    // Nothing of the scripts reaches the console.
    expect(r.stdout + r.stderr).not.toMatch(/BARMAN_/);
  });

  it('ABORT_STOP from pre_delete_retry_script keeps the backup, its WAL, and leaves no delete annotation', async () => {
    const dir = makeTempDir('delete-hooks');
    const stop = recorder(dir, 63);
    const cat = await twoBackups({ pre_delete_retry_script: stop, post_delete_script: recorder(dir) });
    const { server } = cat;
    const r = await cat.run(['delete', 'pg', '20240101T000000']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`ERROR: Abort 'pre_delete_retry_script' retry hook script (${stop}, exit code: 63): backup 20240101T000000 of server pg was not deleted`);
    expect((await listBackups(server.paths)).backups.map((b) => b.backupId)).toEqual(['20240101T000000', '20240103T000000']);
    expect(existsSync(deleteAnnotationPath(server.paths, '20240101T000000'))).toBe(false);
    expect(xlogDbNames(server)).toEqual(range(1, 12));
    // No post hook for a deletion that did not happen.
    expect(readdirSync(dir).filter((f) => f.startsWith('post-'))).toEqual([]);
  });

  it('ABORT_STOP from pre_wal_delete_retry_script stops the WAL cleanup there: the rest stays, on disk and in xlog.db', async () => {
    const dir = makeTempDir('delete-hooks');
    const stop = recorder(dir, 63, seg(5));
    const cat = await twoBackups({ pre_wal_delete_retry_script: stop });
    const { server } = cat;
    const r = await cat.run(['delete', 'pg', '20240101T000000']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stderr).toContain(`WARNING: Abort 'pre_wal_delete_retry_script' retry hook script (${stop}, exit code: 63): the WAL files not removed yet are kept`);
    expect((await listBackups(server.paths)).backups.map((b) => b.backupId)).toEqual(['20240103T000000']);
    expect(xlogDbNames(server)).toEqual(range(5, 12));
    expect(walFilesOnDisk(server)).toEqual(range(5, 12));
  });
  it("run when retention deletes a backup in `barkeep cron`'s maintenance pass", async () => {
    const dir = makeTempDir('cron-delete-hooks');
    const ok = recorder(dir);
    const cat = await twoBackups({ retention_policy: 'REDUNDANCY 1', pre_delete_script: ok, post_delete_script: ok, post_wal_delete_script: ok });
    const r = await cat.run(['cron']);
    expect(r.stdout + r.stderr).toContain('Enforcing retention policy: removing backup 20240101T000000 for server pg');
    expect((await listBackups(cat.server.paths)).backups.map((b) => b.backupId)).toEqual(['20240103T000000']);
    const order = readFileSync(join(dir, 'order'), 'utf8').split('\n').filter((l) => l !== '');
    expect(order[0]).toBe('pre delete_script');
    expect(order.at(-1)).toBe('post delete_script');
    expect(order).toContain(`post wal_delete_script ${seg(1)}`);
    expect(envFile(dir, 'post-delete_script')).toMatchObject({ BARMAN_BACKUP_ID: '20240101T000000', BARMAN_PHASE: 'post' });
  });
});
