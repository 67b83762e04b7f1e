import { describe, expect, it } from 'vitest';
import { addBackup, addWals, backupInfo, makeCatalog, seg } from '../backup/catalog-support.ts';

// A server that streams WAL but never gets a backup keeps every WAL forever and
// has nothing to recover from: `check` must say so instead of staying quiet.

const now = () => Math.floor(Date.now() / 1000);

describe("check 'WAL without backups'", () => {
  it('fails once the oldest archived WAL is a day old and there is no backup, naming what to do', async () => {
    const cat = await makeCatalog();
    addWals(cat.server, [seg(1), seg(2)], { time: now() - 2 * 86_400 });
    const r = await cat.run(['check', 'pg']);
    expect(r.stdout).toMatch(/^\tWAL without backups: FAILED \(the oldest archived WAL is 2 days(, \d+ \w+)* old and there is no backup: .*'barkeep backup pg' or set backup_schedule\)$/m);
  });

  it('stays silent while the WAL is recent (a server just set up), and follows last_backup_maximum_age', async () => {
    const fresh = await makeCatalog();
    addWals(fresh.server, [seg(1)], { time: now() - 3600 });
    expect((await fresh.run(['check', 'pg'])).stdout).not.toContain('WAL without backups');

    const lenient = await makeCatalog({ last_backup_maximum_age: '1 WEEKS' });
    addWals(lenient.server, [seg(1)], { time: now() - 2 * 86_400 });
    expect((await lenient.run(['check', 'pg'])).stdout).not.toContain('WAL without backups');
  });

  it('is not shown once a backup exists, nor when no WAL is archived', async () => {
    const withBackup = await makeCatalog();
    await addBackup(withBackup.server, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(3) }));
    addWals(withBackup.server, [seg(1), seg(2), seg(3)], { time: now() - 5 * 86_400 });
    expect((await withBackup.run(['check', 'pg'])).stdout).not.toContain('WAL without backups');
    expect((await (await makeCatalog()).run(['check', 'pg'])).stdout).not.toContain('WAL without backups');
  });
});
