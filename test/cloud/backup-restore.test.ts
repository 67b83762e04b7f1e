// barkeep-cloud-backup and barkeep-cloud-restore against a real S3-compatible
// server (s3rver) and a real PostgreSQL 15 archiving its WAL into the same
// bucket with barkeep-cloud-wal-archive.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { giveToPostgres, startRestored } from '../recovery/restored-server.ts';
import type { PgCluster } from '../support/pg-cluster.ts';
import { type S3FaultProxy, startS3FaultProxy } from '../support/s3-fault-proxy.ts';
import { type S3Server, startS3Server } from '../support/s3-server.ts';
import { createTablespace } from '../support/tablespace.ts';
import { makeTempDir } from '../support/tmp.ts';
import {
  backupIdOf,
  backupObjects,
  envWords,
  objectFile,
  pgbench,
  runCloudBin,
  runProgram,
  startArchivingCluster,
  switchAndWaitArchived,
  walCommands,
} from './backup-restore-support.ts';

const URL = 's3://barkeep-test/';
const SERVER = 'pg';
const PG15_BIN = '/usr/lib/postgresql/15/bin';

let s3: S3Server;
let cluster: PgCluster;
let keyFile: string;
let otherKeyFile: string;
let tsLocation: string;

beforeAll(async () => {
  s3 = await startS3Server({ name: 'cloud-backup-restore' });
  cluster = await startArchivingCluster(s3, URL, SERVER);
  tsLocation = await createTablespace(cluster, 'ts1');
  await cluster.superuserQuery('CREATE TABLE in_ts1 (x int) TABLESPACE ts1; INSERT INTO in_ts1 SELECT generate_series(1, 5000)');
  pgbench(cluster, ['-i', '-s', '2']);
  const keys = makeTempDir('cloud-keys');
  keyFile = join(keys, 'key');
  otherKeyFile = join(keys, 'other');
  writeFileSync(keyFile, Buffer.alloc(32, 7), { mode: 0o600 });
  writeFileSync(otherKeyFile, `${'ab'.repeat(32)}\n`, { mode: 0o600 });
});

afterAll(async () => {
  await cluster?.destroy();
  await s3?.stop();
});

const common = () => ['--endpoint-url', s3.endpoint];

async function backup(args: string[]): Promise<string> {
  const r = await runCloudBin('backup', [...common(), '-d', cluster.conninfo(), '--immediate-checkpoint', ...args, URL, SERVER], s3);
  expect(r.stderr).not.toMatch(/ERROR/);
  expect(r.code).toBe(0);
  return backupIdOf(r);
}

function newDirs(): { dest: string; ts: string } {
  const root = makeTempDir('cloud-restore');
  return { dest: join(root, 'pgdata'), ts: join(root, 'ts1') };
}

function restore(args: string[], backupId: string, dest: string) {
  return runCloudBin('restore', [...common(), ...args, URL, SERVER, backupId, dest], s3);
}

/** pg_verifybackup, independently of barkeep, on the restored directory (the manifest is written there). */
function verifyBackup(dest: string): void {
  const r = spawnSync(join(PG15_BIN, 'pg_verifybackup'), ['-n', dest], { encoding: 'utf8' });
  expect(`${r.stdout}${r.stderr}`).toContain('backup successfully verified');
}

const backups = new Map<string, string>();
let pitrId = '';

