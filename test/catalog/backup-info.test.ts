import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BACKUP_STATUSES,
  BackupInfoParseError,
  backupType,
  formatBackupInfo,
  formatBackupTime,
  newBackupInfo,
  parseBackupInfo,
  parseBackupTime,
  readBackupInfo,
  writeBackupInfo,
} from '../../src/catalog/backup-info.ts';
import { PyTuple, pyDict } from '../../src/catalog/python-repr.ts';
import { BARMAN_317_BACKUP_INFO, BARMAN_34_BACKUP_INFO } from './fixtures/barman-samples.ts';

const FILE = '/srv/barman/pg/meta/20240901T103000-backup.info';

describe('real Barman files round-trip byte for byte', () => {
  it('Barman 3.4.0 backup.info (fewer fields than 3.17)', () => {
    const { info, warnings } = parseBackupInfo(BARMAN_34_BACKUP_INFO, FILE);
    expect(warnings).toEqual([]);
    expect(formatBackupInfo(info)).toBe(BARMAN_34_BACKUP_INFO);
  });

  it('Barman 3.17 representative backup.info', () => {
    const { info, warnings } = parseBackupInfo(BARMAN_317_BACKUP_INFO, FILE);
    expect(warnings).toEqual([]);
    expect(info.absentFields).toBeUndefined();
    expect(formatBackupInfo(info)).toBe(BARMAN_317_BACKUP_INFO);
  });

  it('types the 3.4 fields', () => {
    const { info } = parseBackupInfo(BARMAN_34_BACKUP_INFO, FILE);
    expect(info.status).toBe('DONE');
    expect(info.begin_offset).toBe(40);
    expect(info.size).toBe(23421807);
    expect(info.version).toBe(150018);
    expect(info.systemid).toBe('7710654326454156009');
    expect(info.tablespaces).toBeNull();
    expect(info.compression).toBeNull();
    expect(info.backup_label).toBe(
      'START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\nCHECKPOINT LOCATION: 0/4000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-21 16:05:01 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n',
    );
    expect(info.copy_stats?.get('copy_time')).toBe(8.116391);
    expect(info.begin_time).toBe('2026-11-21 16:04:55.004057+00:00');
    expect(parseBackupTime(info.begin_time ?? '')?.toISOString()).toBe('2026-11-21T16:04:55.004Z');
    expect(info.backup_name).toBeNull();
    expect(info.parent_backup_id).toBeNull();
    expect(backupType(info)).toBe('full');
  });

  it('types the 3.17 fields', () => {
    const { info } = parseBackupInfo(BARMAN_317_BACKUP_INFO, FILE);
    expect(info.tablespaces).toEqual([{ name: 'tbs1', oid: 16384, location: '/srv/tbs1' }]);
    expect(info.cluster_size).toBe(31457280);
    expect(info.data_checksums).toBe('on');
    expect(info.copy_stats?.get('number_of_workers')).toBe(1n);
    expect(backupType(info)).toBe('rsync');
  });
});

describe('formatBackupInfo', () => {
  it('writes every 3.17 field alphabetically, None when unset, hiding backup_name and snapshots_info', () => {
    const text = formatBackupInfo(newBackupInfo({ server_name: 'pg' }));
    const keys = text.trimEnd().split('\n').map((l) => l.split('=')[0]);
    expect(keys).toEqual([...keys].sort());
    expect(keys).toHaveLength(33);
    expect(keys).not.toContain('backup_name');
    expect(keys).not.toContain('snapshots_info');
    expect(text).toContain('status=EMPTY\n');
    expect(text).toContain('xlog_segment_size=16777216\n');
    expect(text).toContain('tablespaces=None\n');
    expect(text).toContain('server_name=pg\n');
  });

  it("serialises structured fields exactly like Barman's repr()", () => {
    const info = newBackupInfo({
      backup_name: 'nightly',
      tablespaces: [
        { name: 'tbs1', oid: 16384, location: '/srv/tbs1' },
        { name: "o'brien", oid: 16385, location: '/srv/tbs 2' },
      ],
      copy_stats: pyDict({ copy_time: 8.116391, total_time: 9, number_of_workers: 2n }),
      included_files: ['/etc/pg/extra.conf'],
      children_backup_ids: ['20240902T103000', '20240903T103000'],
      backup_label: "LABEL: it's\n",
    });
    const text = formatBackupInfo(info);
    expect(text).toContain(`tablespaces=[('tbs1', 16384, '/srv/tbs1'), ("o'brien", 16385, '/srv/tbs 2')]\n`);
    expect(text).toContain("copy_stats={'copy_time': 8.116391, 'total_time': 9.0, 'number_of_workers': 2}\n");
    expect(text).toContain("included_files=['/etc/pg/extra.conf']\n");
    expect(text).toContain('children_backup_ids=20240902T103000,20240903T103000\n');
    expect(text).toContain(`backup_label="LABEL: it's\\n"\n`);
    expect(text).toContain('backup_name=nightly\n');
    // And it reads back to the same thing.
    expect(formatBackupInfo(parseBackupInfo(text, FILE).info)).toBe(text);
  });

  it('writes empty collections as None, as null_repr() does', () => {
    const text = formatBackupInfo(newBackupInfo({ tablespaces: [], copy_stats: new Map(), included_files: [], backup_label: '' }));
    for (const key of ['tablespaces', 'copy_stats', 'included_files', 'backup_label']) expect(text).toContain(`${key}=None\n`);
  });

  it('keeps a line break in a raw field from splitting the record', () => {
    const text = formatBackupInfo(newBackupInfo({ status: 'FAILED', error: 'failure copy (line one\nline two)' }));
    expect(text).toContain('error=failure copy (line one line two)\n');
    expect(parseBackupInfo(text, FILE).info.error).toBe('failure copy (line one line two)');
  });

  it('writes a field that was absent from the file once it gets a value', () => {
    const { info } = parseBackupInfo(BARMAN_34_BACKUP_INFO, FILE);
    const text = formatBackupInfo({ ...info, status: 'FAILED', children_backup_ids: ['20261122T000000'] });
    expect(text).toContain('children_backup_ids=20261122T000000\n');
    expect(text).toContain('status=FAILED\n');
    expect(text).not.toContain('cluster_size');
  });
});

