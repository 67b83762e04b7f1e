// shipLocalBackup: DONE backups of a barkeep catalog (taken with `barkeep
// backup --wait` from a real PostgreSQL 15 with a user tablespace) copied into
// s3rver in barman-cloud's layout, then listed and restored by the built
// barkeep-cloud-* binaries and by barman-cloud-restore, checked with
// pg_verifybackup, and one restore started with the catalog's WAL.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatBackupInfo, newBackupInfo } from '../../src/catalog/backup-info.ts';
import { loadBackup, removeKeepAnnotation, writeKeepAnnotation, type CatalogBackup } from '../../src/catalog/catalog.ts';
import type { ServerPaths } from '../../src/catalog/layout.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { loadEncryptionKey, type EncryptionKey } from '../../src/storage/encryption.ts';
import type { ObjectStore } from '../../src/storage/object-store.ts';
import { openS3Store } from '../../src/storage/s3-store.ts';
import { shipLocalBackup, ShipBackupError, type ShipBackupResult, type ShipBackupSettings } from '../../src/cloud/ship-backup.ts';
import { giveToPostgres, startRestored } from '../recovery/restored-server.ts';
import { barkeepServer, waitFor, type BarkeepServer } from '../support/barkeep-server.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startS3FaultProxy } from '../support/s3-fault-proxy.ts';
import { S3RVER_CREDENTIALS, startS3Server, type S3Server } from '../support/s3-server.ts';
import { createTablespace } from '../support/tablespace.ts';
import { makeTempDir } from '../support/tmp.ts';
import { objectFile, pgbench, runCloudBin, runProgram } from './backup-restore-support.ts';
import { barkeepCloud, barmanCloud, keysUnder } from './catalog-support.ts';

const URL = 's3://barkeep-test/';
const PG15_BIN = '/usr/lib/postgresql/15/bin';
const BARMAN_RESTORE = '/usr/bin/barman-cloud-restore';

interface LocalBackup {
  server: BarkeepServer;
  paths: ServerPaths;
  backup: CatalogBackup;
}

let s3: S3Server;
let cluster: PgCluster;
let store: ObjectStore;
let plain: LocalBackup;
let tar: LocalBackup;
let tsOid: number;
let tsLocation: string;
let keyFile: string;
let key: EncryptionKey;

