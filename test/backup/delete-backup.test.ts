import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { deleteBackup, type DeleteMessages, purgeWalBefore, shouldRemoveWals } from '../../src/backup/delete-backup.ts';
import { keepsWal } from '../../src/backup/wal-removal.ts';
import { cloudKeepFrom, emptyCloudTierState, writeCloudTierState } from '../../src/cloud/tier-state.ts';
import { newBackupInfo } from '../../src/catalog/backup-info.ts';
import { listBackups, loadBackup } from '../../src/catalog/catalog.ts';
import { deleteAnnotationPath, metaBackupInfoPath } from '../../src/catalog/layout.ts';
import { serverLockPath, tryAcquireLock } from '../../src/catalog/locks.ts';
import { addBackup, addWals, backupInfo, makeCatalog, seg, walFilesOnDisk, xlogDbNames } from './catalog-support.ts';

// Deleting backups from crafted catalogs: which WAL files and xlog.db lines remain
// (Barman's should_remove_wals / remove_wal_before_backup), refusals, incremental
// trees, and the first-backup purge.

function recorder(): DeleteMessages & { lines: string[] } {
  const lines: string[] = [];
  return { lines, info: (l) => lines.push(l), warning: (l) => lines.push(`WARNING: ${l}`), error: (l) => lines.push(`ERROR: ${l}`) };
}

/** Three DONE backups on timeline 1: A (segments 2-3), B (6-7), C (10-11); WAL 1..12, a label, a history file. */
async function threeBackups(settings: Record<string, string> = {}) {
  const cat = await makeCatalog(settings);
  const { server } = cat;
  await addBackup(server, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(3) }));
  await addBackup(server, '20240102T000000', backupInfo({ begin_wal: seg(6), end_wal: seg(7) }));
  await addBackup(server, '20240103T000000', backupInfo({ begin_wal: seg(10), end_wal: seg(11) }));
  addWals(server, [seg(1), seg(2), `${seg(2)}.00000028.backup`, seg(3), seg(4), seg(5), '00000002.history', seg(6), seg(7), seg(8), seg(9), seg(10), seg(11), seg(12)]);
  return cat;
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => seg(from + i));

