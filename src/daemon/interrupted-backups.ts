// A backup whose process died (killed with the daemon, SIGKILL, a crash, a
// reboot) stays STARTED (or EMPTY, if it died while its pre-backup hook scripts
// ran) forever: list-backup would show a backup that looks in progress, and
// nothing would ever say it failed. The maintenance pass, and the daemon when a
// backup child it ran exits, turn such backups FAILED.
//
// Why "no live holder of the backup lock" proves the writer is gone: the backup
// process takes `.<server>-backup.lock` before it writes EMPTY or STARTED and
// releases it only after the final status is written, and a backup ID is never
// reused. So a backup seen in progress whose lock is then not held by a live
// process, and that still reads in progress after that, has no process left to
// finish it.
import { type BackupStatus, formatBackupTime, writeBackupInfo } from '../catalog/backup-info.ts';
import { listBackups, loadBackup } from '../catalog/catalog.ts';
import { readLockOwner, serverLockPath, tryAcquireLock } from '../catalog/locks.ts';
import type { ServerConfig } from '../config/load.ts';
import { currentBackupHookEnv } from '../hooks/hook-env.ts';
import type { ServerHooks } from '../hooks/server-hooks.ts';

const IN_PROGRESS: readonly BackupStatus[] = ['EMPTY', 'STARTED'];

export interface InterruptedBackup {
  backupId: string;
  previous: BackupStatus;
  error: string;
}

/**
 * Marks FAILED every EMPTY or STARTED backup of `server` that no live process is taking; returns them.
 * With `hooks`, each gets its post_backup scripts (BARMAN_STATUS=FAILED), which its
 * own process never reached: a script that alerts on failed backups hears of it.
 */
export async function failInterruptedBackups(server: ServerConfig, why = 'the backup process is gone (killed or crashed)', hooks: ServerHooks | null = null): Promise<InterruptedBackup[]> {
  const { backups } = await listBackups(server.paths);
  const started = backups.filter((b) => IN_PROGRESS.includes(b.info.status));
  if (started.length === 0) return [];
  const owner = await readLockOwner(serverLockPath(server.paths.lockDirectory, server.name, 'backup'));
  if (owner?.live) return [];
  const out: InterruptedBackup[] = [];
  for (const b of started) {
    // The backup's own lock, as check-backup and delete take it: one writer of backup.info at a time.
    const lock = await tryAcquireLock(serverLockPath(server.paths.lockDirectory, server.name, b.backupId));
    if (lock.busy) continue;
    try {
      const now = await loadBackup(server.paths, b.backupId);
      if (!now || !IN_PROGRESS.includes(now.info.status)) continue;
      const info = { ...now.info, status: 'FAILED' as const, error: `failure: interrupted, ${why}` };
      info.end_time ??= formatBackupTime(new Date());
      await writeBackupInfo(now.infoPath, info);
      out.push({ backupId: b.backupId, previous: now.info.status, error: info.error });
    } finally {
      await lock.release();
    }
  }
  if (hooks?.has('backup')) {
    for (const b of out) await hooks.post('backup', () => currentBackupHookEnv(server.paths, b.backupId, { status: 'FAILED', error: b.error }));
  }
  return out;
}
