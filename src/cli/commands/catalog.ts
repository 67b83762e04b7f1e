import { Option } from 'commander';
import { backupFiles, LIST_FILES_TARGETS, type ListFilesTarget } from '../../backup/backup-files.ts';
import { backupDetails, serverBackupsReport } from '../../backup/backup-report.ts';
import { refreshBackupStatus } from '../../backup/check-backup.ts';
import { deleteBackup } from '../../backup/delete-backup.ts';
import { BadWalNameError } from '../../backup/wal-range.ts';
import { STATUS_COPY_DONE } from '../../catalog/backup-info.ts';
import {
  BackupNotFoundError,
  type CatalogBackup,
  type KeepTarget,
  listBackups,
  readKeepAnnotation,
  removeKeepAnnotation,
  resolveBackupId,
  writeKeepAnnotation,
} from '../../catalog/catalog.ts';
import type { ServerConfig } from '../../config/load.ts';
import { ServerHooks } from '../../hooks/server-hooks.ts';
import type { CommandHost } from '../command-host.ts';
import { CliError, type CliContext } from '../context.ts';
import { listBackupJson, listBackupLine, showBackupJson, showBackupLines } from './backup-catalog-format.ts';
import { type Json, sortKeys } from './replication-status-format.ts';

// The backup catalog commands, with Barman's names, flags and output:
// list-backup, show-backup, list-files, check-backup, keep and delete.

export function register(host: CommandHost): void {
  const { program } = host;
  const run = (fn: () => Promise<number>) => async () => host.setExitCode(await fn());

  program
    .command('list-backup')
    .alias('list-backups')
    .description('list the backups of servers, newest first')
    .argument('<server...>', "server names, or 'all'")
    .option('--minimal', 'machine readable output: backup IDs only')
    .action(async (names: string[], opts: { minimal?: boolean }) => run(() => runListBackup(host.context(), names, opts))());

  program
    .command('show-backup')
    .alias('show-backups')
    .description('show the details of a backup')
    .argument('<server>', 'server name')
    .argument('<backup_id>', 'backup ID, name, or latest/last, oldest/first, latest-full/last-full, last-failed')
    .action(async (server: string, backupId: string) => run(() => runShowBackup(host.context(), server, backupId))());

  program
    .command('list-files')
    .description('list the files of a backup, one absolute path per line')
    .argument('<server>', 'server name')
    .argument('<backup_id>', 'backup ID, name or shortcut')
    .addOption(
      new Option(
        '--target <target>',
        'data: the backup directory; standalone: data plus the WAL needed for consistency; wal: the WAL from the backup to the next one (or the end of the archive); full: data plus wal',
      )
        .choices(LIST_FILES_TARGETS)
        .default('standalone'),
    )
    .option('--list-empty-directories', 'also list empty directories of the backup')
    .action(async (server: string, backupId: string, opts: { target: ListFilesTarget; listEmptyDirectories?: boolean }) =>
      run(() => runListFiles(host.context(), server, backupId, opts))(),
    );

  program
    .command('check-backup')
    .description('check that the WAL a backup needs for consistency is archived, updating its status (WAITING_FOR_WALS, DONE or FAILED)')
    .argument('<server>', 'server name')
    .argument('<backup_id>', 'backup ID, name or shortcut')
    .action(async (server: string, backupId: string) => run(() => runCheckBackup(host.context(), server, backupId))());

  program
    .command('keep')
    .description('keep a backup (and the WAL it needs) whatever the retention policy says, show or release that')
    .argument('<server>', 'server name')
    .argument('<backup_id>', 'backup ID, name or shortcut')
    .option('-r, --release', 'remove the keep annotation')
    .option('-s, --status', 'return the keep status of the backup')
    .addOption(new Option('--target <target>', 'keep this backup with the specified recovery target').choices(['full', 'standalone']))
    .action(async (server: string, backupId: string, opts: KeepOptions) => run(() => runKeep(host.context(), server, backupId, opts))());

  program
    .command('delete')
    .description('delete a backup (and its incremental backups), with the WAL no other backup needs')
    .argument('<server>', 'server name')
    .argument('<backup_id>', 'backup ID, name or shortcut')
    .action(async (server: string, backupId: string) => run(() => runDelete(host.context(), server, backupId))());
}