/** A DONE local backup taken by `barkeep backup --wait` with the receiver streaming. */
async function localBackup(slot: string, extra: Record<string, string>): Promise<LocalBackup> {
  const server = barkeepServer(cluster, { immediate_checkpoint: 'true', slot_name: slot, ...extra });
  const receiver = server.startReceiver();
  try {
    await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
    const r = await server.run(['backup', '--wait', '--wait-timeout', '60', 'pg']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  } finally {
    await receiver.stop();
  }
  const paths = loadConfigFile(server.conf).servers.get('pg')!.paths;
  const id = readdirSync(paths.basebackupsDirectory).sort().at(-1)!;
  const backup = (await loadBackup(paths, id))!;
  expect(backup.info.status).toBe('DONE');
  return { server, paths, backup };
}

beforeAll(async () => {
  s3 = await startS3Server({ name: 'cloud-ship' });
  cluster = await startCluster({ major: 15, name: 'cloud-ship', settings: { wal_keep_size: '256MB' } });
  tsLocation = await createTablespace(cluster, 'ts1');
  await cluster.superuserQuery('CREATE TABLE in_ts1 (x int) TABLESPACE ts1; INSERT INTO in_ts1 SELECT generate_series(1, 5000)');
  pgbench(cluster, ['-i', '-s', '3']);
  const [ts] = await cluster.superuserQuery<{ oid: number }>("SELECT oid::int AS oid FROM pg_tablespace WHERE spcname = 'ts1'");
  tsOid = ts!.oid;
  plain = await localBackup('ship_plain', {});
  tar = await localBackup('ship_tar', { backup_compression: 'zstd', backup_compression_format: 'tar' });
  expect(readdirSync(join(tar.paths.basebackupsDirectory, tar.backup.backupId, 'data')).sort()).toEqual([`${tsOid}.tar.zst`, 'backup_manifest', 'base.tar.zst']);
  store = await openS3Store(URL, { endpointUrl: s3.endpoint, credentials: S3RVER_CREDENTIALS });
  keyFile = join(makeTempDir('ship-key'), 'key');
  writeFileSync(keyFile, Buffer.alloc(32, 9), { mode: 0o600 });
  key = await loadEncryptionKey(keyFile);
}, 300_000);

afterAll(async () => {
  store?.close();
  await cluster?.destroy();
  await s3?.stop();
});

const loc = (server: string) => ({ bucket: '', prefix: '', server });
const common = () => ['--endpoint-url', s3.endpoint];

async function ship(b: LocalBackup, server: string, settings: Partial<ShipBackupSettings> = {}, on: ObjectStore = store): Promise<ShipBackupResult> {
  const r = await shipLocalBackup(on, loc(server), b.paths, b.backup, { compression: null, encryptionKey: null, ...settings });
  if (r.outcome === 'shipped') {
    const mb = r.rawBytes / 1e6;
    console.info(`shipped ${b.backup.backupId} to ${server}: ${mb.toFixed(1)} MB of tar, ${(r.bytes / 1e6).toFixed(1)} MB stored in ${r.seconds.toFixed(2)} s (${(mb / r.seconds).toFixed(1)} MB/s)`);
  }
  return r;
}

/** The object names of one backup in the bucket. */
async function objectNames(server: string, id: string): Promise<string[]> {
  const prefix = `${server}/base/${id}/`;
  return (await keysUnder(store, prefix)).map((k) => k.slice(prefix.length));
}

function newDirs(): { dest: string; ts: string } {
  const root = makeTempDir('ship-restore');
  return { dest: join(root, 'pgdata'), ts: join(root, 'ts1') };
}

/** pg_verifybackup without WAL; `ignore`: files the restore's recovery configuration wrote or changed. */
function verifyBackup(dest: string, manifest?: string, ignore: string[] = []): void {
  const args = ['-n', ...(manifest ? ['-m', manifest] : []), ...ignore.flatMap((f) => ['-i', f]), dest];
  const r = spawnSync(join(PG15_BIN, 'pg_verifybackup'), args, { encoding: 'utf8' });
  expect(`${r.stdout}${r.stderr}`).toContain('backup successfully verified');
}

async function listed(server: string, args: string[] = []): Promise<{ backup_id: string; status: string }[]> {
  const r = await barkeepCloud('list', s3, ['--format', 'json', ...args, URL, server]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as { backups_list: { backup_id: string; status: string }[] }).backups_list;
}

describe('a plain local backup, gzip', () => {
  let result: ShipBackupResult;

  it('is stored as data.tar.gz, <oid>.tar.gz, backup_manifest and backup.info, listed DONE', async () => {
    const id = plain.backup.backupId;
    result = await ship(plain, 'pg', { compression: 'gzip' });
    expect(result.outcome).toBe('shipped');
    expect(await objectNames('pg', id)).toEqual([`${tsOid}.tar.gz`, 'backup.info', 'backup_manifest', 'data.tar.gz']);
    const info = readFileSync(objectFile(s3, `pg/base/${id}/backup.info`), 'utf8');
    expect(info).toContain('status=DONE\n');
    expect(info).toContain('compression=gzip\n');
    expect(info).toContain('server_name=cloud\n');
    expect(info).toContain(`tablespaces=[('ts1', ${tsOid}, '${tsLocation}')]\n`);
    expect(info).toContain(`begin_wal=${plain.backup.info.begin_wal}\n`);
    expect(info).toContain(`size=${result.objects.filter((o) => !o.key.endsWith('backup_manifest')).reduce((n, o) => n + o.size, 0)}\n`);
    // Fields barman-cloud 3.4 refuses are left out.
    expect(info).not.toMatch(/^(data_checksums|cluster_size|summarize_wal)=/m);
    // The data archive is a tar GNU tar reads: backup_label in, manifest and pg_tblspc links out.
    const members = spawnSync('tar', ['tzf', objectFile(s3, `pg/base/${id}/data.tar.gz`)], { encoding: 'utf8' });
    expect(members.status).toBe(0);
    const names = members.stdout.split('\n');
    expect(names).toContain('backup_label');
    expect(names).toContain('global/pg_control');
    expect(names).not.toContain('backup_manifest');
    // tablespace_map would send a relocated restore back to the original locations: out, and out of the manifest.
    expect(names).not.toContain('tablespace_map');
    expect(readFileSync(join(plain.paths.basebackupsDirectory, id, 'data', 'backup_manifest'), 'utf8')).toContain('"Path": "tablespace_map"');
    expect(readFileSync(objectFile(s3, `pg/base/${id}/backup_manifest`), 'utf8')).not.toContain('tablespace_map');
    expect(names.filter((n) => n.startsWith('pg_tblspc/') && n !== 'pg_tblspc/')).toEqual([]);
    expect((await listed('pg')).map((b) => [b.backup_id, b.status])).toEqual([[id, 'DONE']]);
  });

  it('barkeep-cloud-restore restores it: pg_verifybackup passes, and the server starts with the catalog WAL', async () => {
    const id = plain.backup.backupId;
    // The WAL of the local catalog, fetched with `barkeep get-wal` for restore_command.
    const staging = makeTempDir('ship-wal', { owner: 'postgres' });
    const archived = readdirSync(plain.paths.walsDirectory, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile() && /^[0-9A-F]{24}$|^[0-9A-F]{8}\.history$/.test(e.name))
      .map((e) => e.name);
    expect(archived).toContain(plain.backup.info.end_wal);
    for (const wal of archived) {
      const r = await plain.server.run(['get-wal', '-o', staging, 'pg', wal]);
      expect(r.code, r.stderr).toBe(0);
    }
    giveToPostgres(staging);

    const { dest, ts } = newDirs();
    const r = await runCloudBin('restore', [...common(), '--tablespace', `ts1:${ts}`, '--restore-command', `cp ${staging}/%f %p`, URL, 'pg', id, dest], s3);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/files verified against the backup_manifest/);
    verifyBackup(dest, undefined, ['postgresql.auto.conf', 'postgresql.auto.conf.origin', 'postgresql.conf', 'postgresql.conf.origin', 'recovery.signal']);

    giveToPostgres(dest, ts);
    const srv = await startRestored(dest, cluster.binDir);
    try {
      await srv.waitPromoted(90_000);
      expect(await srv.query('SELECT count(*)::int AS c FROM in_ts1')).toEqual([{ c: 5000 }]);
      expect(await srv.query('SELECT count(*)::int AS c FROM pgbench_accounts')).toEqual([{ c: 300000 }]);
    } finally {
      srv.stop();
    }
  });

  it.skipIf(!existsSync(BARMAN_RESTORE))('barman-cloud-backup-list lists it DONE and barman-cloud-restore restores it', async () => {
    const id = plain.backup.backupId;
    const list = await barmanCloud('list', s3, ['--format', 'json', URL, 'pg']);
    expect(list.stderr).toBe('');
    expect(list.code).toBe(0);
    expect((JSON.parse(list.stdout) as { backups_list: { backup_id: string; status: string }[] }).backups_list.map((b) => [b.backup_id, b.status])).toEqual([[id, 'DONE']]);
    const { dest, ts } = newDirs();
    const r = await runProgram(BARMAN_RESTORE, [...common(), '--tablespace', `ts1:${ts}`, URL, 'pg', id, dest], s3.env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readdirSync(ts).some((n) => n.startsWith('PG_15_'))).toBe(true);
    verifyBackup(dest, objectFile(s3, `pg/base/${id}/backup_manifest`));
  });

  it('shipping it again finds it in the bucket and uploads nothing', async () => {
    const id = plain.backup.backupId;
    const files = (await objectNames('pg', id)).map((n) => objectFile(s3, `pg/base/${id}/${n}`));
    const before = files.map((f) => statSync(f).mtimeMs);
    const again = await ship(plain, 'pg', { compression: 'gzip' });
    expect(again).toMatchObject({ outcome: 'already-in-bucket', objects: [], bytes: 0 });
    expect(files.map((f) => statSync(f).mtimeMs)).toEqual(before);
    expect(await objectNames('pg', id)).toEqual([`${tsOid}.tar.gz`, 'backup.info', 'backup_manifest', 'data.tar.gz']);
  });
});

