import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { readVerifyResult } from '../../src/backup/verify/result-file.ts';
import { metaBackupInfoPath, walPath, type ServerPaths } from '../../src/catalog/layout.ts';
import { newBackupInfo, writeBackupInfo } from '../../src/catalog/backup-info.ts';
import { readManifest } from '../../src/backup/manifest.ts';
import { requiredSegments } from '../../src/backup/verify/wal.ts';
import { barkeep } from '../support/cli.ts';
import { makeTempDir } from '../support/tmp.ts';
import { copyTree, makeBackupFixtures, type BackupFixtures } from '../backup/fixtures.ts';

// `barkeep verify-backup SERVER BACKUP_ID` on a Barman catalog holding real
// pg_basebackup backups (one plain with a tablespace in base/<id>/<oid>, one tar
// gzip) and their WAL in wals/, partly compressed.

const PLAIN_ID = '20260101T010101';
const TAR_ID = '20260102T010101';

let fx: BackupFixtures;
let homes = 0;

beforeAll(async () => {
  fx = await makeBackupFixtures('verifycli');
});

interface Home {
  conf: string;
  paths: ServerPaths;
  base: string;
}

/** A barman_home with server `pg` holding both backups (DONE) and the archived WAL. */
async function makeHome(): Promise<Home> {
  const root = makeTempDir(`verify-home-${++homes}`);
  const conf = join(root, 'barman.conf');
  writeFileSync(conf, `[barman]\nbarman_home = ${root}/home\nlog_file = ${root}/barkeep.log\n\n[pg]\nconninfo = host=127.0.0.1 port=1 dbname=postgres\nbackup_method = postgres\nstreaming_archiver = on\nslot_name = barman\n`);
  const server = join(root, 'home', 'pg');
  const paths: ServerPaths = {
    name: 'pg',
    backupDirectory: server,
    basebackupsDirectory: join(server, 'base'),
    walsDirectory: join(server, 'wals'),
    incomingWalsDirectory: join(server, 'incoming'),
    streamingWalsDirectory: join(server, 'streaming'),
    errorsDirectory: join(server, 'errors'),
    xlogdbDirectory: join(server, 'wals'),
    lockDirectory: join(root, 'home'),
  };
  const base = paths.basebackupsDirectory;
  mkdirSync(join(base, PLAIN_ID), { recursive: true });
  await copyTree(fx.plain.dir, join(base, PLAIN_ID, 'data'));
  await copyTree(fx.plain.tablespaceDir, join(base, PLAIN_ID, String(fx.tablespaceOid)));
  mkdirSync(join(base, TAR_ID), { recursive: true });
  await copyTree(fx.tars.gzip.dir, join(base, TAR_ID, 'data'));
  const common = {
    status: 'DONE' as const,
    version: 150000,
    systemid: fx.systemIdentifier,
    server_name: 'pg',
    mode: 'postgres',
    tablespaces: [{ name: 'verify_ts', oid: fx.tablespaceOid, location: '/srv/ts' }],
  };
  await writeBackupInfo(metaBackupInfoPath(paths, PLAIN_ID), newBackupInfo({ ...common }));
  await writeBackupInfo(metaBackupInfoPath(paths, TAR_ID), newBackupInfo({ ...common, compression: 'gzip' }));
  fx.walNames().forEach((name, i) => {
    const target = walPath(paths, name);
    mkdirSync(join(target, '..'), { recursive: true });
    const bytes = readFileSync(join(fx.walDir, name));
    writeFileSync(target, i % 2 === 0 ? gzipSync(bytes) : bytes);
  });
  return { conf, paths, base };
}

async function neededWal(id: string, home: Home): Promise<string[]> {
  const manifest = await readManifest(join(home.base, id, 'data', 'backup_manifest'));
  return requiredSegments(manifest.walRanges, 16 << 20).map((s) => s.name);
}

