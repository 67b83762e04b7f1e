import { statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkDaemonRunning, checkDiskSpace, daemonLockPath } from '../../src/checks/daemon-checks.ts';
import { tryAcquireLock } from '../../src/catalog/locks.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { makeTempDir } from '../support/tmp.ts';

// `disk space` against the real filesystem of the backup directory, and
// `daemon running` against the daemon's real lock.

function server(extra: string) {
  const dir = makeTempDir('daemon-checks');
  const conf = join(dir, 'barman.conf');
  writeFileSync(conf, `[barman]\nbarman_home = ${dir}\n\n[pg]\nconninfo = host=127.0.0.1 port=1 user=barman dbname=postgres\nbackup_method = postgres\n${extra}\n`);
  const config = loadConfigFile(conf);
  return { server: config.servers.get('pg')!, issues: config.issues.concat(config.servers.get('pg')!.issues), dir };
}

describe('disk space', () => {
  it('passes without a threshold, and compares free space with a percentage or a size', async () => {
    expect(await checkDiskSpace(server('').server)).toEqual({ name: 'disk space', ok: true, hint: 'no disk_space_warning provided' });
    const { server: s, dir } = server('disk_space_warning = 100%%');
    const st = statfsSync(dir);
    expect(st.bavail).toBeLessThan(st.blocks);
    const full = await checkDiskSpace(s);
    expect(full.ok).toBe(false);
    expect(full.hint).toMatch(/free of .*, below disk_space_warning = 100%$/);
    expect((await checkDiskSpace(server('disk_space_warning = 1 KiB').server)).ok).toBe(true);
    expect((await checkDiskSpace(server('disk_space_warning = 1000 TiB').server)).ok).toBe(false);
  });

  it('a value that is neither a percentage nor a size disables the server with a clear message', () => {
    const { issues } = server('disk_space_warning = lots');
    expect(issues.map((i) => i.message).join('\n')).toContain("'lots' is neither a percentage (e.g. '10%') nor a size (e.g. '20 GiB')");
  });
});

describe('daemon running', () => {
  it('is only checked with backup_schedule, and follows the daemon lock', async () => {
    expect(await checkDaemonRunning(server('').server, '/nonexistent')).toBeNull();
    const { server: s, dir } = server("backup_schedule = 0 4 * * *");
    const off = await checkDaemonRunning(s, dir);
    expect(off).toEqual({ name: 'daemon running', ok: false, hint: "backup_schedule is set but no barkeep daemon is running: start it with 'barkeep daemon' (systemd/barkeep.service)" });
    const lock = await tryAcquireLock(daemonLockPath(dir));
    if (lock.busy) throw new Error('lock busy');
    expect(await checkDaemonRunning(s, dir)).toEqual({ name: 'daemon running', ok: true, hint: '' });
    await lock.release();
  });
});