describe('a backup kept locally', () => {
  it('is kept in the bucket too: the keep annotation is there before backup.info', async () => {
    const server = 'pg-kept';
    const id = plain.backup.backupId;
    await writeKeepAnnotation(plain.paths, id, 'standalone');
    try {
      expect((await ship(plain, server)).outcome).toBe('shipped');
    } finally {
      await removeKeepAnnotation(plain.paths, id);
    }
    expect(readFileSync(objectFile(s3, `${server}/base/${id}/annotations/keep`), 'utf8')).toBe('standalone');
    const status = await barkeepCloud('keep', s3, ['--status', URL, server, id]);
    expect(status.stdout).toContain('Keep: standalone');
  });
});

describe('a tar local backup (zstd), client-side encryption', () => {
  for (const compression of [null, 'zstd'] as const) {
    it(`${compression ?? 'no compression'}: stored encrypted, restored with the key, pg_verifybackup passes`, async () => {
      const server = `pg-tar-${compression ?? 'none'}`;
      const id = tar.backup.backupId;
      const r = await ship(tar, server, { compression, encryptionKey: key });
      expect(r.outcome).toBe('shipped');
      const suffix = compression ? '.zst' : '';
      expect(await objectNames(server, id)).toEqual([`${tsOid}.tar${suffix}`, 'backup.info', 'backup_manifest', `data.tar${suffix}`]);
      for (const name of [`data.tar${suffix}`, `${tsOid}.tar${suffix}`, 'backup_manifest']) {
        expect(readFileSync(objectFile(s3, `${server}/base/${id}/${name}`)).subarray(0, 4).toString('hex')).toBe('89424b43');
      }
      // backup.info stays readable without the key.
      const info = readFileSync(objectFile(s3, `${server}/base/${id}/backup.info`), 'utf8');
      expect(info).toContain(`compression=${compression ?? 'None'}\n`);
      expect(info).toContain('status=DONE\n');

      const denied = newDirs();
      const without = await runCloudBin('restore', [...common(), '--tablespace', `ts1:${denied.ts}`, URL, server, id, denied.dest], s3);
      expect(without.code).not.toBe(0);
      expect(without.stderr).toMatch(/--encryption-key-file/);
      const { dest, ts } = newDirs();
      const restored = await runCloudBin('restore', [...common(), '--encryption-key-file', keyFile, '--tablespace', `ts1:${ts}`, URL, server, id, dest], s3);
      expect(restored.stderr).toBe('');
      expect(restored.code).toBe(0);
      expect(restored.stdout).toMatch(/files verified against the backup_manifest/);
      verifyBackup(dest);
    });
  }
});