describe('every compression, with and without client-side encryption', () => {
  const cases: [string, string[]][] = [
    ['none', []],
    ['gzip', ['-z']],
    ['zstd', ['--zstd']],
    ['lz4', ['--lz4']],
    ['bzip2', ['-j']],
  ];
  for (const [name, flags] of cases) {
    for (const encrypted of [false, true]) {
      it(`${name}${encrypted ? ', encrypted' : ''}: stored in barman-cloud's layout and restored file for file`, async () => {
        const keyArgs = encrypted ? ['--encryption-key-file', keyFile] : [];
        const id = await backup([...flags, ...keyArgs]);
        backups.set(`${name}${encrypted ? '+key' : ''}`, id);
        const suffix = { none: '', gzip: '.gz', zstd: '.zst', lz4: '.lz4', bzip2: '.bz2' }[name];
        const objects = backupObjects(s3, SERVER, id);
        const ts = await cluster.superuserQuery<{ oid: number }>("SELECT oid::int AS oid FROM pg_tablespace WHERE spcname = 'ts1'");
        expect([...objects.keys()].sort()).toEqual([`${ts[0]!.oid}.tar${suffix}`, 'backup.info', 'backup_manifest', `data.tar${suffix}`].sort());
        const info = readFileSync(objectFile(s3, `${SERVER}/base/${id}/backup.info`), 'utf8');
        expect(info).toContain('status=DONE');
        expect(info).toContain('server_name=cloud');
        expect(info).toContain(`tablespaces=[('ts1', ${ts[0]!.oid}, '${tsLocation}')]`);
        expect(info).toMatch(/^begin_wal=[0-9A-F]{24}$/m);
        const data = readFileSync(objectFile(s3, `${SERVER}/base/${id}/data.tar${suffix}`));
        // Encrypted objects start with barkeep's header; the others with the codec's magic (or a tar header).
        expect(data.subarray(0, 4).toString('hex') === '89424b43').toBe(encrypted);

        const { dest, ts: tsDest } = newDirs();
        const r = await restore([...keyArgs, '--tablespace', `ts1:${tsDest}`], id, dest);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        expect(r.stdout).toMatch(/files verified against the backup_manifest/);
        expect(readlinkSync(join(dest, 'pg_tblspc', String(ts[0]!.oid)))).toBe(tsDest);
        expect(statSync(join(dest, 'pg_wal')).isDirectory()).toBe(true);
        verifyBackup(dest);
      });
    }
  }
});

