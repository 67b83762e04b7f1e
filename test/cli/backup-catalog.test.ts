import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { newBackupInfo } from '../../src/catalog/backup-info.ts';
import { loadBackup } from '../../src/catalog/catalog.ts';
import { metaBackupInfoPath } from '../../src/catalog/layout.ts';
import { addBackup, addWals, backupInfo, type Catalog, makeCatalog, seg, xlogDbNames } from '../backup/catalog-support.ts';
import { BARMAN_34_BACKUP_INFO } from '../catalog/fixtures/barman-samples.ts';

// The catalog commands run as a user would, on crafted catalogs: first Barman 3.4's
// own catalog for server pg15, compared with what Barman 3.4 printed for it; then
// keep, delete, check-backup, list-files targets and backup shortcuts.

const REFERENCE = readFileSync(new URL('./fixtures/barman-3.4-backup-catalog.txt', import.meta.url), 'utf8');
const BARMAN = '/srv/example/barman/barman.conf';
const BACKUP_ID = '20261121T160454';

/** Output blocks of a command in the reference file, in order of appearance. */
function referenceBlocks(args: string): string[] {
  const marker = `$ barman -c ${BARMAN} ${args}\n`;
  const out: string[] = [];
  for (let at = REFERENCE.indexOf(marker); at >= 0; at = REFERENCE.indexOf(marker, at + 1)) {
    const body = REFERENCE.slice(at + marker.length);
    out.push(body.slice(0, body.indexOf('[exit code:')));
  }
  if (out.length === 0) throw new Error(`'${args}' not in the reference outputs`);
  return out;
}

/** The same JSON text Python's json.dump(sort_keys=True) gives, in JS's compact spelling. */
function compactJson(text: string): string {
  return JSON.stringify(JSON.parse(text));
}

describe('Barman 3.4 catalog of server pg15', () => {
  let cat: Catalog;
  // The xlog.db lines Barman 3.4 wrote (legacy wals/xlog.db, 4 columns), plus segment 3
  // which the first list-backup saw before it was purged.
  const LINES: Record<number, string> = {
    3: '000000010000000000000003\t16420\t1795277100.12\tgzip',
    4: '000000010000000000000004\t16463\t1795277101.968881\tgzip',
    5: '000000010000000000000005\t16481\t1795277106.267175\tgzip',
    6: '000000010000000000000006\t92569\t1795277137.7911763\tgzip',
  };
  const setState = (status: 'WAITING_FOR_WALS' | 'DONE', segments: number[]) => {
    const base = join(cat.home, 'pg15', 'base', BACKUP_ID);
    mkdirSync(base, { recursive: true });
    writeFileSync(join(base, 'backup.info'), BARMAN_34_BACKUP_INFO.replace('status=DONE\n', `status=${status}\n`));
    writeFileSync(join(cat.home, 'pg15', 'wals', 'xlog.db'), segments.map((n) => `${LINES[n]}\n`).join(''));
  };

  beforeAll(async () => {
    cat = await makeCatalog({ retention_policy: 'REDUNDANCY 2' }, 'pg15');
  });

  it('list-backup while WAITING_FOR_WALS, then DONE: the reference lines', async () => {
    const [waiting, done] = referenceBlocks('list-backup pg15');
    setState('WAITING_FOR_WALS', [3]);
    let r = await cat.run(['list-backup', 'pg15']);
    expect(r.stdout).toBe(waiting);
    expect(r.code).toBe(0);
    setState('DONE', [4, 5]);
    r = await cat.run(['list-backups', 'pg15']);
    expect(r.stdout).toBe(done);
    expect((await cat.run(['list-backup', 'all'])).stdout).toBe(done);
  });

  it('show-backup latest (console): the reference block line for line', async () => {
    setState('DONE', [4, 5]);
    const r = await cat.run(['show-backup', 'pg15', 'latest']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(referenceBlocks('show-backup pg15 latest')[0]);
    expect((await cat.run(['show-backups', 'pg15', BACKUP_ID])).stdout).toBe(r.stdout);
  });

  it('-f json list-backup and show-backup: the reference documents key for key', async () => {
    setState('DONE', [4, 5, 6]);
    const list = await cat.run(['-f', 'json', 'list-backup', 'pg15']);
    expect(list.stdout.trim()).toBe(compactJson(referenceBlocks('-f json list-backup pg15')[0]!));
    const show = await cat.run(['-f', 'json', 'show-backup', 'pg15', 'latest']);
    expect(show.stdout.trim()).toBe(compactJson(referenceBlocks('-f json show-backup pg15 latest')[0]!));
  });

  it('list-backup --minimal', async () => {
    setState('DONE', [4, 5, 6]);
    expect((await cat.run(['list-backup', '--minimal', 'pg15'])).stdout).toBe(referenceBlocks('list-backup --minimal pg15')[0]);
    expect((await cat.run(['-f', 'json', 'list-backup', '--minimal', 'pg15'])).stdout.trim()).toBe(`{"pg15":["${BACKUP_ID}"]}`);
  });

  it('list-files --target standalone: the reference files, each directory listed the same way', async () => {
    setState('DONE', [4, 5, 6]);
    const expected = referenceBlocks('list-files --target standalone pg15 latest')[0]!
      .trimEnd()
      .split('\n')
      .map((p) => p.replace('/srv/example/barman/home/', `${cat.home}/`));
    for (const path of expected) {
      if (path.endsWith('/backup.info') || path.includes('/wals/')) continue;
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, '');
    }
    const r = await cat.run(['list-files', '--target', 'standalone', 'pg15', 'latest']);
    expect(r.code).toBe(0);
    const got = r.stdout.trimEnd().split('\n');
    // Same files; backup.info first and the WAL last; inside every directory the same
    // sorted files. Only the order of sibling directories differs: Barman takes the
    // filesystem's, barkeep sorts them.
    expect([...got].sort()).toEqual([...expected].sort());
    expect(got[0]).toBe(expected[0]);
    expect(got.at(-1)).toBe(expected.at(-1));
    const byDir = (paths: string[]) => {
      const m: Record<string, string[]> = {};
      for (const p of paths) (m[dirname(p)] ??= []).push(p);
      return m;
    };
    expect(byDir(got)).toEqual(byDir(expected));
    expect(got.length).toBe(973);
  });
});