describe('deleteBackup', () => {
  it('oldest backup: removes the WAL before the next backup, keeps history files, rewrites xlog.db', async () => {
    const { server } = await threeBackups();
    const out = recorder();
    expect(await deleteBackup(server, '20240101T000000', { messages: out })).toBe(true);
    expect(out.lines.slice(0, -1)).toEqual([
      'Deleting backup 20240101T000000 for server pg',
      'Delete associated WAL segments:',
      `\t${seg(1)}`,
      `\t${seg(2)}`,
      `\t${seg(2)}.00000028.backup`,
      `\t${seg(3)}`,
      `\t${seg(4)}`,
      `\t${seg(5)}`,
    ]);
    expect(out.lines.at(-1)).toMatch(/^Deleted backup 20240101T000000 \(start time: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}, elapsed time: less than one second\)$/);
    expect(xlogDbNames(server)).toEqual(['00000002.history', ...range(6, 12)]);
    expect(walFilesOnDisk(server)).toEqual(['00000002.history', ...range(6, 12)].sort());
    // Data, annotation and backup.info are gone; the other backups are untouched.
    expect(existsSync(join(server.paths.basebackupsDirectory, '20240101T000000'))).toBe(false);
    expect(existsSync(metaBackupInfoPath(server.paths, '20240101T000000'))).toBe(false);
    expect(existsSync(deleteAnnotationPath(server.paths, '20240101T000000'))).toBe(false);
    expect((await listBackups(server.paths)).backups.map((b) => b.backupId)).toEqual(['20240102T000000', '20240103T000000']);
    expect(existsSync(serverLockPath(server.paths.lockDirectory, 'pg', '20240101T000000'))).toBe(false);
  });

  it('a backup with an older one: no WAL removed (it serves point-in-time recovery from the older backup)', async () => {
    const { server } = await threeBackups();
    const out = recorder();
    expect(await deleteBackup(server, '20240102T000000', { messages: out })).toBe(true);
    expect(out.lines[0]).toBe('Deleting backup 20240102T000000 for server pg');
    expect(out.lines).toHaveLength(2);
    expect(out.lines[1]).toMatch(/^Deleted backup 20240102T000000 /);
    expect(xlogDbNames(server)).toHaveLength(14);
  });

  it('the only backup left: keeps the WAL from its own begin_wal (concurrent backup), or removes all with exclusive_backup', async () => {
    const { server } = await makeCatalog();
    await addBackup(server, '20240101T000000', backupInfo({ begin_wal: seg(4), end_wal: seg(5) }));
    addWals(server, range(2, 7));
    const out = recorder();
    expect(await deleteBackup(server, '20240101T000000', { messages: out })).toBe(true);
    expect(out.lines.slice(1, 4)).toEqual(['Delete associated WAL segments:', `\t${seg(2)}`, `\t${seg(3)}`]);
    expect(xlogDbNames(server)).toEqual(range(4, 7));

    const exclusive = (await makeCatalog({ backup_options: 'exclusive_backup' })).server;
    await addBackup(exclusive, '20240101T000000', backupInfo({ begin_wal: seg(4), end_wal: seg(5) }));
    addWals(exclusive, [...range(2, 7), '00000001.history']);
    expect(await deleteBackup(exclusive, '20240101T000000', { messages: recorder() })).toBe(true);
    expect(xlogDbNames(exclusive)).toEqual(['00000001.history']);
    expect(walFilesOnDisk(exclusive)).toEqual(['00000001.history']);
    // The hash directory emptied by the removal is gone too.
    expect(existsSync(join(exclusive.paths.walsDirectory, '0000000100000000'))).toBe(false);
  });

  it('removes a whole hash directory when all of it goes, file by file otherwise', async () => {
    const { server } = await makeCatalog();
    await addBackup(server, '20240101T000000', backupInfo({ begin_wal: seg(250), end_wal: seg(250) }));
    await addBackup(server, '20240102T000000', backupInfo({ begin_wal: seg(258), end_wal: seg(259) }));
    addWals(server, range(250, 260));
    expect(await deleteBackup(server, '20240101T000000', { messages: recorder() })).toBe(true);
    expect(existsSync(join(server.paths.walsDirectory, '0000000100000000'))).toBe(false);
    expect(xlogDbNames(server)).toEqual(range(258, 260));
    expect(walFilesOnDisk(server)).toEqual(range(258, 260));
    expect(existsSync(join(server.paths.walsDirectory, '0000000100000001'))).toBe(true);
  });

  it('refuses a kept backup and minimum_redundancy violations with Barman messages, changing nothing', async () => {
    const { server } = await threeBackups({ minimum_redundancy: '3' });
    const out = recorder();
    expect(await deleteBackup(server, '20240101T000000', { messages: out })).toBe(false);
    expect(out.lines).toEqual([
      'WARNING: Skipping delete of backup 20240101T000000 for server pg due to minimum redundancy requirements (minimum redundancy = 3, current redundancy = 3)',
    ]);

    const kept = (await makeCatalog()).server;
    await addBackup(kept, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(3) }), 'full');
    const out2 = recorder();
    expect(await deleteBackup(kept, '20240101T000000', { messages: out2 })).toBe(false);
    expect(out2.lines).toEqual([
      'WARNING: Skipping delete of backup 20240101T000000 for server pg as it has a current keep request. If you really want to delete this backup please remove the keep and try again.',
    ]);
    expect(await loadBackup(kept.paths, '20240101T000000')).not.toBeNull();
    expect(xlogDbNames(server)).toHaveLength(14);
  });

  it('minimum_redundancy counts DONE full backups only; non-DONE backups can always go', async () => {
    const { server } = await makeCatalog({ minimum_redundancy: '1' });
    await addBackup(server, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(3), children_backup_ids: ['20240101T120000'] }));
    await addBackup(server, '20240101T120000', backupInfo({ begin_wal: seg(5), end_wal: seg(5), parent_backup_id: '20240101T000000' }));
    await addBackup(server, '20240102T000000', backupInfo({ status: 'FAILED', begin_wal: seg(6), end_wal: null }));
    const out = recorder();
    expect(await deleteBackup(server, '20240101T000000', { messages: out })).toBe(false);
    expect(out.lines[0]).toContain('(minimum redundancy = 1, current redundancy = 1)');
    expect(await deleteBackup(server, '20240102T000000', { messages: recorder() })).toBe(true);
    // An incremental backup is not subject to minimum_redundancy; its parent forgets it.
    expect(await deleteBackup(server, '20240101T120000', { messages: recorder() })).toBe(true);
    expect((await loadBackup(server.paths, '20240101T000000'))!.info.children_backup_ids).toBeNull();
  });

  it('deletes an incremental tree children first, with a warning', async () => {
    const { server } = await makeCatalog();
    await addBackup(server, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(2), children_backup_ids: ['20240101T060000'] }));
    await addBackup(server, '20240101T060000', backupInfo({ begin_wal: seg(4), end_wal: seg(4), parent_backup_id: '20240101T000000', children_backup_ids: ['20240101T120000'] }));
    await addBackup(server, '20240101T120000', backupInfo({ begin_wal: seg(6), end_wal: seg(6), parent_backup_id: '20240101T060000' }));
    await addBackup(server, '20240102T000000', backupInfo({ begin_wal: seg(8), end_wal: seg(8) }));
    addWals(server, range(1, 9));
    const out = recorder();
    expect(await deleteBackup(server, '20240101T000000', { messages: out })).toBe(true);
    expect(out.lines[0]).toBe('WARNING: Backup 20240101T000000 has incremental backups which depend on it. Deleting all backups in the tree');
    expect(out.lines.filter((l) => l.startsWith('Deleting backup'))).toEqual([
      'Deleting backup 20240101T120000 for server pg',
      'Deleting backup 20240101T060000 for server pg',
      'Deleting backup 20240101T000000 for server pg',
    ]);
    expect((await listBackups(server.paths)).backups.map((b) => b.backupId)).toEqual(['20240102T000000']);
    // Only the root had no predecessor: its removal cut the WAL before the next backup.
    expect(xlogDbNames(server)).toEqual(range(8, 9));
  });

  it('keep:standalone predecessors: an explicit delete keeps all WAL; retention keeps only their ranges', async () => {
    const explicit = (await makeCatalog()).server;
    await addBackup(explicit, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(3) }), 'standalone');
    await addBackup(explicit, '20240102T000000', backupInfo({ begin_wal: seg(6), end_wal: seg(7) }));
    await addBackup(explicit, '20240103T000000', backupInfo({ begin_wal: seg(10), end_wal: seg(11) }));
    addWals(explicit, [...range(1, 5), `${seg(2)}.00000028.backup`, ...range(6, 12)]);
    const out = recorder();
    expect(await deleteBackup(explicit, '20240102T000000', { messages: out })).toBe(true);
    expect(out.lines).not.toContain('Delete associated WAL segments:');
    expect(xlogDbNames(explicit)).toHaveLength(13);

    const retention = (await makeCatalog()).server;
    await addBackup(retention, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(3) }), 'standalone');
    await addBackup(retention, '20240102T000000', backupInfo({ begin_wal: seg(6), end_wal: seg(7) }));
    await addBackup(retention, '20240103T000000', backupInfo({ begin_wal: seg(10), end_wal: seg(11) }));
    addWals(retention, [...range(1, 5), `${seg(2)}.00000028.backup`, ...range(6, 12)]);
    const out2 = recorder();
    expect(await deleteBackup(retention, '20240102T000000', { messages: out2, skipWalCleanupIfStandalone: false })).toBe(true);
    expect(out2.lines.slice(1, -1)).toEqual(['Delete associated WAL segments:', ...[1, 4, 5, 6, 7, 8, 9].map((n) => `\t${seg(n)}`)]);
    expect(xlogDbNames(retention)).toEqual([seg(2), seg(3), `${seg(2)}.00000028.backup`, ...range(10, 12)]);
  });

  it('keeps the WAL of timelines that still have backups', async () => {
    const { server } = await makeCatalog();
    await addBackup(server, '20240101T000000', backupInfo({ begin_wal: seg(2, 2), end_wal: seg(2, 2) }));
    await addBackup(server, '20240102T000000', backupInfo({ begin_wal: seg(6, 3), end_wal: seg(6, 3) }));
    // A backup still being taken on timeline 1 (e.g. on a standby restored from an old base).
    await addBackup(server, '20240103T000000', backupInfo({ status: 'STARTED', begin_wal: seg(3, 1), end_wal: null }));
    addWals(server, [seg(1, 1), seg(3, 1), seg(1, 2), seg(2, 2), seg(6, 3)]);
    const out = recorder();
    expect(await deleteBackup(server, '20240101T000000', { messages: out })).toBe(true);
    expect(out.lines.filter((l) => l.startsWith('\t'))).toEqual([`\t${seg(1, 2)}`, `\t${seg(2, 2)}`]);
    expect(xlogDbNames(server)).toEqual([seg(1, 1), seg(3, 1), seg(6, 3)]);
  });

  it('refuses while another process holds the backup lock, and an unknown ID', async () => {
    const { server } = await threeBackups();
    const lock = await tryAcquireLock(serverLockPath(server.paths.lockDirectory, 'pg', '20240101T000000'));
    if (lock.busy) throw new Error('lock unexpectedly busy');
    const out = recorder();
    try {
      expect(await deleteBackup(server, '20240101T000000', { messages: out })).toBe(false);
    } finally {
      await lock.release();
    }
    expect(out.lines).toEqual(['ERROR: Another process is holding the lock for backup 20240101T000000 of server pg.']);
    expect(existsSync(deleteAnnotationPath(server.paths, '20240101T000000'))).toBe(false);
    await expect(deleteBackup(server, '20990101T000000', { messages: out })).rejects.toThrow("Unknown backup '20990101T000000' for server 'pg'");
  });

  it('refuses the backup being taken while the server backup lock is held', async () => {
    const { server } = await makeCatalog();
    await addBackup(server, '20240101T000000', newBackupInfo({ status: 'STARTED', begin_wal: seg(2) }));
    const lock = await tryAcquireLock(serverLockPath(server.paths.lockDirectory, 'pg', 'backup'));
    if (lock.busy) throw new Error('lock unexpectedly busy');
    const out = recorder();
    try {
      expect(await deleteBackup(server, '20240101T000000', { messages: out })).toBe(false);
    } finally {
      await lock.release();
    }
    expect(out.lines).toEqual(['ERROR: Cannot delete a running backup (pg 20240101T000000)']);
    // A STARTED leftover of a crashed backup (no lock holder) can be deleted.
    expect(await deleteBackup(server, '20240101T000000', { messages: recorder() })).toBe(true);
  });
});

