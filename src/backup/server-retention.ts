// A server's retention report from its catalog on disk: the backups, their keep
// annotations and the configured policy. Null when the server has no
// retention_policy (Barman: "not enforced").
import { parseBackupTime } from '../catalog/backup-info.ts';
import { type CatalogBackup, readKeepAnnotation } from '../catalog/catalog.ts';
import type { ServerPaths } from '../catalog/layout.ts';
import type { RetentionPolicy } from '../config/retention-policy.ts';
import { type RetentionCandidate, type RetentionReport, retentionReport } from './retention.ts';

export interface RetentionSettings {
  retention_policy: RetentionPolicy | null;
  minimum_redundancy: number | null;
}

export async function serverRetentionReport(
  paths: ServerPaths,
  settings: RetentionSettings,
  backups: readonly CatalogBackup[],
  now: Date = new Date(),
): Promise<RetentionReport | null> {
  const policy = settings.retention_policy;
  if (policy === null) return null;
  return retentionReport(policy, await retentionCandidates(paths, backups), { minimumRedundancy: settings.minimum_redundancy ?? 0, now });
}

export async function retentionCandidates(paths: ServerPaths, backups: readonly CatalogBackup[]): Promise<RetentionCandidate[]> {
  return Promise.all(
    backups.map(async (b) => ({
      backupId: b.backupId,
      status: b.info.status,
      endTime: b.info.end_time === null ? null : parseBackupTime(b.info.end_time),
      parentBackupId: b.info.parent_backup_id,
      childrenBackupIds: b.info.children_backup_ids,
      // Only DONE backups are rated, so only theirs matter.
      keep: b.info.status === 'DONE' ? await readKeepAnnotation(paths, b.backupId) : null,
    })),
  );
}
