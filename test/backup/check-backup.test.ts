import { readFileSync, rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { checkBackupStatus, refreshBackupStatus } from '../../src/backup/check-backup.ts';
import { requiredWalSegments } from '../../src/backup/wal-range.ts';
import { newBackupInfo } from '../../src/catalog/backup-info.ts';
import { loadBackup } from '../../src/catalog/catalog.ts';
import { metaBackupInfoPath, walPath } from '../../src/catalog/layout.ts';
import { serverLockPath, tryAcquireLock } from '../../src/catalog/locks.ts';
import { addBackup, addWals, backupInfo, makeCatalog, seg } from './catalog-support.ts';

// check-backup: Barman's BackupManager.check_backup cases, then the catalog
// version that rewrites backup.info under the backup's lock.

const MiB = 1024 * 1024;

function waiting(begin: string, end: string | null, extra: Partial<Parameters<typeof newBackupInfo>[0]> = {}) {
  return newBackupInfo({ status: 'WAITING_FOR_WALS', begin_wal: begin, end_wal: end, xlog_segment_size: 16 * MiB, version: 150000, ...extra });
}

describe('requiredWalSegments', () => {
  it('crosses the 4 GiB log boundary (16 MiB segments: 256 per log)', () => {
    expect(requiredWalSegments('0000000100000000000000FE', '000000010000000100000001', 16 * MiB, 150000)).toEqual([
      '0000000100000000000000FE',
      '0000000100000000000000FF',
      '000000010000000100000000',
      '000000010000000100000001',
    ]);
  });

  it('uses the backup segment size (64 MiB: 64 per log)', () => {
    expect(requiredWalSegments('00000002000000000000003E', '000000020000000100000000', 64 * MiB, 150000)).toEqual([
      '00000002000000000000003E',
      '00000002000000000000003F',
      '000000020000000100000000',
    ]);
  });

  it('skips the last segment of each log before PostgreSQL 9.3, as those servers never wrote it', () => {
    expect(requiredWalSegments('0000000100000000000000FE', '000000010000000100000000', 16 * MiB, 90200)).toEqual([
      '0000000100000000000000FE',
      '000000010000000100000000',
    ]);
  });

  it('refuses a range over two timelines and names that are no segments', () => {
    expect(() => requiredWalSegments('000000010000000000000004', '000000020000000000000005', 16 * MiB, 150000)).toThrow(/different timelines/);
    expect(() => requiredWalSegments('00000001.history', '000000010000000000000005', 16 * MiB, 150000)).toThrow(/invalid xlog segment name/);
  });
});

describe('checkBackupStatus', () => {
  const begin = '000000010000000000000004';
  const end = '000000010000000000000006';

  it('leaves a backup without end_wal (still running) alone', () => {
    expect(checkBackupStatus(newBackupInfo({ status: 'STARTED', begin_wal: begin }), [begin])).toEqual({ status: 'STARTED', error: null });
  });

  it('WAITING_FOR_WALS while nothing of the timeline is archived, or nothing from begin_wal on', () => {
    expect(checkBackupStatus(waiting(begin, end), [])).toEqual({ status: 'WAITING_FOR_WALS', error: null });
    expect(checkBackupStatus(waiting(begin, end), ['000000020000000000000009', '00000002.history'])).toEqual({ status: 'WAITING_FOR_WALS', error: null });
    expect(checkBackupStatus(waiting(begin, end), ['000000010000000000000002', '000000010000000000000003'])).toEqual({ status: 'WAITING_FOR_WALS', error: null });
    // Even a DONE backup goes back to waiting when its timeline's WAL is gone (Barman case 1).
    expect(checkBackupStatus({ ...waiting(begin, end), status: 'DONE' }, []).status).toBe('WAITING_FOR_WALS');
  });

  it('DONE once begin_wal..end_wal are all archived, in any order, whatever else is there', () => {
    const names = ['000000010000000000000006', '000000010000000000000004.00000028.backup', '000000010000000000000005', '000000010000000000000004', '00000001000000000000000A'];
    expect(checkBackupStatus(waiting(begin, end), names)).toEqual({ status: 'DONE', error: null });
  });

  it('still WAITING_FOR_WALS while the archive has not reached end_wal and nothing is missing', () => {
    expect(checkBackupStatus(waiting(begin, end), [begin, '000000010000000000000005'])).toEqual({ status: 'WAITING_FOR_WALS', error: null });
  });

  it('FAILED, naming the first missing segment, when a required one is missing below the newest archived', () => {
    expect(checkBackupStatus(waiting(begin, end), [begin, '000000010000000000000006'])).toEqual({
      status: 'FAILED',
      error: 'At least one WAL file is missing. The first missing WAL file is 000000010000000000000005',
    });
    // A later segment counts as "newer archived" too; .partial/.backup files are not segments.
    expect(
      checkBackupStatus(waiting(begin, end), [begin, '000000010000000000000005.partial', '000000010000000000000005.00000028.backup', '000000010000000000000009']).error,
    ).toBe('At least one WAL file is missing. The first missing WAL file is 000000010000000000000005');
  });

  it('handles the segment arithmetic across a log boundary and segment sizes', () => {
    const info = waiting('0000000100000000000000FE', '000000010000000100000001');
    expect(checkBackupStatus(info, ['0000000100000000000000FE', '000000010000000100000000', '000000010000000100000001']).error).toBe(
      'At least one WAL file is missing. The first missing WAL file is 0000000100000000000000FF',
    );
    const big = waiting('00000001000000000000003F', '000000010000000100000000', { xlog_segment_size: 64 * MiB });
    expect(checkBackupStatus(big, ['00000001000000000000003F', '000000010000000100000000']).status).toBe('DONE');
    const old = waiting('0000000100000000000000FE', '000000010000000100000000', { version: 90200 });
    expect(checkBackupStatus(old, ['0000000100000000000000FE', '000000010000000100000000']).status).toBe('DONE');
  });

  it('looks at the backup timeline only', () => {
    const info = waiting('000000020000000000000004', '000000020000000000000005');
    expect(checkBackupStatus(info, ['000000010000000000000004', '000000010000000000000005', '000000010000000000000006']).status).toBe('WAITING_FOR_WALS');
    expect(checkBackupStatus(info, ['000000020000000000000004', '000000020000000000000005']).status).toBe('DONE');
  });
});

describe('refreshBackupStatus on a catalog', () => {
  it('moves WAITING_FOR_WALS to DONE and saves backup.info durably in meta/', async () => {
    const { server } = await makeCatalog();
    await addBackup(server, '20240101T000000', backupInfo({ status: 'WAITING_FOR_WALS', begin_wal: seg(4), end_wal: seg(5) }));
    addWals(server, [seg(4)]);
    expect(await refreshBackupStatus(server, '20240101T000000')).toEqual({ kind: 'checked', previous: 'WAITING_FOR_WALS', status: 'WAITING_FOR_WALS', error: null, changed: false });
    addWals(server, [seg(5)]);
    expect(await refreshBackupStatus(server, '20240101T000000')).toEqual({ kind: 'checked', previous: 'WAITING_FOR_WALS', status: 'DONE', error: null, changed: true });
    expect(readFileSync(metaBackupInfoPath(server.paths, '20240101T000000'), 'utf8')).toContain('status=DONE\n');
  });

  it('a segment listed in xlog.db but missing from wals/ is missing: FAILED, and FAILED is never checked again', async () => {
    const { server } = await makeCatalog();
    await addBackup(server, '20240101T000000', backupInfo({ status: 'WAITING_FOR_WALS', begin_wal: seg(4), end_wal: seg(6) }));
    addWals(server, [seg(4), seg(5), seg(6)]);
    rmSync(walPath(server.paths, seg(5)));
    const outcome = await refreshBackupStatus(server, '20240101T000000');
    expect(outcome).toMatchObject({ kind: 'checked', status: 'FAILED', changed: true });
    const saved = (await loadBackup(server.paths, '20240101T000000'))!.info;
    expect(saved.status).toBe('FAILED');
    expect(saved.error).toBe(`At least one WAL file is missing. The first missing WAL file is ${seg(5)}`);
    expect(await refreshBackupStatus(server, '20240101T000000')).toEqual({ kind: 'failed' });
  });

  it('reports a busy backup lock instead of waiting, and an unknown backup by name', async () => {
    const { server } = await makeCatalog();
    await addBackup(server, '20240101T000000', backupInfo({ status: 'WAITING_FOR_WALS', begin_wal: seg(4), end_wal: seg(4) }));
    const lock = await tryAcquireLock(serverLockPath(server.paths.lockDirectory, 'pg', '20240101T000000'));
    if (lock.busy) throw new Error('lock unexpectedly busy');
    try {
      expect(await refreshBackupStatus(server, '20240101T000000')).toEqual({ kind: 'busy', pid: process.pid });
    } finally {
      await lock.release();
    }
    await expect(refreshBackupStatus(server, '20990101T000000')).rejects.toThrow("Unknown backup '20990101T000000' for server 'pg'");
  });
});