describe('interrupted and failed copies', () => {
  it('an abort mid-copy leaves no backup.info; the next copy replaces the stale parts', async () => {
    const server = 'pg-int';
    const id = plain.backup.backupId;
    const stop = new AbortController();
    const lines: string[] = [];
    const first = ship(plain, server, {
      maxArchiveSize: 4 * 1024 * 1024,
      signal: stop.signal,
      verbose: (line) => {
        lines.push(line);
        if (/^Uploaded .*data_0002\.tar /.test(line)) stop.abort('daemon stopping');
      },
    });
    await expect(first).rejects.toThrow(ShipBackupError);
    await expect(first).rejects.toThrow(/interrupted \(daemon stopping\)/);
    const left = await objectNames(server, id);
    expect(left).not.toContain('backup.info');
    expect(left).toEqual(expect.arrayContaining(['data.tar', 'data_0001.tar', 'data_0002.tar']));
    expect(await listed(server)).toEqual([]);

    // One archive per tablespace this time: the old data_0001.tar... must not survive.
    const second = await ship(plain, server, { compression: 'gzip', verbose: (line) => lines.push(line) });
    expect(second.outcome).toBe('shipped');
    expect(lines.some((l) => /^Removing \d+ object\(s\) left in .* by an earlier, incomplete copy$/.test(l))).toBe(true);
    expect(await objectNames(server, id)).toEqual([`${tsOid}.tar.gz`, 'backup.info', 'backup_manifest', 'data.tar.gz']);
    const { dest, ts } = newDirs();
    const r = await runCloudBin('restore', [...common(), '--tablespace', `ts1:${ts}`, URL, server, id, dest], s3);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    verifyBackup(dest);
  });

  it('the S3 server failing mid-upload fails the copy with nothing listed; a later copy succeeds', async () => {
    const server = 'pg-fault';
    const id = plain.backup.backupId;
    const proxy = await startS3FaultProxy(s3.endpoint);
    const viaProxy = await openS3Store(URL, { endpointUrl: proxy.endpoint, credentials: S3RVER_CREDENTIALS, maxAttempts: 2 });
    try {
      const failing = ship(plain, server, {
        maxArchiveSize: 8 * 1024 * 1024,
        verbose: (line) => {
          if (/^Uploading .*data_0001\.tar$/.test(line)) proxy.failAlways({ status: 500, code: 'InternalError' });
        },
      }, viaProxy);
      await expect(failing).rejects.toThrow(/copying backup \d{8}T\d{6} of server pg to .* failed: /);
      proxy.clearFaults();
      expect(await objectNames(server, id)).not.toContain('backup.info');
      expect(await listed(server)).toEqual([]);
      const again = await ship(plain, server, { compression: 'gzip' }, viaProxy);
      expect(again.outcome).toBe('shipped');
      expect((await listed(server)).map((b) => b.status)).toEqual(['DONE']);
    } finally {
      viaProxy.close();
      await proxy.stop();
    }
  });

  it('a FAILED backup.info from an earlier attempt is replaced', async () => {
    const server = 'pg-failed';
    const id = plain.backup.backupId;
    await store.put(`${server}/base/${id}/backup.info`, formatBackupInfo(newBackupInfo({ status: 'FAILED', error: 'failure uploading data (boom)', systemid: plain.backup.info.systemid })));
    await store.put(`${server}/base/${id}/data_0007.tar`, 'stale');
    expect((await listed(server)).map((b) => b.status)).toEqual(['FAILED']);
    expect((await ship(plain, server)).outcome).toBe('shipped');
    expect(await objectNames(server, id)).toEqual([`${tsOid}.tar`, 'backup.info', 'backup_manifest', 'data.tar']);
    expect((await listed(server)).map((b) => b.status)).toEqual(['DONE']);
  });

  it('refuses to replace a different DONE backup with the same ID, and to ship a backup that is not DONE', async () => {
    const server = 'pg-other';
    const id = plain.backup.backupId;
    const foreign = formatBackupInfo(newBackupInfo({ ...plain.backup.info, systemid: '1234567890', absentFields: [], unknownFields: {} }));
    await store.put(`${server}/base/${id}/backup.info`, foreign);
    await expect(ship(plain, server)).rejects.toThrow(/already holds a different backup with ID \d{8}T\d{6} \(its systemid is 1234567890, the local backup's \d+\): refusing to replace it/);
    expect(await objectNames(server, id)).toEqual(['backup.info']);

    const waiting: LocalBackup = { ...plain, backup: { ...plain.backup, info: { ...plain.backup.info, status: 'WAITING_FOR_WALS' } } };
    await expect(ship(waiting, 'pg-waiting')).rejects.toThrow(`backup ${id} of server pg has status WAITING_FOR_WALS: only DONE backups are copied to the bucket`);
    expect(await keysUnder(store, 'pg-waiting/')).toEqual([]);
  });
});