/**
 * Messages of a command that are not its result document: printed as they come in
 * console mode, collected as Barman's `_INFO`/`_WARNING`/`_ERROR` lists with -f json.
 */
class Messages {
  private readonly ctx: CliContext;
  private readonly doc: Record<string, string[]> = {};
  private errors = 0;

  constructor(ctx: CliContext) {
    this.ctx = ctx;
  }

  private get json(): boolean {
    return this.ctx.opts.format === 'json';
  }

  private collect(key: string, line: string): void {
    (this.doc[key] ??= []).push(line);
  }

  info = (line: string): void => {
    if (this.json) this.collect('_INFO', line);
    else this.ctx.print(line);
  };

  warning = (line: string): void => {
    if (this.json) this.collect('_WARNING', line);
    else this.ctx.warning(line);
  };

  error = (line: string): void => {
    this.errors++;
    if (this.json) this.collect('_ERROR', line);
    else this.ctx.error(line);
  };

  /** Prints the JSON document (if any) and returns the exit code. */
  finish(extra: Record<string, Json> = {}): number {
    if (this.json) this.ctx.printJson(sortKeys({ ...extra, ...this.doc }));
    return this.errors > 0 || this.ctx.hadErrors ? 1 : 0;
  }
}

/** One server by name (`all` is no server name here); null once the reason is printed. */

async function resolveBackup(server: ServerConfig, query: string): Promise<CatalogBackup> {
  const catalog = await listBackups(server.paths);
  try {
    return resolveBackupId(catalog.backups, query, server.name);
  } catch (err) {
    if (err instanceof BackupNotFoundError) throw new CliError(err.message);
    throw err;
  }
}

// ------------------------------------------------------------------ list-backup

export async function runListBackup(ctx: CliContext, names: string[], opts: { minimal?: boolean }): Promise<number> {
  // With `all`, inactive servers are skipped silently, as Barman does.
  const wanted = names.includes('all') ? [...ctx.config.servers.values()].filter((s) => s.settings.active !== false && !s.disabled).map((s) => s.name) : names;
  const servers = ctx.selectServers(wanted).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const json = ctx.opts.format === 'json';
  const doc: Record<string, Json> = {};
  for (const server of servers) {
    const report = await serverBackupsReport(server);
    for (const w of report.warnings) ctx.warning(w);
    if (json) {
      doc[server.name] = report.backups.map((s) => (opts.minimal ? s.backup.backupId : listBackupJson(s)));
    } else {
      for (const s of report.backups) ctx.print(opts.minimal ? s.backup.backupId : listBackupLine(s, server.name));
    }
  }
  if (json) ctx.printJson(sortKeys(doc));
  return ctx.hadErrors ? 1 : 0;
}

// ------------------------------------------------------------------ show-backup

export async function runShowBackup(ctx: CliContext, name: string, query: string): Promise<number> {
  const server = ctx.selectServer(name, { allowInactive: true });
  if (!server) return 1;
  const backup = await resolveBackup(server, query);
  const found = await backupDetails(server, backup.backupId);
  if (found === null) throw new CliError(`Unknown backup '${query}' for server '${server.name}'`);
  for (const w of found.warnings) ctx.warning(w);
  if (ctx.opts.format === 'json') ctx.printJson({ [server.name]: showBackupJson(found.details) });
  else for (const line of showBackupLines(found.details)) ctx.print(line);
  return ctx.hadErrors ? 1 : 0;
}

// ------------------------------------------------------------------ list-files