describe('with cloud_destination: WAL not yet in the bucket stays', () => {
  it('a delete keeps the first WAL the cloud tier has not copied, and everything after it', async () => {
    const { server } = await threeBackups({ cloud_destination: 's3://b/tier' });
    const state = emptyCloudTierState('s3://b/tier');
    state.wal = { ...state.wal, pending: 8, oldestPending: seg(4), oldestPendingTime: 1 };
    await writeCloudTierState(server.paths, state);
    const out = recorder();
    expect(await deleteBackup(server, '20240101T000000', { messages: out })).toBe(true);
    expect(out.lines).toContain(`WAL from ${seg(4)} on is kept: it is not in cloud_destination yet`);
    expect(xlogDbNames(server)).toEqual([seg(4), seg(5), '00000002.history', ...range(6, 12)]);

    // Once copied (nothing pending), the next removal goes as far as the plan says.
    state.wal = { ...state.wal, pending: 0, oldestPending: null };
    await writeCloudTierState(server.paths, state);
    expect(await purgeWalBefore(server, seg(6), { protectFrom: await cloudKeepFrom(server.paths, 's3://b/tier') })).toEqual([seg(4), seg(5)]);
  });

  it('a state file of another destination protects nothing', async () => {
    const { server } = await threeBackups({ cloud_destination: 's3://b/new' });
    const state = emptyCloudTierState('s3://b/old');
    state.wal = { ...state.wal, pending: 3, oldestPending: seg(1) };
    await writeCloudTierState(server.paths, state);
    expect(await cloudKeepFrom(server.paths, 's3://b/new')).toBe(null);
  });
});