describe('verify-backup', () => {
  it('verifies a plain backup with its tablespace and WAL, and records the result', async () => {
    const h = await makeHome();
    const r = await barkeep(['-c', h.conf, 'verify-backup', 'pg', PLAIN_ID]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(new RegExp(`^Verifying backup ${PLAIN_ID} of server pg\\nBackup ${PLAIN_ID} verified: \\d+ files, [\\d.]+ MiB checked, \\d+ WAL segments?\\n$`));
    expect(r.code).toBe(0);
    const record = await readVerifyResult(h.paths, PLAIN_ID);
    expect(record).toMatchObject({ backup_id: PLAIN_ID, server: 'pg', result: 'OK', format: 'plain', problems_total: 0, problems: [] });
    expect(Date.now() - Date.parse(record!.verified_at)).toBeLessThan(60_000);
    expect(record!.wal_segments!.verified).toBe((await neededWal(PLAIN_ID, h)).length);
  });

  it('verifies a tar backup through the `verify` alias and a shortcut, with -f json', async () => {
    const h = await makeHome();
    const r = await barkeep(['-c', h.conf, '-f', 'json', 'verify', 'pg', 'latest']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(doc).toMatchObject({ backup_id: TAR_ID, server: 'pg', result: 'OK', format: 'tar', problems: [] });
    expect(doc['checked_files']).toBeGreaterThan(900);
    expect((await readVerifyResult(h.paths, TAR_ID))!.result).toBe('OK');
  });

  it('fails on a damaged file and a missing WAL segment, naming both, and records FAILED', async () => {
    const h = await makeHome();
    const dir = join(h.base, PLAIN_ID, 'data', 'base', '5');
    const victim = readdirSync(dir).map((n) => ({ n, size: statSync(join(dir, n)).size })).sort((a, b) => b.size - a.size)[0]!.n;
    const buf = readFileSync(join(dir, victim));
    buf[100] = buf[100]! ^ 0xff;
    writeFileSync(join(dir, victim), buf);
    const wal = (await neededWal(PLAIN_ID, h))[0]!;
    rmSync(walPath(h.paths, wal));

    const r = await barkeep(['-c', h.conf, 'verify-backup', 'pg', PLAIN_ID]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(`Verifying backup ${PLAIN_ID} of server pg\n`);
    expect(r.stderr).toContain(`ERROR: checksum mismatch for file "base/5/${victim}"`);
    expect(r.stderr).toContain(`ERROR: WAL segment ${wal} is missing from the archive`);
    expect(r.stderr).toMatch(new RegExp(`ERROR: Backup ${PLAIN_ID} of server pg failed verification: 2 problems \\(`));
    const record = await readVerifyResult(h.paths, PLAIN_ID);
    expect(record).toMatchObject({ result: 'FAILED', problems_total: 2 });
    expect(record!.problems.map((p) => p.path).sort()).toEqual([`base/5/${victim}`, wal].sort());

    // The segment still waiting in incoming/ counts: it is not lost.
    mkdirSync(h.paths.incomingWalsDirectory, { recursive: true });
    copyFileSync(join(fx.walDir, wal), join(h.paths.incomingWalsDirectory, wal));
    const again = await barkeep(['-c', h.conf, '-f', 'json', 'verify-backup', 'pg', PLAIN_ID]);
    expect((JSON.parse(again.stdout) as { problems: { path: string }[] }).problems.map((p) => p.path)).toEqual([`base/5/${victim}`]);
  });

  it('refuses a backup without manifest, an unknown backup and an incomplete one', async () => {
    const h = await makeHome();
    rmSync(join(h.base, TAR_ID, 'data', 'backup_manifest'));
    let r = await barkeep(['-c', h.conf, 'verify-backup', 'pg', TAR_ID]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`ERROR: Cannot verify backup ${TAR_ID} of server pg: it has no backup_manifest (${join(h.base, TAR_ID, 'data', 'backup_manifest')})`);
    expect(existsSync(join(h.paths.backupDirectory, 'meta', `${TAR_ID}-verify.json`))).toBe(false);

    r = await barkeep(['-c', h.conf, 'verify-backup', 'pg', '20990101T000000']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("ERROR: Unknown backup '20990101T000000' for server 'pg'");

    await writeBackupInfo(metaBackupInfoPath(h.paths, PLAIN_ID), newBackupInfo({ status: 'STARTED', server_name: 'pg' }));
    r = await barkeep(['-c', h.conf, 'verify-backup', 'pg', PLAIN_ID]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`its status is STARTED`);
  });
});