describe('parseBackupInfo tolerance and errors', () => {
  it('ignores blank lines and comments and splits on the first =', () => {
    const { info } = parseBackupInfo('# written by hand\n\n  status = DONE  \nerror=failure x (a=b)\n', FILE);
    expect(info.status).toBe('DONE');
    expect(info.error).toBe('failure x (a=b)');
  });

  it('keeps unknown keys, warns about them, and writes them back in order', () => {
    const text = `${BARMAN_317_BACKUP_INFO.replace('begin_offset=', 'backup_method=spicy\nbegin_offset=')}zz_future={'a': 1}\n`;
    const { info, warnings } = parseBackupInfo(text, FILE);
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/meta\/20240901T103000-backup\.info:2: unknown field 'backup_method'/);
    expect(info.unknownFields).toEqual({ backup_method: 'spicy', zz_future: "{'a': 1}" });
    expect(formatBackupInfo(info)).toBe(text);
  });

  const bad: [string, RegExp][] = [
    ['status=DONE\njust words\n', /backup\.info:2: expected key=value, found "just words"/],
    ['size=12kB\n', /backup\.info:1: size: expected an integer, found "12kB"/],
    ['status=FINISHED\n', /backup\.info:1: status: expected one of EMPTY, STARTED, WAITING_FOR_WALS, DONE, SYNCING, FAILED/],
    ["tablespaces=[('tbs1', '16384', '/srv')]\n", /backup\.info:1: tablespaces: expected a list of \('name', oid, '\/location'\) tuples/],
    ["copy_stats={'copy_time': 1.0\n", /backup\.info:1: copy_stats: invalid Python literal: expected ',' or '}' at column/],
    ['backup_label=START WAL\n', /backup\.info:1: backup_label: invalid Python literal/],
    ['=x\n', /backup\.info:1: expected a field name/],
  ];
  it.each(bad)('rejects %j', (text, message) => {
    expect(() => parseBackupInfo(text, FILE)).toThrow(BackupInfoParseError);
    expect(() => parseBackupInfo(text, FILE)).toThrow(message);
  });

  it('does not treat a key named __proto__ specially', () => {
    const { info } = parseBackupInfo('__proto__=x\nstatus=DONE\n', FILE);
    expect(info.unknownFields?.['__proto__']).toBe('x');
    expect(formatBackupInfo(info)).toContain('__proto__=x\n');
  });
});

describe('derived values', () => {
  it('backupType follows Barman', () => {
    expect(backupType({ mode: 'snapshot-concurrent', parent_backup_id: null })).toBe('snapshot');
    expect(backupType({ mode: 'rsync-exclusive', parent_backup_id: null })).toBe('rsync');
    expect(backupType({ mode: 'postgres', parent_backup_id: '20240901T103000' })).toBe('incremental');
    expect(backupType({ mode: 'postgres', parent_backup_id: null })).toBe('full');
    expect(backupType({ mode: null, parent_backup_id: null })).toBe('full');
  });

  it('lists the statuses Barman knows', () => {
    expect(BACKUP_STATUSES).toEqual(['EMPTY', 'STARTED', 'WAITING_FOR_WALS', 'DONE', 'SYNCING', 'FAILED']);
  });

  it('formats timestamps as Python str(datetime)', () => {
    const d = new Date('2024-09-01T10:30:00.561Z');
    expect(formatBackupTime(d, { microseconds: 561207 })).toBe('2024-09-01 10:30:00.561207+00:00');
    expect(formatBackupTime(new Date('2024-09-01T10:30:00Z'))).toBe('2024-09-01 10:30:00+00:00');
    expect(formatBackupTime(d, { offsetMinutes: 120 })).toBe('2024-09-01 12:30:00.561000+02:00');
    expect(parseBackupTime('2024-09-01 12:30:00.561000+02:00')?.getTime()).toBe(d.getTime());
    expect(parseBackupTime('yesterday')).toBeNull();
  });
});

describe('readBackupInfo / writeBackupInfo', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'barkeep-backup-info-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes durably into a new meta/ directory and reads back, leaving no temp file', async () => {
    const path = join(dir, 'meta', '20261121T160454-backup.info');
    const { info } = parseBackupInfo(BARMAN_34_BACKUP_INFO, 'sample');
    await writeBackupInfo(path, info);
    expect(await readFile(path, 'utf8')).toBe(BARMAN_34_BACKUP_INFO);
    expect(await readdir(join(dir, 'meta'))).toEqual(['20261121T160454-backup.info']);
    const back = await readBackupInfo(path);
    expect(back.info.copy_stats?.get('total_time')).toBe(8.116391);
  });

  it('names the file in parse errors', async () => {
    const path = join(dir, 'broken-backup.info');
    await writeFile(path, 'status=DONE\nsize=big\n');
    await expect(readBackupInfo(path)).rejects.toThrow(`${path}:2: size: expected an integer`);
  });

  it('PyTuple stays a tuple through copy_stats', () => {
    const { info } = parseBackupInfo("copy_stats={'x': (1,)}\n", FILE);
    expect(info.copy_stats?.get('x')).toBeInstanceOf(PyTuple);
    expect(formatBackupInfo(info)).toBe("copy_stats={'x': (1,)}\n");
  });
});
