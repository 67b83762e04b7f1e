// cloud-backup-list, cloud-backup-show and cloud-backup-keep on a crafted bucket:
// what they print, compared byte for byte with barman-cloud 3.4's tools on the same
// bucket when those are installed, and the keep annotation both tools read and write.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { text } from 'node:stream/consumers';
import { pyDict } from '../../src/catalog/python-repr.ts';
import type { ObjectStore } from '../../src/storage/object-store.ts';
import { type S3Server, startS3Server } from '../support/s3-server.ts';
import { BARMAN_CLOUD_INSTALLED, barkeepCloud, barmanCloud, keysUnder, openStore, putBackup } from './catalog-support.ts';

let s3: S3Server;
let store: ObjectStore;
let url: string;
const ids: Record<string, string> = {};

beforeAll(async () => {
  s3 = await startS3Server({ name: 'cloud-catalog' });
  url = `s3://${s3.bucket}/cat`;
  store = await openStore(s3, `${url}/`);
  ids['b1'] = await putBackup(store, 'pg', {
    begin: new Date('2024-03-01T02:00:00Z'),
    beginSegment: 2,
    endSegment: 3,
    name: 'nightly ümlaut',
    keep: 'standalone',
    files: ['data.tar', 'data_0001.tar', '16385.tar'],
    extra: {
      tablespaces: [{ name: 'tbs1', oid: 16385, location: '/srv/tbs1' }],
      copy_stats: pyDict([
        ['copy_time', 12.5],
        ['total_time', 13.25],
        ['analysis_time', 1.5],
        ['number_of_workers', 2n],
      ]),
      included_files: ['/etc/postgresql/15/main/extra.conf'],
    },
  });
  ids['b2'] = await putBackup(store, 'pg', { begin: new Date('2024-03-02T02:00:00Z'), beginSegment: 10, name: "it's", keep: 'full' });
  ids['b3'] = await putBackup(store, 'pg', {
    begin: new Date('2024-03-03T02:00:00Z'),
    beginSegment: 20,
    status: 'FAILED',
    extra: { error: 'failure during backup: connection lost', end_time: null, end_wal: null, end_xlog: null, end_offset: null },
  });
  ids['b4'] = await putBackup(store, 'pg', {
    begin: new Date('2024-03-04T02:00:00Z'),
    beginSegment: 30,
    files: ['data.tar.gz'],
    extra: { begin_time: '2024-03-04 04:00:00.250000+02:00', end_time: '2024-03-04 02:05:00', snapshots_info: null, compression: 'gzip' },
  });
  // A backup.info nobody can read, and an upload in progress (no backup.info yet).
  await store.put('pg/base/20240305T020000/data.tar', 'x');
  await store.put('pg/base/20240305T020000/backup.info', 'this is not a backup.info\n');
  await store.put('pg/base/20240306T020000/data.tar', 'x');
});

afterAll(async () => {
  store?.close();
  await s3?.stop();
});

