// The backup a recovery starts from: an ID, name or shortcut as everywhere
// else, or `auto`, the newest backup that ends before the target (§5.1).
import { STATUS_COPY_DONE } from '../catalog/backup-info.ts';
import { BackupNotFoundError, resolveBackupId, type CatalogBackup } from '../catalog/catalog.ts';
import { parseLsn } from '../postgres/lsn.ts';
import { backupTimeMicros, RecoveryInputError, type RecoveryTarget } from './targets.ts';

export function selectBackup(backups: readonly CatalogBackup[], query: string, target: RecoveryTarget, serverName: string): CatalogBackup {
  if (query !== 'auto') {
    const backup = resolveBackupId(backups, query, serverName);
    if (!STATUS_COPY_DONE.includes(backup.info.status)) {
      throw new RecoveryInputError(`Cannot recover from backup ${backup.backupId} of server ${serverName}: its status is ${backup.info.status} (only WAITING_FOR_WALS or DONE backups are complete)`);
    }
    checkTargetAfterBackup(backup, target);
    return backup;
  }
  if (target.kind === 'xid' || target.kind === 'name' || target.kind === 'immediate') {
    throw new RecoveryInputError(`Cannot use 'auto' as backup ID with --target-${target.kind === 'immediate' ? 'immediate' : target.kind}: give the backup ID`);
  }
  let candidates = backups.filter((b) => b.info.status === 'DONE' && b.info.end_time !== null && b.info.end_xlog !== null);
  if (typeof target.tli === 'number') candidates = candidates.filter((b) => b.info.timeline === target.tli);
  if (target.time) candidates = candidates.filter((b) => backupTimeMicros(b.info.end_time!) < target.time!.micros);
  if (target.lsn) candidates = candidates.filter((b) => parseLsn(b.info.end_xlog!) <= target.lsn!.value);
  const chosen = [...candidates].sort((a, b) => (a.backupId < b.backupId ? -1 : 1)).pop();
  if (!chosen) {
    const what = target.time ? ` ending before ${target.time.text}` : target.lsn ? ` ending before LSN ${target.lsn.text}` : '';
    const tli = typeof target.tli === 'number' ? ` on timeline ${target.tli}` : '';
    throw new BackupNotFoundError(`Unknown backup 'auto' for server '${serverName}': no DONE backup${what}${tli}`, 'auto');
  }
  return chosen;
}

function checkTargetAfterBackup(backup: CatalogBackup, target: RecoveryTarget): void {
  const { info } = backup;
  if (target.time && info.end_time !== null && backupTimeMicros(info.end_time) > target.time.micros) {
    throw new RecoveryInputError(`The requested target time ${target.time.text} is before the backup end time ${info.end_time}`);
  }
  if (target.lsn && info.end_xlog !== null && parseLsn(info.end_xlog) > target.lsn.value) {
    throw new RecoveryInputError(`The requested target LSN ${target.lsn.text} is before the backup end LSN ${info.end_xlog}`);
  }
}