export async function runListFiles(ctx: CliContext, name: string, query: string, opts: { target: ListFilesTarget; listEmptyDirectories?: boolean }): Promise<number> {
  const server = ctx.selectServer(name, { allowInactive: true });
  if (!server) return 1;
  const backup = await resolveBackup(server, query);
  const out = new Messages(ctx);
  const catalog = (await listBackups(server.paths)).backups;
  const next = catalog.find((b) => b.backupId > backup.backupId && STATUS_COPY_DONE.includes(b.info.status)) ?? null;
  try {
    for await (const path of backupFiles(server.paths, backup, opts.target, { emptyDirectories: opts.listEmptyDirectories ?? false, nextBackupEndWal: next?.info.end_wal ?? null })) {
      out.info(path);
    }
  } catch (err) {
    if (!(err instanceof BadWalNameError)) throw err;
    out.error(`${err.message}\nHINT: Please run "barkeep rebuild-xlogdb ${server.name}" to solve this issue`);
  }
  return out.finish();
}

// ------------------------------------------------------------------ check-backup

export async function runCheckBackup(ctx: CliContext, name: string, query: string): Promise<number> {
  const server = ctx.selectServer(name, { allowInactive: true });
  if (!server) return 1;
  const backup = await resolveBackup(server, query);
  const out = new Messages(ctx);
  const outcome = await refreshBackupStatus(server, backup.backupId);
  if (outcome.kind === 'failed') {
    out.error('The validity of a failed backup cannot be checked');
  } else if (outcome.kind === 'busy') {
    out.info(`Another process is holding the lock for backup ${backup.backupId} of server ${server.name}.`);
  } else {
    ctx.logger.info({ server: server.name, backup: backup.backupId, from: outcome.previous, to: outcome.status }, 'check-backup finished');
    if (outcome.status === 'FAILED') out.error(`This backup has been marked as FAILED due to the following reason: ${outcome.error ?? ''}`);
  }
  return out.finish();
}

// ------------------------------------------------------------------ keep

interface KeepOptions {
  release?: boolean;
  status?: boolean;
  target?: KeepTarget;
}

export async function runKeep(ctx: CliContext, name: string, query: string, opts: KeepOptions): Promise<number> {
  if (!opts.release && !opts.status && opts.target === undefined) {
    throw new CliError('one of the arguments -r/--release -s/--status --target is required');
  }
  const server = ctx.selectServer(name, { allowInactive: true });
  if (!server) return 1;
  const backup = await resolveBackup(server, query);
  const id = backup.backupId;
  if (opts.status) {
    const target = (await readKeepAnnotation(server.paths, id)) ?? 'nokeep';
    if (ctx.opts.format === 'json') {
      ctx.printJson({ [server.name]: { keep_status: { description: 'Keep', message: target } } });
    } else {
      ctx.print(`Server ${server.name}:`);
      ctx.print(`\tKeep: ${target}`);
    }
    return ctx.hadErrors ? 1 : 0;
  }
  if (opts.release) {
    await removeKeepAnnotation(server.paths, id);
    ctx.logger.info({ server: server.name, backup: id }, 'keep annotation released');
    return ctx.hadErrors ? 1 : 0;
  }
  if (backup.info.status !== 'DONE') {
    throw new CliError(`Cannot add keep to backup ${id} because it has status ${backup.info.status}. Only backups with status DONE can be kept.`);
  }
  if (backup.info.parent_backup_id !== null) {
    throw new CliError(`Unable to execute the keep command on backup ${id}: is an incremental backup.\nOnly full backups are eligible for the use of the keep command.`);
  }
  await writeKeepAnnotation(server.paths, id, opts.target as KeepTarget);
  ctx.logger.info({ server: server.name, backup: id, target: opts.target }, 'keep annotation written');
  return ctx.hadErrors ? 1 : 0;
}

// ------------------------------------------------------------------ delete

export async function runDelete(ctx: CliContext, name: string, query: string): Promise<number> {
  const server = ctx.selectServer(name, { allowInactive: true });
  if (!server) return 1;
  const backup = await resolveBackup(server, query);
  const out = new Messages(ctx);
  const hooks = ServerHooks.forServer(server, { configFile: ctx.config.file, logger: ctx.logger });
  const deleted = await deleteBackup(server, backup.backupId, { messages: out, hooks });
  if (deleted) ctx.logger.info({ server: server.name, backup: backup.backupId }, 'backup deleted');
  else out.error(`Cannot delete backup (${server.name} ${backup.backupId})`);
  return out.finish();
}
