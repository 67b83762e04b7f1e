import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BackupInfo, type BackupStatus, formatBackupInfo, newBackupInfo, writeBackupInfo } from '../../src/catalog/backup-info.ts';
import {
  BackupNotFoundError,
  listBackups,
  loadBackup,
  readKeepAnnotation,
  removeKeepAnnotation,
  resolveBackupId,
  writeKeepAnnotation,
} from '../../src/catalog/catalog.ts';
import { createServerLayout, keepAnnotationPath, metaBackupInfoPath, type ServerPaths } from '../../src/catalog/layout.ts';
import { BARMAN_34_BACKUP_INFO } from './fixtures/barman-samples.ts';
import { makeScratchDir, serverPaths } from './support.ts';

let home: string;
beforeAll(async () => {
  home = await makeScratchDir('catalog');
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

function entry(backupId: string, status: BackupStatus, extra: Partial<BackupInfo> = {}) {
  return { backupId, info: newBackupInfo({ status, mode: 'postgres', ...extra }) };
}

async function writeLegacy(paths: ServerPaths, id: string, text: string): Promise<void> {
  await mkdir(join(paths.basebackupsDirectory, id), { recursive: true });
  await writeFile(join(paths.basebackupsDirectory, id, 'backup.info'), text);
}

describe('listBackups', () => {
  it('unions meta/ and legacy base/<id>/ files, meta winning, sorted by ID', async () => {
    const paths = serverPaths(home, 'mixed');
    await createServerLayout(paths);
    await writeLegacy(paths, '20261121T160454', BARMAN_34_BACKUP_INFO);
    await writeLegacy(paths, '20240101T000000', formatBackupInfo(newBackupInfo({ status: 'DONE', backup_name: 'old-legacy' })));
    // Both locations for one backup: Barman reads the meta/ copy.
    await writeLegacy(paths, '20250101T000000', formatBackupInfo(newBackupInfo({ status: 'STARTED' })));
    await writeBackupInfo(metaBackupInfoPath(paths, '20250101T000000'), newBackupInfo({ status: 'DONE' }));
    await writeBackupInfo(metaBackupInfoPath(paths, '20240601T000000'), newBackupInfo({ status: 'FAILED' }));
    // Not backups: a temp file, a data directory without backup.info, stray files.
    await writeFile(join(paths.backupDirectory, 'meta', '.20240701T000000-backup.info.tmp-1-ab'), 'status=DONE\n');
    await writeFile(join(paths.backupDirectory, 'meta', '20240601T000000-keep'), 'full');
    await mkdir(join(paths.basebackupsDirectory, '20240801T000000', 'data'), { recursive: true });

    const catalog = await listBackups(paths);
    expect(catalog.errors).toEqual([]);
    expect(catalog.backups.map((b) => [b.backupId, b.info.status, b.legacy])).toEqual([
      ['20240101T000000', 'DONE', true],
      ['20240601T000000', 'FAILED', false],
      ['20250101T000000', 'DONE', false],
      ['20261121T160454', 'DONE', true],
    ]);
    expect(catalog.backups[3]?.infoPath).toBe(join(paths.basebackupsDirectory, '20261121T160454', 'backup.info'));
  });

  it('reports an unreadable backup.info without hiding the others', async () => {
    const paths = serverPaths(home, 'damaged');
    await createServerLayout(paths);
    await writeBackupInfo(metaBackupInfoPath(paths, '20240101T000000'), newBackupInfo({ status: 'DONE' }));
    await writeFile(metaBackupInfoPath(paths, '20240102T000000'), 'status=DONE\nsize=lots\n');
    const catalog = await listBackups(paths);
    expect(catalog.backups.map((b) => b.backupId)).toEqual(['20240101T000000']);
    expect(catalog.errors).toEqual([
      { path: metaBackupInfoPath(paths, '20240102T000000'), message: `${metaBackupInfoPath(paths, '20240102T000000')}:2: size: expected an integer, found "lots"` },
    ]);
  });

  it('is empty for a server that has no directories yet', async () => {
    expect(await listBackups(serverPaths(home, 'never-created'))).toEqual({ backups: [], errors: [], warnings: [] });
  });

  it('loads one backup, preferring meta/', async () => {
    const paths = serverPaths(home, 'mixed');
    expect((await loadBackup(paths, '20250101T000000'))?.info.status).toBe('DONE');
    expect((await loadBackup(paths, '20261121T160454'))?.legacy).toBe(true);
    expect(await loadBackup(paths, '20000101T000000')).toBeNull();
  });
});

describe('resolveBackupId', () => {
  const backups = [
    entry('20240105T000000', 'DONE', { mode: 'postgres', parent_backup_id: '20240104T000000' }), // incremental
    entry('20240101T000000', 'FAILED'),
    entry('20240102T000000', 'DONE', { backup_name: 'monthly' }),
    entry('20240103T000000', 'FAILED', { backup_name: 'broken' }),
    entry('20240104T000000', 'WAITING_FOR_WALS', { mode: 'rsync-concurrent', backup_name: 'dup' }),
    entry('20240106T000000', 'STARTED'),
    entry('20240107T000000', 'FAILED'),
    entry('20231231T000000', 'DONE', { backup_name: 'dup' }),
  ];
  const id = (query: string) => resolveBackupId(backups, query, 'pg').backupId;

  it('latest/last and oldest/first consider only WAITING_FOR_WALS and DONE backups', () => {
    expect(id('latest')).toBe('20240105T000000');
    expect(id('last')).toBe('20240105T000000');
    expect(id('oldest')).toBe('20231231T000000');
    expect(id('first')).toBe('20231231T000000');
  });

  it('last-full skips incremental and snapshot backups but counts rsync ones', () => {
    expect(id('last-full')).toBe('20240104T000000');
    expect(id('latest-full')).toBe('20240104T000000');
  });

  it('last-failed is the newest FAILED backup', () => {
    expect(id('last-failed')).toBe('20240107T000000');
  });

  it('an exact ID resolves whatever its status', () => {
    expect(id('20240106T000000')).toBe('20240106T000000');
    expect(id('20240101T000000')).toBe('20240101T000000');
  });

  it('resolves backup names', () => {
    expect(id('monthly')).toBe('20240102T000000');
  });

  it('explains what did not match', () => {
    expect(() => id('20990101T000000')).toThrow(BackupNotFoundError);
    expect(() => id('20990101T000000')).toThrow("Unknown backup '20990101T000000' for server 'pg': no such backup ID");
    expect(() => id('weekly')).toThrow("Unknown backup 'weekly' for server 'pg': no backup ID, shortcut or backup name matches");
    expect(() => id('broken')).toThrow(/the backup named 'broken' is not in status WAITING_FOR_WALS or DONE/);
    expect(() => id('dup')).toThrow(
      "Multiple backups found matching name 'dup' for server 'pg' (try using backup ID instead): 20231231T000000 20240104T000000",
    );
  });

  it('explains an empty catalog', () => {
    const onlyFailed = [entry('20240101T000000', 'FAILED')];
    expect(() => resolveBackupId(onlyFailed, 'latest', 'pg')).toThrow("Unknown backup 'latest' for server 'pg': no backup in status WAITING_FOR_WALS or DONE");
    expect(() => resolveBackupId([], 'last-failed')).toThrow("Unknown backup 'last-failed': no FAILED backup");
    expect(() => resolveBackupId([entry('20240101T000000', 'DONE', { mode: 'snapshot-concurrent' })], 'last-full')).toThrow(/no full backup/);
  });
});

describe('keep annotations', () => {
  it('reads meta/<id>-keep, falls back to base/<id>/annotations/keep, and writes to meta/', async () => {
    const paths = serverPaths(home, 'keep');
    await createServerLayout(paths);
    const id = '20240101T000000';
    expect(await readKeepAnnotation(paths, id)).toBeNull();

    await mkdir(join(paths.basebackupsDirectory, id, 'annotations'), { recursive: true });
    await writeFile(join(paths.basebackupsDirectory, id, 'annotations', 'keep'), 'standalone');
    expect(await readKeepAnnotation(paths, id)).toBe('standalone');

    await writeKeepAnnotation(paths, id, 'full');
    expect(await readFile(keepAnnotationPath(paths, id), 'utf8')).toBe('full');
    expect(await readKeepAnnotation(paths, id)).toBe('full');

    expect(await removeKeepAnnotation(paths, id)).toBe(true);
    expect(await readKeepAnnotation(paths, id)).toBeNull();
    expect(await removeKeepAnnotation(paths, id)).toBe(false);
  });

  it('rejects an unknown keep target, naming the file', async () => {
    const paths = serverPaths(home, 'keep');
    await writeFile(keepAnnotationPath(paths, '20240202T000000'), 'forever\n');
    await expect(readKeepAnnotation(paths, '20240202T000000')).rejects.toThrow(
      `${keepAnnotationPath(paths, '20240202T000000')}: expected keep target 'full' or 'standalone', found "forever"`,
    );
  });
});
