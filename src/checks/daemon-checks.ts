// barkeep's checks of what the daemon is there for: free space where the
// backups go (a full disk used to be found out when a backup was needed),
// and, when backups are scheduled, that something runs the schedule.
import { statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { readLockOwner } from '../catalog/locks.ts';
import type { ServerConfig } from '../config/load.ts';
import { prettySize } from '../util/human.ts';
import type { CheckResult } from './server-checks.ts';

/** The daemon's lock, as src/daemon/supervisor.ts takes it. */
export function daemonLockPath(lockDirectory: string): string {
  return join(lockDirectory, '.barkeep-daemon.lock');
}

export async function checkDiskSpace(server: ServerConfig): Promise<CheckResult> {
  const name = 'disk space';
  const threshold = server.settings.disk_space_warning ?? null;
  // The backup directory may not exist yet: its filesystem is its nearest existing parent's.
  let st = null;
  for (let dir = server.paths.backupDirectory; st === null; dir = dirname(dir)) {
    st = await statfs(dir).catch(() => null);
    if (dir === '/' || dir === '.') break;
  }
  if (st === null) return { name, ok: false, hint: `cannot read the filesystem of ${server.paths.backupDirectory}` };
  const free = Number(st.bavail) * Number(st.bsize);
  const total = Number(st.blocks) * Number(st.bsize);
  if (threshold === null) return { name, ok: true, hint: 'no disk_space_warning provided' };
  const limit = threshold.percent !== null ? (total * threshold.percent) / 100 : threshold.bytes!;
  const shown = threshold.percent !== null ? `${threshold.percent}%` : prettySize(threshold.bytes!);
  const freeText = `${prettySize(free)} free of ${prettySize(total)}`;
  return free >= limit ? { name, ok: true, hint: freeText } : { name, ok: false, hint: `${freeText}, below disk_space_warning = ${shown}` };
}

/** Only when backup_schedule is set: nothing else runs a schedule. */
export async function checkDaemonRunning(server: ServerConfig, lockDirectory: string): Promise<CheckResult | null> {
  if (!server.settings.backup_schedule) return null;
  const owner = await readLockOwner(daemonLockPath(lockDirectory)).catch(() => null);
  if (owner?.live) return { name: 'daemon running', ok: true, hint: '' };
  return { name: 'daemon running', ok: false, hint: `backup_schedule is set but no barkeep daemon is running: start it with 'barkeep daemon' (systemd/barkeep.service)` };
}