describe('point-in-time recovery from the bucket', () => {
  it('restores with --recovery-target-time and cloud-wal-restore: every row up to the target, none after', async () => {
    const id = await backup(['-z', '--encryption-key-file', keyFile, '-n', 'before-marks']);
    pitrId = id;
    await cluster.superuserQuery('CREATE TABLE marks (id int PRIMARY KEY)');
    pgbench(cluster, ['-t', '200', '-c', '2']);
    for (let i = 1; i <= 5; i++) await cluster.superuserQuery(`INSERT INTO marks VALUES (${i})`);
    const [{ target }] = (await cluster.superuserQuery<{ target: string }>('SELECT clock_timestamp()::text AS target')) as [{ target: string }];
    await new Promise((r) => setTimeout(r, 1100));
    for (let i = 6; i <= 10; i++) await cluster.superuserQuery(`INSERT INTO marks VALUES (${i})`);
    // -n: no vacuum, and above all no TRUNCATE of pgbench_history.
    pgbench(cluster, ['-n', '-t', '100', '-c', '2']);
    const [{ n }] = (await cluster.superuserQuery<{ n: string }>('SELECT count(*)::text AS n FROM pgbench_history')) as [{ n: string }];
    expect(n).toBe('600');
    await switchAndWaitArchived(cluster);

    const { dest, ts } = newDirs();
    const r = await restore(
      [
        '--encryption-key-file', keyFile,
        '--tablespace', `ts1:${ts}`,
        '-J', '3',
        '--recovery-target-time', target,
        '--recovery-target-action', 'promote',
        '--restore-command', walCommands(s3, URL, SERVER).restore,
      ],
      'before-marks',
      dest,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Restored backup ${id} of server ${SERVER}`);
    expect(r.stdout).toContain("recovery_target_action = 'promote'");
    expect(existsSync(join(dest, 'recovery.signal'))).toBe(true);
    expect(readFileSync(join(dest, 'postgresql.auto.conf'), 'utf8')).toMatch(/^restore_command = '.*wal-restore-bin\.js.* %f %p'$/m);
    // The restored server must not archive into the source's bucket.
    expect(readFileSync(join(dest, 'postgresql.conf'), 'utf8')).toMatch(/^archive_command = false$/m);

    giveToPostgres(dest, ts);
    const srv = await startRestored(dest, cluster.binDir);
    try {
      await srv.waitPromoted(90_000);
      const marks = await srv.query<{ id: number }>('SELECT id FROM marks ORDER BY id');
      expect(marks.map((m) => m.id)).toEqual([1, 2, 3, 4, 5]);
      const [{ c }] = (await srv.query<{ c: string }>('SELECT count(*)::text AS c FROM in_ts1')) as [{ c: string }];
      expect(c).toBe('5000');
      const [{ h }] = (await srv.query<{ h: string }>('SELECT count(*)::text AS h FROM pgbench_history')) as [{ h: string }];
      // The 400 transactions before the target, none of the 200 after.
      expect(h).toBe('400');
    } finally {
      srv.stop();
    }
  });

  it("'auto' with --target-time picks the newest backup that ended before it", async () => {
    const [{ t }] = (await cluster.superuserQuery<{ t: string }>('SELECT clock_timestamp()::text AS t')) as [{ t: string }];
    await new Promise((r) => setTimeout(r, 1100));
    const later = await backup([]);
    const { dest } = newDirs();
    const r = await restore(['--encryption-key-file', keyFile, '--target-time', t, '--tablespace', `ts1:${newDirs().ts}`], 'auto', dest);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(later > pitrId).toBe(true);
    expect(r.stdout).toContain(`Restored backup ${pitrId} `);
  });
});

describe('-S/--max-archive-size', () => {
  it('splits data.tar into data_0001.tar... parts at member boundaries, which restore', async () => {
    const id = await backup(['-S', '8MB']);
    const objects = backupObjects(s3, SERVER, id);
    const parts = [...objects.keys()].filter((k) => /^data(_\d{4})?\.tar$/.test(k)).sort();
    expect(parts.length).toBeGreaterThan(2);
    expect(parts.slice(0, 3)).toEqual(['data.tar', 'data_0001.tar', 'data_0002.tar']);
    // Each part is a tar of its own (GNU tar reads it to the end) and none is past 8 MiB
    // unless a single file is larger (pgbench_accounts is about 26 MiB).
    for (const p of parts) {
      const list = spawnSync('tar', ['tvf', objectFile(s3, `${SERVER}/base/${id}/${p}`)], { encoding: 'utf8' });
      expect(list.status).toBe(0);
      const files = list.stdout.trim().split('\n');
      if (objects.get(p)! > 8 * 1048576) expect(files.filter((l) => l.startsWith('-')).length).toBe(1);
    }
    const { dest, ts } = newDirs();
    const r = await restore(['-J', '4', '--tablespace', `ts1:${ts}`], id, dest);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    verifyBackup(dest);
  });
});

describe('damaged backups are refused with a clear error', () => {
  /** A fresh copy of a backup's objects under another ID, so the damage stays local to the test. */
  async function damagedCopy(flags: string[], damage: (file: string) => void, object: string): Promise<string> {
    const id = await backup(flags);
    damage(objectFile(s3, `${SERVER}/base/${id}/${object}`));
    return id;
  }

  it('a changed byte in an uncompressed data.tar is named by the manifest check', async () => {
    const id = await damagedCopy([], (f) => {
      const buf = readFileSync(f);
      // Inside the content of a relation file, well past the first headers.
      const at = buf.indexOf(Buffer.from('base/5/'), 4096) + 4096;
      buf[at] = buf[at]! ^ 0xff;
      writeFileSync(f, buf);
    }, 'data.tar');
    const { dest, ts } = newDirs();
    const r = await restore(['--tablespace', `ts1:${ts}`], id, dest);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ERROR: s3:\/\/barkeep-test\/pg\/base\/\d{8}T\d{6}\/data\.tar: .* (does not match its SHA256 checksum|is corrupt or truncated)/m);
    expect(r.stderr).toContain('remove it before trying again');
  });

  it('a truncated gzip archive is reported as corrupt or truncated', async () => {
    const id = await damagedCopy(['-z'], (f) => truncateSync(f, Math.floor(statSync(f).size / 2)), 'data.tar.gz');
    const { dest, ts } = newDirs();
    const r = await restore(['--tablespace', `ts1:${ts}`], id, dest);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ERROR: s3:\/\/barkeep-test\/pg\/base\/\d{8}T\d{6}\/data\.tar\.gz is corrupt or truncated/);
  });

  for (const [flag, suffix] of [['--zstd', 'zst'], ['--lz4', 'lz4']] as const) {
    it(`a truncated ${suffix} archive is reported as corrupt or truncated`, async () => {
      const id = await damagedCopy([flag], (f) => truncateSync(f, Math.floor(statSync(f).size / 2)), `data.tar.${suffix}`);
      const { dest, ts } = newDirs();
      const r = await restore(['--tablespace', `ts1:${ts}`], id, dest);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`ERROR: s3://barkeep-test/pg/base/\\d{8}T\\d{6}/data\\.tar\\.${suffix} is corrupt or truncated`));
    });
  }

  it('a truncated uncompressed archive is reported as truncated', async () => {
    const id = await damagedCopy([], (f) => truncateSync(f, 512 * 1000), 'data.tar');
    const { dest, ts } = newDirs();
    const r = await restore(['--tablespace', `ts1:${ts}`], id, dest);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/data\.tar is corrupt or truncated: the archive is truncated/);
  });

  it('an encrypted archive: tampering, a missing key and a wrong key are each named', async () => {
    const id = await damagedCopy(['--lz4', '--encryption-key-file', keyFile], (f) => {
      const buf = readFileSync(f);
      buf[buf.length >> 1] = buf[buf.length >> 1]! ^ 1;
      writeFileSync(f, buf);
    }, 'data.tar.lz4');
    const ts = () => ['--tablespace', `ts1:${newDirs().ts}`];
    const tampered = await restore(['--encryption-key-file', keyFile, ...ts()], id, newDirs().dest);
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toMatch(/data\.tar\.lz4 is corrupt or was tampered with: encrypted chunk \d+/);
    const noKey = await restore(ts(), backups.get('gzip+key')!, newDirs().dest);
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toMatch(/is encrypted with an --encryption-key-file key: give the key file with --encryption-key-file/);
    const wrongKey = await restore(['--encryption-key-file', otherKeyFile, ...ts()], backups.get('gzip+key')!, newDirs().dest);
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toMatch(/was encrypted with a different key/);
  });
});

