// Retention reports: the status every backup gets under a REDUNDANCY or RECOVERY
// WINDOW policy, as Barman's RedundancyRetentionPolicy / RecoveryWindowRetentionPolicy
// ._backup_report compute it (barman/retention_policies.py, 3.17 incl. incremental
// chains). Pure: the caller supplies the catalog, the keep annotations and `now`.
import type { BackupStatus } from '../catalog/backup-info.ts';
import type { KeepTarget } from '../catalog/catalog.ts';
import type { RetentionPolicy } from '../config/retention-policy.ts';

export type RetentionStatus = 'VALID' | 'OBSOLETE' | 'OBSOLETE*' | 'KEEP:FULL' | 'KEEP:STANDALONE' | '-';

export interface RetentionCandidate {
  backupId: string;
  status: BackupStatus;
  /** Compared with the window start; null counts as still inside the window. */
  endTime: Date | null;
  parentBackupId: string | null;
  childrenBackupIds: readonly string[] | null;
  keep: KeepTarget | null;
}

export interface RetentionOptions {
  minimumRedundancy: number;
  now: Date;
}

/**
 * Status of each backup, keyed by ID. Backups the policy does not rate (EMPTY ones,
 * incremental backups outside any chain) are absent: read them with retentionStatusOf.
 */
export type RetentionReport = Map<string, RetentionStatus>;

export function retentionStatusOf(report: RetentionReport, backupId: string): RetentionStatus {
  return report.get(backupId) ?? '-';
}

export function retentionReport(policy: RetentionPolicy, candidates: readonly RetentionCandidate[], opts: RetentionOptions): RetentionReport {
  const byId = new Map(candidates.map((c) => [c.backupId, c]));
  // Barman rates what it calls the available backups: every status but EMPTY.
  const newestFirst = candidates
    .filter((c) => c.status !== 'EMPTY')
    .sort((a, b) => (a.backupId < b.backupId ? 1 : a.backupId > b.backupId ? -1 : 0));
  const report: RetentionReport = new Map();
  if (policy.kind === 'redundancy') redundancyReport(policy.count, newestFirst, byId, report, opts.minimumRedundancy);
  else windowReport(pointOfRecoverability(opts.now, policy.days), newestFirst, byId, report, opts.minimumRedundancy);
  return report;
}

function redundancyReport(
  count: number,
  newestFirst: readonly RetentionCandidate[],
  byId: ReadonlyMap<string, RetentionCandidate>,
  report: RetentionReport,
  minimumRedundancy: number,
): void {
  const redundancy = Math.max(count, minimumRedundancy);
  let rated = 0;
  for (const b of newestFirst) {
    // Incremental backups take their root's status below.
    if (b.parentBackupId !== null) continue;
    let status: RetentionStatus = '-';
    if (b.status === 'DONE') {
      // A kept backup still takes one of the `redundancy` places.
      status = keepStatus(b.keep) ?? (rated < redundancy ? 'VALID' : 'OBSOLETE');
      rated++;
    }
    report.set(b.backupId, status);
    if (hasChildren(b)) {
      let chain = status;
      if (status === 'KEEP:STANDALONE') chain = rated > redundancy ? 'OBSOLETE' : 'VALID';
      else if (status === 'KEEP:FULL') chain = 'VALID';
      propagate(b, chain, byId, report);
    }
  }
}

function windowReport(
  windowStart: Date,
  newestFirst: readonly RetentionCandidate[],
  byId: ReadonlyMap<string, RetentionCandidate>,
  report: RetentionReport,
  minimumRedundancy: number,
): void {
  // Becomes true at the newest backup that ended before the window: that one is
  // still VALID (it is the base for recovering to the window's first instant).
  let found = false;
  let valid = 0;
  for (const b of newestFirst) {
    if (b.parentBackupId !== null) continue;
    let status: RetentionStatus = '-';
    if (b.status === 'DONE') {
      const keep = keepStatus(b.keep);
      if (!found) {
        status = keep ?? 'VALID';
        valid++;
        if (b.endTime !== null && b.endTime.getTime() < windowStart.getTime()) found = true;
      } else if (valid < minimumRedundancy) {
        // Outside the window, kept only to honour minimum_redundancy: cron does not delete it.
        status = keep ?? 'OBSOLETE*';
        valid++;
      } else {
        status = keep ?? 'OBSOLETE';
      }
    }
    report.set(b.backupId, status);
    if (hasChildren(b)) {
      let chain = status;
      // `found` may have been set by this very backup: Barman then obsoletes the chain.
      if (status === 'KEEP:STANDALONE') chain = found ? 'OBSOLETE' : 'VALID';
      else if (status === 'KEEP:FULL') chain = 'VALID';
      propagate(b, chain, byId, report);
    }
  }
}

/**
 * Start of a recovery window: the same local wall-clock time `days` days before
 * `now`. Barman subtracts a timedelta from an aware local datetime, which is
 * calendar arithmetic, so across a DST change this is not now - days * 24h.
 */
export function pointOfRecoverability(now: Date, days: number): Date {
  const start = new Date(now.getTime());
  start.setDate(start.getDate() - days);
  return start;
}

function keepStatus(keep: KeepTarget | null): RetentionStatus | null {
  if (keep === null) return null;
  return keep === 'standalone' ? 'KEEP:STANDALONE' : 'KEEP:FULL';
}

function hasChildren(b: RetentionCandidate): boolean {
  return b.childrenBackupIds !== null && b.childrenBackupIds.length > 0;
}

/** Every descendant (children_backup_ids, recursively) gets `status`. */
function propagate(root: RetentionCandidate, status: RetentionStatus, byId: ReadonlyMap<string, RetentionCandidate>, report: RetentionReport): void {
  const seen = new Set<string>([root.backupId]);
  const pending = [...(root.childrenBackupIds ?? [])];
  while (pending.length > 0) {
    const id = pending.pop() as string;
    if (seen.has(id)) continue;
    seen.add(id);
    report.set(id, status);
    pending.push(...(byId.get(id)?.childrenBackupIds ?? []));
  }
}