describe('cloud-backup-list', () => {
  it('lists the DONE backups with their keep status and names, warning about an unreadable backup.info', async () => {
    const r = await barkeepCloud('list', s3, [url, 'pg']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'Backup ID           End Time                 Begin Wal                     Archival Status  Name                ',
        `${ids['b1']}     2024-03-01 02:01:00      000000010000000000000002      KEEP:STANDALONE  nightly ümlaut      `,
        `${ids['b2']}     2024-03-02 02:01:00      00000001000000000000000A      KEEP:FULL        it's                `,
        `${ids['b4']}     2024-03-04 02:05:00      00000001000000000000001E                                           `,
        '',
      ].join('\n'),
    );
    expect(r.stderr).toMatch(/WARNING: Unable to open backup\.info file for 20240305T020000: .*backup\.info:1: expected key=value/);
  });

  it('prints every readable backup as JSON', async () => {
    const r = await barkeepCloud('list', s3, ['--format', 'json', url, 'pg']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as { backups_list: Record<string, unknown>[] };
    expect(doc.backups_list.map((b) => [b['backup_id'], b['status']])).toEqual([
      [ids['b1'], 'DONE'],
      [ids['b2'], 'DONE'],
      [ids['b3'], 'FAILED'],
      [ids['b4'], 'DONE'],
    ]);
    expect(doc.backups_list[0]).toMatchObject({
      backup_name: 'nightly ümlaut',
      begin_time: 'Fri Mar  1 02:00:00 2024',
      tablespaces: [['tbs1', 16385, '/srv/tbs1']],
      copy_stats: { copy_time: 12.5, total_time: 13.25, analysis_time: 1.5, number_of_workers: 2 },
    });
    // Python's json.dumps: spaces after separators, non-ASCII escaped, the label as its repr().
    expect(r.stdout).toContain('"backup_name": "nightly \\u00fcmlaut"');
    expect(r.stdout).toMatch(/"backup_label": "'START WAL LOCATION: 0\/2000028 \(file 000000010000000000000002\)\\\\nCHECKPOINT/);
    expect(r.stdout.endsWith('"backup_id": "20240304T020000"}]}\n')).toBe(true);
  });

  it.runIf(BARMAN_CLOUD_INSTALLED)('prints what barman-cloud-backup-list prints, in both formats', async () => {
    for (const format of ['console', 'json']) {
      const ours = await barkeepCloud('list', s3, ['--format', format, url, 'pg']);
      const theirs = await barmanCloud('list', s3, ['--format', format, url, 'pg']);
      expect(theirs.code).toBe(0);
      expect(theirs.stderr).toContain('Unable to open backup.info file for 20240305T020000');
      expect(ours.stdout).toBe(theirs.stdout);
    }
  });
});

describe('cloud-backup-show', () => {
  it('shows a DONE backup with its tablespaces and copy statistics', async () => {
    const r = await barkeepCloud('show', s3, [url, 'pg', ids['b1']!]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        `Backup ${ids['b1']}:`,
        '  Backup Name            : nightly ümlaut',
        '  Server Name            : cloud',
        '  System Id              : 7410563741105637411',
        '  Status                 : DONE',
        '  PostgreSQL Version     : 150004',
        '  PGDATA directory       : /var/lib/postgresql/15/main',
        '',
        '  Tablespaces:',
        '    tbs1                 : /srv/tbs1 (oid: 16385)',
        '',
        '  Base backup information:',
        '    Timeline             : 1',
        '    Begin WAL            : 000000010000000000000002',
        '    End WAL              : 000000010000000000000003',
        '    Begin time           : 2024-03-01 02:00:00+00:00',
        '    End time             : 2024-03-01 02:01:00+00:00',
        '    Copy time            : 12 seconds + 1 second startup',
        '    Begin Offset         : 40',
        '    End Offset           : 312',
        '    Begin LSN            : 0/2000028',
        '    End LSN              : 0/3000028',
        '',
        '',
      ].join('\n'),
    );
  });

  it('resolves shortcuts and names', async () => {
    const expectShown = async (idOrName: string, id: string) => {
      const r = await barkeepCloud('show', s3, ['--format', 'json', url, 'pg', idOrName]);
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as Record<string, { backup_id: string }>)['cloud']!.backup_id).toBe(id);
    };
    await expectShown('last', ids['b4']!);
    await expectShown('latest', ids['b4']!);
    await expectShown('first', ids['b1']!);
    await expectShown('oldest', ids['b1']!);
    await expectShown('last-failed', ids['b3']!);
    await expectShown("it's", ids['b2']!);
    const unknown = await barkeepCloud('show', s3, [url, 'pg', 'no-such-name']);
    expect(unknown.code).toBe(4);
    expect(unknown.stderr).toContain("Unknown backup 'no-such-name' for server 'pg'");
    const missing = await barkeepCloud('show', s3, [url, 'pg', '20990101T000000']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('Backup 20990101T000000 for server pg does not exist');
  });

  it.runIf(BARMAN_CLOUD_INSTALLED)('prints what barman-cloud-backup-show prints, in both formats', async () => {
    for (const id of [ids['b1']!, ids['b3']!, ids['b4']!, "it's"]) {
      for (const format of ['console', 'json']) {
        const ours = await barkeepCloud('show', s3, ['--format', format, url, 'pg', id]);
        const theirs = await barmanCloud('show', s3, ['--format', format, url, 'pg', id]);
        expect(theirs.code, theirs.stderr).toBe(0);
        expect(ours.stdout, `${id} ${format}`).toBe(theirs.stdout);
      }
    }
  });
});

describe('cloud-backup-keep', () => {
  it('writes, reads and releases the annotation as barman-cloud does', async () => {
    const id = ids['b4']!;
    const keep = (args: string[]) => barkeepCloud('keep', s3, [...args, url, 'pg', id]);
    expect((await keep(['-s'])).stdout).toBe('Keep: nokeep\n');
    expect((await keep(['--target', 'standalone'])).code).toBe(0);
    expect(await text(await store.get(`pg/base/${id}/annotations/keep`))).toBe('standalone');
    expect((await keep(['-s'])).stdout).toBe('Keep: standalone\n');
    if (BARMAN_CLOUD_INSTALLED) {
      expect((await barmanCloud('keep', s3, ['-s', url, 'pg', id])).stdout).toBe('Keep: standalone\n');
      expect((await barmanCloud('keep', s3, ['--target', 'full', url, 'pg', id])).code).toBe(0);
      expect((await keep(['-s'])).stdout).toBe('Keep: full\n');
    }
    expect((await keep(['-r'])).code).toBe(0);
    expect((await keep(['-s'])).stdout).toBe('Keep: nokeep\n');
    expect(await keysUnder(store, `pg/base/${id}/`)).toEqual([`pg/base/${id}/backup.info`, `pg/base/${id}/data.tar.gz`]);
    if (BARMAN_CLOUD_INSTALLED) expect((await barmanCloud('keep', s3, ['-s', url, 'pg', id])).stdout).toBe('Keep: nokeep\n');
  });

  it('keeps only DONE backups and needs one of -r, -s, --target', async () => {
    const failed = await barkeepCloud('keep', s3, ['--target', 'full', url, 'pg', ids['b3']!]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain(`Cannot add keep to backup ${ids['b3']} because it has status FAILED. Only backups with status DONE can be kept.`);
    const none = await barkeepCloud('keep', s3, [url, 'pg', ids['b3']!]);
    expect(none.code).toBe(3);
    const missing = await barkeepCloud('keep', s3, ['--target', 'full', url, 'pg', '20990101T000000']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('Backup 20990101T000000 for server pg does not exist');
  });
});

describe('connection', () => {
  it('-t checks the connection only; a missing bucket is an operation error', async () => {
    expect((await barkeepCloud('list', s3, ['-t', url, 'pg'])).code).toBe(0);
    expect((await barkeepCloud('list', s3, ['-t', 's3://no-such-bucket/x', 'pg'])).code).toBe(0);
    const missing = await barkeepCloud('list', s3, ['s3://no-such-bucket/x', 'pg']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('ERROR: Bucket no-such-bucket does not exist\n');
  });
});