describe('refusals', () => {
  it('a destination that is not empty is refused before anything is downloaded', async () => {
    const { dest } = newDirs();
    mkdirSync(dest);
    writeFileSync(join(dest, 'something'), 'x');
    const r = await restore(['--tablespace', `ts1:${newDirs().ts}`], backups.get('none')!, dest);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`ERROR: Destination ${dest} already exists and it is not empty\n`);
  });

  it('an unknown --tablespace name, an unknown backup, --snappy and a bad -S are clear errors', async () => {
    const badTs = await restore(['--tablespace', `nope:${newDirs().ts}`], backups.get('none')!, newDirs().dest);
    expect(badTs.code).toBe(1);
    expect(badTs.stderr).toMatch(/has no tablespace named nope \(its tablespaces: ts1\)/);
    const missing = await restore([], '20000101T000000', newDirs().dest);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(`ERROR: Backup 20000101T000000 for server ${SERVER} does not exist\n`);
    const snappy = await runCloudBin('backup', [...common(), '--snappy', URL, SERVER], s3);
    expect(snappy.code).toBe(3);
    expect(snappy.stderr).toMatch(/--snappy is not supported/);
    const size = await runCloudBin('backup', [...common(), '-S', 'lots', URL, SERVER], s3);
    expect(size.code).toBe(3);
    expect(size.stderr).toMatch(/--max-archive-size: 'lots' is not a valid size string/);
  });
});

