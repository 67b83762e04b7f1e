// What list-backup and show-backup print about a server's backups, gathered from
// the catalog: backup.info files, xlog.db (one pass for all backups), keep
// annotations and the retention policy (Barman's Server.list_backups and
// get_backup_ext_info).
import { type BackupStatus, STATUS_COPY_DONE } from '../catalog/backup-info.ts';
import { type CatalogBackup, listBackups } from '../catalog/catalog.ts';
import { type ServerPaths, xlogDbPath } from '../catalog/layout.ts';
import { readXlogDb } from '../catalog/xlog-db.ts';
import { type RetentionStatus, retentionStatusOf } from './retention.ts';
import { type RetentionSettings, serverRetentionReport } from './server-retention.ts';
import { childTimelines, type TimelineSwitch } from './timeline-history.ts';
import { BadWalNameError } from './wal-range.ts';
import { type WalStats, WalStatsAccumulator } from './wal-stats.ts';

export interface ReportServer {
  name: string;
  paths: ServerPaths;
  settings: RetentionSettings;
}

export interface BackupSummary {
  backup: CatalogBackup;
  /** WAL figures, for WAITING_FOR_WALS and DONE backups only. */
  wal: WalStats | null;
  /** Its status under the server's policy; null when no policy is configured. */
  retention: RetentionStatus | null;
}

export interface ServerBackupsReport {
  /** Newest first, every status. */
  backups: BackupSummary[];
  /** Problems met on the way (unreadable backup.info, bad xlog.db lines). */
  warnings: string[];
}

export async function serverBackupsReport(server: ReportServer, now: Date = new Date()): Promise<ServerBackupsReport> {
  const catalog = await listBackups(server.paths);
  const warnings = [...catalog.warnings, ...catalog.errors.map((e) => `cannot read ${e.path}: ${e.message}`)];
  const backups = catalog.backups;
  const retention = await serverRetentionReport(server.paths, server.settings, backups, now);
  const stats = await walStatsFor(server, backups, warnings);
  const summaries = backups.map((backup) => ({
    backup,
    wal: stats.get(backup.backupId) ?? null,
    retention: retention === null ? null : retentionStatusOf(retention, backup.backupId),
  }));
  return { backups: summaries.reverse(), warnings };
}

export interface BackupDetails extends BackupSummary {
  /** Neighbours among WAITING_FOR_WALS/DONE backups. */
  previousBackupId: string | null;
  nextBackupId: string | null;
  childrenTimelines: TimelineSwitch[];
}

/** show-backup's data for one backup of the catalog (looked up by exact ID). */
export async function backupDetails(server: ReportServer, backupId: string, now: Date = new Date()): Promise<{ details: BackupDetails; warnings: string[] } | null> {
  const report = await serverBackupsReport(server, now);
  const oldestFirst = [...report.backups].reverse();
  const at = oldestFirst.findIndex((s) => s.backup.backupId === backupId);
  if (at < 0) return null;
  const summary = oldestFirst[at]!;
  const done = (s: BackupSummary) => STATUS_COPY_DONE.includes(s.backup.info.status);
  const previous = oldestFirst.slice(0, at).reverse().find(done) ?? null;
  const next = oldestFirst.slice(at + 1).find(done) ?? null;
  const info = summary.backup.info;
  let children: TimelineSwitch[] = [];
  if (done(summary) && info.timeline !== null) {
    try {
      children = await childTimelines(server.paths, info.timeline, info.end_xlog);
    } catch (err) {
      // A damaged history file costs the timeline warning, not the whole report.
      report.warnings.push(`cannot tell which timelines branched off after backup ${backupId}: ${(err as Error).message}`);
    }
  }
  return {
    details: { ...summary, previousBackupId: previous?.backup.backupId ?? null, nextBackupId: next?.backup.backupId ?? null, childrenTimelines: children },
    warnings: report.warnings,
  };
}

/** WAL statistics of every WAITING_FOR_WALS/DONE backup, in a single read of xlog.db. */
async function walStatsFor(server: ReportServer, oldestFirst: readonly CatalogBackup[], warnings: string[]): Promise<Map<string, WalStats>> {
  const copyDone = oldestFirst.filter((b) => isCopyDone(b.info.status));
  const slots = copyDone.map((b, i) => ({
    id: b.backupId,
    acc: new WalStatsAccumulator(b.info, copyDone[i + 1]?.info.end_wal ?? null),
    failed: false,
  }));
  const out = new Map<string, WalStats>();
  if (slots.length === 0) return out;
  const xlogDb = await xlogDbPath(server.paths);
  for await (const entry of readXlogDb(xlogDb, { onInvalidLine: (e) => warnings.push(e.message) })) {
    let active = false;
    for (const slot of slots) {
      if (slot.failed || !slot.acc.active) continue;
      active = true;
      try {
        slot.acc.add(entry);
      } catch (err) {
        if (!(err instanceof BadWalNameError)) throw err;
        // Barman reports the name and lists the backup without WAL figures.
        slot.failed = true;
        warnings.push(`invalid xlog segment name ${JSON.stringify(err.walName)} in ${xlogDb}: WAL figures of backup ${slot.id} are not available`);
      }
    }
    if (!active) break;
  }
  for (const slot of slots) if (!slot.failed) out.set(slot.id, slot.acc.result());
  return out;
}

function isCopyDone(status: BackupStatus): boolean {
  return STATUS_COPY_DONE.includes(status);
}