describe('purgeWalBefore (first backup of a server)', () => {
  it('removes every WAL before begin_wal but history files, under the xlog.db lock', async () => {
    const { server } = await makeCatalog();
    addWals(server, [seg(1), '00000001.history', seg(2), `${seg(2)}.00000028.backup`, seg(3), seg(4)]);
    expect(await purgeWalBefore(server, seg(3))).toEqual([seg(1), seg(2), `${seg(2)}.00000028.backup`]);
    expect(xlogDbNames(server)).toEqual(['00000001.history', seg(3), seg(4)]);
    expect(walFilesOnDisk(server)).toEqual(['00000001.history', seg(3), seg(4)]);
    expect(await purgeWalBefore(server, seg(3))).toEqual([]);
  });

  it('drops xlog.db lines that name no WAL file, reporting them', async () => {
    const { server } = await makeCatalog();
    addWals(server, [seg(1), seg(5)]);
    const xlogDb = join(server.paths.xlogdbDirectory, 'pg-xlog.db');
    const text = readFileSync(xlogDb, 'utf8');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(xlogDb, `${text}garbage\t1\t1.0\tNone\tNone\n`);
    const invalid: string[] = [];
    expect(await purgeWalBefore(server, seg(5), { onInvalidName: (n) => invalid.push(n) })).toEqual([seg(1)]);
    expect(invalid).toEqual(['garbage']);
    expect(xlogDbNames(server)).toEqual([seg(5)]);
  });
});