describe('a failed upload', () => {
  let proxy: S3FaultProxy;
  beforeAll(async () => {
    proxy = await startS3FaultProxy(s3.endpoint);
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  it('leaves a FAILED backup.info with the error, no archive object, and exit 1', async () => {
    proxy.failAlways({ status: 500, code: 'InternalError', match: (r) => r.operation === 'UploadPart' });
    try {
      const r = await runCloudBin('backup', ['--endpoint-url', proxy.endpoint, '-d', cluster.conninfo(), '--immediate-checkpoint', '-S', '8MB', URL, SERVER], s3, {
        env: { AWS_MAX_ATTEMPTS: '2' },
      });
      expect(r.code).toBe(1);
      const m = /ERROR: backup (\d{8}T\d{6}) failed: failure uploading data \((.*)\)/.exec(r.stderr);
      expect(m, r.stderr).not.toBeNull();
      const objects = backupObjects(s3, SERVER, m![1]!);
      expect([...objects.keys()].filter((k) => k.startsWith('data'))).toEqual([]);
      const info = readFileSync(objectFile(s3, `${SERVER}/base/${m![1]}/backup.info`), 'utf8');
      expect(info).toContain('status=FAILED');
      expect(info).toMatch(/^error=failure uploading data \(.*InternalError/m);
      // The server is not left in backup mode: another backup runs at once.
    } finally {
      proxy.clearFaults();
    }
    await backup(['-z']);
  });

  it('500s and SlowDown throttling on parts are retried: the backup is DONE and restores', async () => {
    const seen = proxy.requests.length;
    proxy.failNext(3, { status: 503, code: 'SlowDown', match: (r) => r.operation === 'UploadPart' });
    proxy.failNext(2, { status: 500, code: 'InternalError', match: (r) => r.operation === 'UploadPart' });
    try {
      const r = await runCloudBin('backup', ['--endpoint-url', proxy.endpoint, '-d', cluster.conninfo(), '--immediate-checkpoint', '-S', '8MB', URL, SERVER], s3);
      expect(r.stderr).not.toMatch(/ERROR/);
      expect(r.code).toBe(0);
      const id = backupIdOf(r);
      const failed = proxy.requests.slice(seen).filter((q) => q.operation === 'UploadPart' && (q.outcome === 503 || q.outcome === 500));
      expect(failed.length).toBe(5);
      const { dest, ts } = newDirs();
      const out = await restore(['--tablespace', `ts1:${ts}`], id, dest);
      expect(out.code).toBe(0);
      verifyBackup(dest);
    } finally {
      proxy.clearFaults();
    }
  });

  it('the store dropping every connection mid-upload: exit 2 (network), FAILED backup.info, no archive object', async () => {
    proxy.dropNext(1000, { match: (r) => r.operation === 'UploadPart' });
    try {
      const r = await runCloudBin('backup', ['--endpoint-url', proxy.endpoint, '-d', cluster.conninfo(), '--immediate-checkpoint', '-S', '8MB', URL, SERVER], s3, {
        env: { AWS_MAX_ATTEMPTS: '2' },
      });
      expect(r.code, r.stderr).toBe(2);
      const m = /ERROR: backup (\d{8}T\d{6}) failed: failure uploading data \((.*)\)/.exec(r.stderr);
      expect(m, r.stderr).not.toBeNull();
      expect([...backupObjects(s3, SERVER, m![1]!).keys()].filter((k) => k.startsWith('data'))).toEqual([]);
      expect(readFileSync(objectFile(s3, `${SERVER}/base/${m![1]}/backup.info`), 'utf8')).toContain('status=FAILED');
    } finally {
      proxy.clearFaults();
    }
  });
});

describe('interoperability with barman-cloud', () => {
  const BARMAN_RESTORE = '/usr/bin/barman-cloud-restore';
  const BARMAN_BACKUP = '/usr/bin/barman-cloud-backup';

  for (const flavour of ['none', 'gzip'] as const) {
    it.skipIf(!existsSync(BARMAN_RESTORE))(`barman-cloud-restore restores a barkeep-cloud-backup backup (${flavour})`, async () => {
      const id = backups.get(flavour)!;
      const { dest, ts } = newDirs();
      const r = await runProgram(BARMAN_RESTORE, [...common(), '--tablespace', `ts1:${ts}`, URL, SERVER, id, dest], s3.env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      // pg_verifybackup with the manifest barkeep stored next to the archives.
      const manifest = objectFile(s3, `${SERVER}/base/${id}/backup_manifest`);
      const v = spawnSync(join(PG15_BIN, 'pg_verifybackup'), ['-n', '-m', manifest, dest], { encoding: 'utf8' });
      expect(`${v.stdout}${v.stderr}`).toContain('backup successfully verified');
    });
  }

  it.skipIf(!existsSync(BARMAN_BACKUP))('barkeep-cloud-restore restores a barman-cloud-backup backup (gzip, PAX tars)', async () => {
    // barman-cloud-backup reads PGDATA: it runs as the server's OS user, on the server's host.
    const r = spawnSync(
      'runuser',
      ['-u', 'postgres', '--', 'env', ...envWords(s3).split(' '), BARMAN_BACKUP, ...common(), '-z', '--immediate-checkpoint', '-h', cluster.socketDir, '-p', String(cluster.port), '-U', 'postgres', URL, SERVER],
      { encoding: 'utf8', cwd: '/tmp' },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    await cluster.superuserQuery('CREATE TABLE after_barman (x int); INSERT INTO after_barman VALUES (1)');
    await switchAndWaitArchived(cluster);
    const { dest, ts } = newDirs();
    const out = await restore(['--tablespace', `ts1:${ts}`, '--restore-command', walCommands(s3, URL, SERVER).restore], 'latest', dest);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    expect(out.stdout).toContain('no backup_manifest: files not verified');
    giveToPostgres(dest, ts);
    const srv = await startRestored(dest, cluster.binDir);
    try {
      await srv.waitPromoted(90_000);
      expect(await srv.query('SELECT x FROM after_barman')).toEqual([{ x: 1 }]);
      expect(await srv.query('SELECT count(*)::int AS c FROM in_ts1')).toEqual([{ c: 5000 }]);
    } finally {
      srv.stop();
    }
  });
});
