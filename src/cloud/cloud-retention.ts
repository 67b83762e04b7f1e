// Retention in a bucket: which backups a policy makes OBSOLETE, and which WAL a
// deleted backup takes with it, by the rules barman-cloud-backup-delete applies
// (barman/clients/cloud_backup_delete.py, reusing Barman's RetentionPolicy,
// BackupManager.should_remove_wals and get_timelines_to_protect). Pure: the
// caller supplies the catalog as it is at each step.
//
// The backup statuses come from the local catalog's retentionReport, so a bucket and
// a barkeep server holding the same backups keep the same ones.
import { type BackupInfo, parseBackupTime, STATUS_COPY_DONE } from '../catalog/backup-info.ts';
import type { KeepTarget } from '../catalog/catalog.ts';
import { shouldRemoveWals } from '../backup/delete-backup.ts';
import { type RetentionCandidate, type RetentionReport, retentionReport } from '../backup/retention.ts';
import type { RetentionPolicy } from '../config/retention-policy.ts';

export interface RetentionBackup {
  readonly backupId: string;
  readonly info: Pick<BackupInfo, 'status' | 'end_time' | 'begin_wal' | 'end_wal' | 'timeline' | 'parent_backup_id' | 'children_backup_ids'>;
}

export type KeepOf = (backupId: string) => KeepTarget | null;

/** The status of every backup under `policy` (-m/--minimum-redundancy as Barman's minimum_redundancy). */
export function cloudRetentionReport(
  policy: RetentionPolicy,
  backups: readonly RetentionBackup[],
  keepOf: KeepOf,
  opts: { minimumRedundancy: number; now: Date },
): RetentionReport {
  const candidates: RetentionCandidate[] = backups.map((b) => ({
    backupId: b.backupId,
    status: b.info.status,
    endTime: b.info.end_time === null ? null : parseBackupTime(b.info.end_time),
    parentBackupId: b.info.parent_backup_id,
    childrenBackupIds: b.info.children_backup_ids,
    keep: keepOf(b.backupId),
  }));
  return retentionReport(policy, candidates, opts);
}

/** The backups retention deletes: the OBSOLETE ones (not OBSOLETE*), oldest first. */
export function obsoleteBackupIds(report: RetentionReport): string[] {
  return [...report].filter(([, status]) => status === 'OBSOLETE').map(([id]) => id).sort();
}

export type WalCleanup =
  | {
      remove: true;
      /** WAL before this backup's begin_wal goes (the next backup, or the deleted one when none is left). */
      removeUntil: RetentionBackup;
      /** Timelines that still have a backup other than removeUntil's: their WAL stays. */
      timelinesToProtect: ReadonlySet<number>;
      /** [begin_wal, end_wal] of the older keep:standalone backups: their WAL stays. */
      ranges: readonly (readonly [string, string])[];
    }
  | {
      remove: false;
      /** The older backup that still needs the WAL, or null when removeUntil has no begin_wal. */
      neededBy: string | null;
      /** The needing backup is kept standalone and the delete was explicit (-b). */
      standaloneExplicit: boolean;
    };

/**
 * What deleting `deletedId` does to WAL, given every backup still in the bucket
 * (`deletedId` included, whatever their status). `skipWalCleanupIfStandalone` is true
 * for an explicit delete (-b), false for retention (-r).
 */
export function planWalCleanup(deletedId: string, backups: readonly RetentionBackup[], keepOf: KeepOf, skipWalCleanupIfStandalone: boolean): WalCleanup {
  const sorted = [...backups].sort((a, b) => (a.backupId < b.backupId ? -1 : a.backupId > b.backupId ? 1 : 0));
  const at = sorted.findIndex((b) => b.backupId === deletedId);
  if (at < 0) throw new Error(`backup ${deletedId} is not in the catalog`);
  const deleted = sorted[at]!;
  const decision = shouldRemoveWals(deletedId, sorted, keepOf, skipWalCleanupIfStandalone);
  if (!decision.remove) {
    const previous = sorted.slice(0, at).reverse().find((b) => STATUS_COPY_DONE.includes(b.info.status)) ?? null;
    return { remove: false, neededBy: previous?.backupId ?? null, standaloneExplicit: previous !== null && keepOf(previous.backupId) === 'standalone' };
  }
  const next = sorted.slice(at + 1).find((b) => STATUS_COPY_DONE.includes(b.info.status));
  const removeUntil = next ?? deleted;
  if (removeUntil.info.begin_wal === null) return { remove: false, neededBy: null, standaloneExplicit: false };
  // Every other backup in the bucket counts here, whatever its status, as in barman-cloud.
  const protect = new Set<number>();
  for (const b of sorted) {
    if (b.backupId === deletedId) continue;
    const tli = timelineOf(b);
    if (tli !== null) protect.add(tli);
  }
  const cut = timelineOf(removeUntil);
  if (cut !== null) protect.delete(cut);
  return { remove: true, removeUntil, timelinesToProtect: protect, ranges: decision.ranges };
}

/** The WAL names `plan` removes among `walNames`, sorted. History files always stay. */
export function walsToRemove(plan: WalCleanup, walNames: Iterable<string>): string[] {
  if (!plan.remove) return [];
  const until = plan.removeUntil.info.begin_wal!;
  const out: string[] = [];
  for (const name of walNames) {
    if (name.endsWith('.history')) continue;
    if (plan.timelinesToProtect.size > 0 && plan.timelinesToProtect.has(parseInt(name.slice(0, 8), 16))) continue;
    // A backup label file (<segment>.<offset>.backup) is in a range when its segment is.
    const inRange = name.endsWith('.backup') ? name.slice(0, 24) : name;
    if (plan.ranges.some(([begin, end]) => inRange >= begin && inRange <= end)) continue;
    if (name < until) out.push(name);
  }
  return out.sort();
}

/** The newest begin_wal among `backups`: no WAL at or after it can be removed by any deletion. */
export function walRemovalBound(backups: readonly RetentionBackup[]): string | null {
  let bound: string | null = null;
  for (const b of backups) if (b.info.begin_wal !== null && (bound === null || b.info.begin_wal > bound)) bound = b.info.begin_wal;
  return bound;
}

function timelineOf(b: RetentionBackup): number | null {
  if (b.info.timeline !== null) return b.info.timeline;
  return b.info.begin_wal !== null ? parseInt(b.info.begin_wal.slice(0, 8), 16) : null;
}