describe('WAL removal rules', () => {
  it('shouldRemoveWals walks back through keep:standalone backups', () => {
    const b = (id: string, begin: number, end: number, status: 'DONE' | 'FAILED' = 'DONE') => ({ backupId: id, info: { status, begin_wal: seg(begin), end_wal: seg(end) } });
    const all = [b('1', 1, 1), b('2', 2, 2), b('3', 3, 3, 'FAILED'), b('4', 4, 4)];
    const keep = (k: Record<string, 'full' | 'standalone'>) => (id: string) => k[id] ?? null;
    expect(shouldRemoveWals('1', all, keep({}), true)).toEqual({ remove: true, ranges: [] });
    expect(shouldRemoveWals('4', all, keep({}), false)).toEqual({ remove: false, ranges: [] });
    expect(shouldRemoveWals('4', all, keep({ '2': 'full' }), false)).toEqual({ remove: false, ranges: [] });
    expect(shouldRemoveWals('4', all, keep({ '1': 'standalone', '2': 'standalone' }), true)).toEqual({ remove: false, ranges: [] });
    // The FAILED backup in between is no "previous backup".
    expect(shouldRemoveWals('4', all, keep({ '1': 'standalone', '2': 'standalone' }), false)).toEqual({
      remove: true,
      ranges: [
        [seg(2), seg(2)],
        [seg(1), seg(1)],
      ],
    });
    expect(shouldRemoveWals('4', all, keep({ '1': 'full', '2': 'standalone' }), false)).toEqual({ remove: false, ranges: [] });
  });

  it('keepsWal: history files, protected timelines, standalone ranges (labels by their segment), names from keepFrom', () => {
    const plan = { keepFrom: seg(10, 2), timelinesToProtect: new Set([1]), rangesToProtect: [[seg(3, 2), seg(4, 2)]] as [string, string][] };
    expect(keepsWal('00000003.history', plan)).toBe(true);
    expect(keepsWal(seg(1, 1), plan)).toBe(true);
    expect(keepsWal(seg(2, 2), plan)).toBe(false);
    expect(keepsWal(seg(3, 2), plan)).toBe(true);
    expect(keepsWal(`${seg(4, 2)}.00000028.backup`, plan)).toBe(true);
    expect(keepsWal(`${seg(5, 2)}.00000028.backup`, plan)).toBe(false);
    expect(keepsWal(seg(10, 2), plan)).toBe(true);
    expect(keepsWal(seg(11, 3), plan)).toBe(true);
    expect(keepsWal(seg(11, 2), { ...plan, keepFrom: null })).toBe(false);
  });
});
