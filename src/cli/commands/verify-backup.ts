import { BackupNotFoundError, listBackups, resolveBackupId } from '../../catalog/catalog.ts';
import { DEFAULT_XLOG_SEGMENT_SIZE, STATUS_COPY_DONE } from '../../catalog/backup-info.ts';
import type { ServerConfig } from '../../config/load.ts';
import { verifyBackup, type VerifyReport } from '../../backup/verify-backup.ts';
import { archiveWalLookup } from '../../backup/verify/archive-wal.ts';
import { locateBackupFiles } from '../../backup/verify/locate.ts';
import { writeVerifyResult, type VerifyResultRecord } from '../../backup/verify/result-file.ts';
import { pathExists } from '../../util/durable-fs.ts';
import { prettySize } from '../../util/human.ts';
import type { CommandHost } from '../command-host.ts';
import type { CliContext } from '../context.ts';

// `barkeep verify-backup SERVER BACKUP_ID` (alias `verify`). Barman runs
// pg_verifybackup -n on the data directory; barkeep verifies natively, tar
// backups included without extracting them, and the WAL the backup needs in the
// archive as well. The outcome is recorded in meta/<id>-verify.json.

export function register(host: CommandHost): void {
  host.program
    .command('verify-backup')
    .alias('verify')
    .description("verify a backup against its backup_manifest: every file's size and checksum, and the WAL it needs in the archive")
    .argument('<server>', 'server name')
    .argument('<backup_id>', 'backup ID, or a shortcut: latest/last, oldest/first, last-failed, latest-full, or a backup name')
    .action(async (server: string, backupId: string) => {
      host.setExitCode(await runVerifyBackup(host.context(), server, backupId));
    });
}

export async function runVerifyBackup(ctx: CliContext, serverName: string, query: string): Promise<number> {
  const server = ctx.selectServer(serverName, { allowInactive: true });
  if (!server) return 1;
  const catalog = await listBackups(server.paths);
  let backup;
  try {
    backup = resolveBackupId(catalog.backups, query, server.name);
  } catch (err) {
    if (!(err instanceof BackupNotFoundError)) throw err;
    for (const problem of catalog.errors) ctx.warning(`${problem.path}: ${problem.message}`);
    ctx.error(err.message);
    return 1;
  }
  const { backupId, info } = backup;
  if (!STATUS_COPY_DONE.includes(info.status)) {
    ctx.error(`Cannot verify backup ${backupId} of server ${server.name}: its status is ${info.status} (only WAITING_FOR_WALS or DONE backups are complete)`);
    return 1;
  }
  const files = await locateBackupFiles(server.paths, backupId, info);
  if (!(await pathExists(files.manifestPath))) {
    ctx.error(
      `Cannot verify backup ${backupId} of server ${server.name}: it has no backup_manifest (${files.manifestPath}); backups taken with rsync need 'barman generate-manifest' first`,
    );
    return 1;
  }

  const json = ctx.opts.format === 'json';
  if (!json) ctx.print(`Verifying backup ${backupId} of server ${server.name}`);
  const started = Date.now();
  const report = await verifyBackup({
    dataDir: files.dataDir,
    tablespaceDirs: files.tablespaceDirs,
    format: files.format,
    manifestPath: files.manifestPath,
    walLookup: archiveWalLookup(server.paths),
    walSegmentSize: info.xlog_segment_size ?? DEFAULT_XLOG_SEGMENT_SIZE,
    systemIdentifier: info.systemid,
    pgMajor: info.version !== null ? Math.floor(info.version / 10000) : null,
    pathPrefix: server.settings.path_prefix ?? null,
  });
  const record: VerifyResultRecord = {
    backup_id: backupId,
    server: server.name,
    verified_at: new Date().toISOString(),
    result: report.ok ? 'OK' : 'FAILED',
    format: files.format,
    checked_files: report.checkedFiles,
    checked_bytes: report.checkedBytes,
    manifest_files: report.manifestFiles,
    wal_segments: report.walSegments,
    duration_seconds: Math.round((Date.now() - started) / 100) / 10,
    problems_total: report.problems.length,
    problems: report.problems,
  };
  ctx.logger.info({ server: server.name, backupId, result: record.result, problems: report.problems.length, checkedFiles: report.checkedFiles, checkedBytes: report.checkedBytes }, 'verify-backup');
  try {
    await writeVerifyResult(server.paths, record);
  } catch (err) {
    // The verdict stands even if it cannot be recorded (read-only catalog, full disk).
    ctx.warning(`could not record the verification result of backup ${backupId}: ${(err as Error).message}`);
  }

  if (json) ctx.printJson(record);
  else printConsole(ctx, backupId, server.name, report);
  return report.ok ? 0 : 1;
}

function printConsole(ctx: CliContext, backupId: string, serverName: string, report: VerifyReport): void {
  const wal = report.walSegments === null ? '' : `, ${report.walSegments.verified} WAL segment${report.walSegments.verified === 1 ? '' : 's'}`;
  const checked = `${report.checkedFiles} files, ${prettySize(report.checkedBytes)} checked${wal}`;
  if (report.ok) {
    ctx.print(`Backup ${backupId} verified: ${checked}`);
    return;
  }
  // Problems go to stderr so that -q still shows them; each message names its file.
  for (const problem of report.problems) ctx.error(problem.message);
  const n = report.problems.length;
  ctx.error(`Backup ${backupId} of server ${serverName} failed verification: ${n} problem${n === 1 ? '' : 's'} (${checked})`);
}

/** One server by name (no `all`); inactive servers too, since verifying only reads the catalog. */