describe('catalog commands on crafted catalogs', () => {
  /** A (oldest), B (named 'monthly', with a tablespace), C (newest), D FAILED; WAL 1..14 and a history file. */
  async function threeDone(settings: Record<string, string> = { retention_policy: 'REDUNDANCY 1' }): Promise<Catalog> {
    const cat = await makeCatalog(settings);
    const { server } = cat;
    await addBackup(server, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(3), end_time: '2024-01-01 00:10:00+00:00' }));
    await addBackup(
      server,
      '20240102T000000',
      backupInfo({
        begin_wal: seg(6),
        end_wal: seg(7),
        end_time: '2024-01-02 00:10:00+00:00',
        backup_name: 'monthly',
        tablespaces: [{ name: 'tbs1', oid: 16384, location: '/srv/tbs1' }],
      }),
    );
    await addBackup(server, '20240103T000000', backupInfo({ begin_wal: seg(10), end_wal: seg(11), end_time: '2024-01-03 00:10:00+01:00' }));
    await addBackup(server, '20240104T000000', backupInfo({ status: 'FAILED', begin_wal: seg(13), end_wal: null, error: 'failure copying files (connection lost)' }));
    addWals(server, [...[1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => seg(n)), '00000002.history', ...[10, 11, 12, 13, 14].map((n) => seg(n))], { size: 2048 });
    return cat;
  }

  it('list-backup: names, tablespaces, retention suffixes (VALID hidden), non-DONE statuses, sizes with WAL', async () => {
    const cat = await threeDone();
    const r = await cat.run(['list-backup', 'pg']);
    expect(r.stdout).toBe(
      [
        'pg 20240104T000000 - FAILED',
        // C: 2 required segments; until the end of the archive: 12, 13, 14.
        'pg 20240103T000000 - Wed Jan  3 00:10:00 2024 - Size: 5.0 KiB - WAL Size: 6.0 KiB',
        // B: 6-7 required; after it, up to C's end_wal: 8, 9, 10, 11.
        "pg 20240102T000000 'monthly' - Tue Jan  2 00:10:00 2024 - Size: 5.0 KiB - WAL Size: 8.0 KiB (tablespaces: tbs1:/srv/tbs1) - OBSOLETE",
        // A: 2-3 required; after it, up to B's end_wal: 4, 5, 6, 7.
        'pg 20240101T000000 - Mon Jan  1 00:10:00 2024 - Size: 5.0 KiB - WAL Size: 8.0 KiB - OBSOLETE',
        '',
      ].join('\n'),
    );
    const json = JSON.parse((await cat.run(['-f', 'json', 'list-backup', 'pg'])).stdout) as { pg: Record<string, unknown>[] };
    expect(json.pg[0]).toEqual({ backup_id: '20240104T000000', status: 'FAILED' });
    expect(json.pg[2]).toEqual({
      backup_id: '20240102T000000',
      backup_name: 'monthly',
      end_time: 'Tue Jan  2 00:10:00 2024',
      end_time_timestamp: '1704154200',
      retention_status: 'OBSOLETE',
      size: '5.0 KiB',
      size_bytes: 5096,
      status: 'DONE',
      tablespaces: [{ location: '/srv/tbs1', name: 'tbs1' }],
      wal_size: '8.0 KiB',
      wal_size_bytes: 8192,
    });
    // Without a retention policy nothing is rated.
    const plain = await threeDone({});
    expect((await plain.run(['list-backup', 'pg'])).stdout).not.toMatch(/OBSOLETE|VALID/);
  });

  it('show-backup: shortcuts and names, neighbours, tablespaces, retention, a FAILED backup', async () => {
    const cat = await threeDone();
    const oldest = await cat.run(['show-backup', 'pg', 'oldest']);
    expect(oldest.stdout).toContain('Backup 20240101T000000:\n');
    expect(oldest.stdout).toContain('    Previous Backup      : - (this is the oldest base backup)\n    Next Backup          : 20240102T000000\n');
    const named = await cat.run(['show-backup', 'pg', 'monthly']);
    expect(named.stdout).toContain(
      [
        'Backup 20240102T000000:',
        '  Backup Name            : monthly',
        '  Server Name            : pg',
        '  System Id              : 1',
        '  Status                 : DONE',
        '  PostgreSQL Version     : 150000',
        '  PGDATA directory       : /var/lib/postgresql/data',
        '',
        '  Tablespaces:',
        '    tbs1                 : /srv/tbs1 (oid: 16384)',
        '',
        '  Base backup information:',
        '    Disk usage           : 1000 B (5.0 KiB with WALs)',
        '    Timeline             : 1',
        `    Begin WAL            : ${seg(6)}`,
        `    End WAL              : ${seg(7)}`,
        '    WAL number           : 2',
        '    WAL compression ratio: 99.99%',
      ].join('\n'),
    );
    expect(named.stdout).toContain('    Retention Policy     : OBSOLETE\n    Previous Backup      : 20240101T000000\n    Next Backup          : 20240103T000000\n');
    // Segments 6..11 counted (6 files) between the mtimes of 6 and 11, 360 s apart (the history file sits in between).
    expect(named.stdout).toContain('    No of files          : 4\n    Disk usage           : 8.0 KiB\n    WAL rate             : 60.00/hour\n    Compression ratio    : 99.99%\n');
    const latest = await cat.run(['show-backup', 'pg', 'latest']);
    expect(latest.stdout).toContain('Backup 20240103T000000:\n');
    expect(latest.stdout).toContain('    Retention Policy     : VALID\n');
    expect(latest.stdout).toContain(`    Last available       : ${seg(14)}\n`);
    const failed = await cat.run(['show-backup', 'pg', 'last-failed']);
    expect(failed.stdout).toBe(
      [
        'Backup 20240104T000000:',
        '  Server Name            : pg',
        '  System Id              : 1',
        '  Status                 : FAILED',
        '  Error                  : failure copying files (connection lost)',
        '',
      ].join('\n'),
    );
    expect(JSON.parse((await cat.run(['-f', 'json', 'show-backup', 'pg', 'last-failed'])).stdout)).toEqual({
      pg: { backup_id: '20240104T000000', error: 'failure copying files (connection lost)', status: 'FAILED' },
    });
  });

  it('show-backup: unknown backups, servers and `all` are one clear error each', async () => {
    const cat = await threeDone();
    let r = await cat.run(['show-backup', 'pg', 'nosuchname']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("ERROR: Unknown backup 'nosuchname' for server 'pg': no backup ID, shortcut or backup name matches\n");
    r = await cat.run(['show-backup', 'pg', '20991231T000000']);
    expect(r.stderr).toBe("ERROR: Unknown backup '20991231T000000' for server 'pg': no such backup ID\n");
    r = await cat.run(['show-backup', 'nosuch', 'latest']);
    expect([r.code, r.stderr]).toEqual([1, "ERROR: Unknown server 'nosuch'\n"]);
    r = await cat.run(['show-backup', 'all', 'latest']);
    expect([r.code, r.stderr]).toEqual([1, "ERROR: Unknown server 'all'\n"]);
  });

  it('show-backup warns when later timelines branched off after the backup', async () => {
    const cat = await makeCatalog();
    await addBackup(cat.server, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(2), end_xlog: '0/2000100' }));
    addWals(cat.server, [seg(2), seg(3)]);
    writeFileSync(join(cat.server.paths.walsDirectory, '00000002.history'), '1\t0/3000000\tno recovery target specified\n');
    writeFileSync(join(cat.server.paths.walsDirectory, '00000003.history'), '1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tbefore 2024-01-01\n');
    const r = await cat.run(['show-backup', 'pg', 'latest']);
    // Barman takes every line of 00000003.history as timeline 3, so its record of the 1 -> 2 switch counts too.
    expect(r.stdout).toContain('    Reachable timelines  : 2, 3\n');
    expect(r.stdout.endsWith('\nWARNING: WAL information is inaccurate due to multiple timelines interacting with this backup\n')).toBe(true);
    const json = JSON.parse((await cat.run(['-f', 'json', 'show-backup', 'pg', 'latest'])).stdout) as { pg: { wal_information: { timelines: string[] } } };
    expect(json.pg.wal_information.timelines).toEqual(['2', '3']);
  });

  it('keep: status, full target, refusal to delete, release; only DONE full backups', async () => {
    const cat = await threeDone();
    let r = await cat.run(['keep', 'pg', '20240102T000000']);
    expect([r.code, r.stderr]).toEqual([1, 'ERROR: one of the arguments -r/--release -s/--status --target is required\n']);
    expect((await cat.run(['keep', '--status', 'pg', 'monthly'])).stdout).toBe('Server pg:\n\tKeep: nokeep\n');
    r = await cat.run(['keep', '--target', 'full', 'pg', 'monthly']);
    expect([r.code, r.stdout, r.stderr]).toEqual([0, '', '']);
    expect((await cat.run(['keep', '-s', 'pg', '20240102T000000'])).stdout).toBe('Server pg:\n\tKeep: full\n');
    expect((await cat.run(['-f', 'json', 'keep', '--status', 'pg', 'monthly'])).stdout.trim()).toBe('{"pg":{"keep_status":{"description":"Keep","message":"full"}}}');
    expect((await cat.run(['list-backup', 'pg'])).stdout).toContain("pg 20240102T000000 'monthly' - Tue Jan  2 00:10:00 2024 - Size: 5.0 KiB - WAL Size: 8.0 KiB (tablespaces: tbs1:/srv/tbs1) - KEEP:FULL\n");

    r = await cat.run(['delete', 'pg', 'monthly']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'WARNING: Skipping delete of backup 20240102T000000 for server pg as it has a current keep request. If you really want to delete this backup please remove the keep and try again.\n' +
        'ERROR: Cannot delete backup (pg 20240102T000000)\n',
    );
    expect(await loadBackup(cat.server.paths, '20240102T000000')).not.toBeNull();

    r = await cat.run(['keep', '--release', 'pg', 'monthly']);
    expect([r.code, r.stdout]).toEqual([0, '']);
    expect((await cat.run(['keep', '--status', 'pg', 'monthly'])).stdout).toBe('Server pg:\n\tKeep: nokeep\n');
    r = await cat.run(['keep', '--target', 'standalone', 'pg', 'last-failed']);
    expect([r.code, r.stderr]).toEqual([1, 'ERROR: Cannot add keep to backup 20240104T000000 because it has status FAILED. Only backups with status DONE can be kept.\n']);

    await addBackup(cat.server, '20240103T120000', backupInfo({ begin_wal: seg(12), end_wal: seg(12), parent_backup_id: '20240103T000000' }));
    r = await cat.run(['keep', '--target', 'full', 'pg', '20240103T120000']);
    expect([r.code, r.stderr]).toEqual([
      1,
      'ERROR: Unable to execute the keep command on backup 20240103T120000: is an incremental backup.\nOnly full backups are eligible for the use of the keep command.\n',
    ]);
  });

  it('delete: Barman lines, WAL removed up to the next backup, minimum_redundancy refusal', async () => {
    const cat = await threeDone({ minimum_redundancy: '2' });
    let r = await cat.run(['delete', 'pg', 'oldest']);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines.slice(0, 2)).toEqual(['Deleting backup 20240101T000000 for server pg', 'Delete associated WAL segments:']);
    expect(lines.slice(2, 7)).toEqual([1, 2, 3, 4, 5].map((n) => `\t${seg(n)}`));
    expect(lines[7]).toMatch(/^Deleted backup 20240101T000000 \(start time: .+ \d{4}, elapsed time: less than one second\)$/);
    expect(xlogDbNames(cat.server)).toEqual([...[6, 7, 8, 9].map((n) => seg(n)), '00000002.history', ...[10, 11, 12, 13, 14].map((n) => seg(n))]);

    r = await cat.run(['delete', 'pg', 'oldest']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'WARNING: Skipping delete of backup 20240102T000000 for server pg due to minimum redundancy requirements (minimum redundancy = 2, current redundancy = 2)\n' +
        'ERROR: Cannot delete backup (pg 20240102T000000)\n',
    );
    // -f json collects the messages as Barman does.
    r = await cat.run(['-f', 'json', 'delete', 'pg', 'last-failed']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as { _INFO: string[] };
    expect(doc._INFO[0]).toBe('Deleting backup 20240104T000000 for server pg');
    expect(doc._INFO).toHaveLength(2);
  });

  it('check-backup: WAITING_FOR_WALS becomes DONE; a hole makes it FAILED; FAILED cannot be checked', async () => {
    const cat = await makeCatalog();
    await addBackup(cat.server, '20240101T000000', backupInfo({ status: 'WAITING_FOR_WALS', begin_wal: seg(4), end_wal: seg(5) }));
    await addBackup(cat.server, '20240102T000000', backupInfo({ status: 'WAITING_FOR_WALS', begin_wal: seg(7), end_wal: seg(9) }));
    addWals(cat.server, [seg(4), seg(5), seg(7), seg(9)]);
    let r = await cat.run(['check-backup', 'pg', '20240101T000000']);
    expect([r.code, r.stdout, r.stderr]).toEqual([0, '', '']);
    expect((await loadBackup(cat.server.paths, '20240101T000000'))!.info.status).toBe('DONE');
    r = await cat.run(['check-backup', 'pg', 'latest']);
    expect([r.code, r.stderr]).toEqual([1, `ERROR: This backup has been marked as FAILED due to the following reason: At least one WAL file is missing. The first missing WAL file is ${seg(8)}\n`]);
    expect(readFileSync(metaBackupInfoPath(cat.server.paths, '20240102T000000'), 'utf8')).toContain('status=FAILED\n');
    r = await cat.run(['check-backup', 'pg', '20240102T000000']);
    expect([r.code, r.stderr]).toEqual([1, 'ERROR: The validity of a failed backup cannot be checked\n']);
  });

  it('list-files targets: data, standalone, wal (with history files, up to the next backup), full; meta layout', async () => {
    const cat = await threeDone();
    const p = cat.server.paths;
    const wal = (n: number) => join(p.walsDirectory, '0000000100000000', seg(n));
    const info = metaBackupInfoPath(p, '20240101T000000');
    const data = [info, join(p.basebackupsDirectory, '20240101T000000', 'data', 'PG_VERSION')];
    const lines = async (target: string) => (await cat.run(['list-files', '--target', target, 'pg', 'oldest'])).stdout.trimEnd().split('\n');
    expect(await lines('data')).toEqual(data);
    expect(await lines('standalone')).toEqual([...data, wal(2), wal(3)]);
    // From A's begin_wal to B's end_wal, history files wherever they are in xlog.db.
    const walTarget = [2, 3, 4, 5, 6, 7].map(wal);
    expect(await lines('wal')).toEqual(walTarget);
    expect(await lines('full')).toEqual([...data, ...walTarget]);
    const latest = (await cat.run(['list-files', '--target', 'wal', 'pg', 'latest'])).stdout.trimEnd().split('\n');
    // The newest backup: to the end of the archive, the history file included.
    expect(latest).toEqual([join(p.walsDirectory, '00000002.history'), ...[10, 11, 12, 13, 14].map(wal)]);
    mkdirSync(join(p.basebackupsDirectory, '20240101T000000', 'data', 'pg_tblspc'));
    expect((await cat.run(['list-files', '--target', 'data', '--list-empty-directories', 'pg', 'oldest'])).stdout.trimEnd().split('\n')).toEqual([
      ...data,
      join(p.basebackupsDirectory, '20240101T000000', 'data', 'pg_tblspc'),
    ]);
  });

  it('a backup still being taken is listed with its status and its STARTED line', async () => {
    const cat = await makeCatalog();
    await addBackup(cat.server, '20240101T000000', newBackupInfo({ status: 'STARTED', server_name: 'pg', begin_wal: seg(2) }));
    expect((await cat.run(['list-backup', 'pg'])).stdout).toBe('pg 20240101T000000 - STARTED\n');
    // Shortcuts only see WAITING_FOR_WALS/DONE backups.
    const r = await cat.run(['show-backup', 'pg', 'latest']);
    expect([r.code, r.stderr]).toEqual([1, "ERROR: Unknown backup 'latest' for server 'pg': no backup in status WAITING_FOR_WALS or DONE\n"]);
  });
});
