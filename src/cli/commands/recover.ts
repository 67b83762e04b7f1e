import { Option } from 'commander';
import { BackupNotFoundError } from '../../catalog/catalog.ts';
import { ServerHooks } from '../../hooks/server-hooks.ts';
import { recover, RecoveryError, type RecoverOptions } from '../../recovery/recover.ts';
import { formatRecoveryReport } from '../../recovery/recovery-report.ts';
import { RestoreCopyError } from '../../recovery/copy/restore-copy.ts';
import { SshCommandError } from '../../recovery/ssh/ssh-command.ts';
import { SshError } from '../../recovery/ssh/ssh-error.ts';
import { parseRecoveryTarget, RecoveryInputError, type TargetOptions } from '../../recovery/targets.ts';
import type { CommandHost } from '../command-host.ts';
import { CliError, type CliContext } from '../context.ts';
import { progressLine } from '../progress-line.ts';

// `barkeep recover` (alias `restore`) SERVER BACKUP_ID DESTINATION_DIR, with
// Barman's flags (barman-formats §5.1). Copy tuning flags that belong to
// rsync (batch sizes, retries, network compression, staging for
// decompression) are accepted so existing runbooks keep working: barkeep
// streams and decompresses on the way and has nothing to tune there.

interface RecoverCliOptions extends TargetOptions {
  remoteSshCommand?: string;
  standbyMode?: boolean;
  tablespace: string[];
  getWal?: boolean;
  deltaRestore?: boolean;
  networkCompression?: boolean;
  bwlimit?: string;
  jobs?: string;
  recoveryConfFilename?: string;
  recoveryOptionPort?: string;
  stagingWalDirectory?: string;
  stagingLocation?: string;
  combineMode?: string;
  snapshotRecoveryInstance?: string;
}

export function register(host: CommandHost): void {
  host.program
    .command('recover')
    .alias('restore')
    .description('restore a backup and the WAL it needs into a directory, locally or over SSH, set up for point-in-time recovery')
    .argument('<server>', 'server name')
    .argument('<backup_id>', "backup ID, name, shortcut (latest, oldest, ...) or 'auto' (the newest backup ending before the target)")
    .argument('<destination_directory>', 'the data directory to create (absolute path; must be empty or absent)')
    .option('--remote-ssh-command <command>', "restore onto another host: an OpenSSH command line such as 'ssh -i ~/.ssh/pg postgres@db'")
    .option('--target-time <timestamp>', "stop at this time, e.g. '2026-11-21 16:05:35.893534+00:00' (without a zone: this host's)")
    .option('--target-xid <xid>', 'stop at the end of this transaction')
    .option('--target-lsn <lsn>', 'stop at this WAL location')
    .option('--target-name <name>', 'stop at this restore point (pg_create_restore_point)')
    .option('--target-immediate', 'stop as soon as the backup is consistent')
    .option('--target-tli <tli>', "the timeline to follow: a number, 'current' or 'latest'")
    .option('--exclusive', 'stop just before the target (time, xid or lsn) instead of just after')
    .addOption(new Option('--target-action <action>', 'what PostgreSQL does at the target').choices(['pause', 'shutdown', 'promote']))
    .option('--standby-mode', 'start as a standby (standby.signal)')
    .option('--tablespace <name:location>', 'restore a tablespace to another location (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--get-wal', 'let PostgreSQL fetch WAL from barkeep with barkeep-wal-restore / get-wal (recovery_options get-wal)')
    .option('--no-get-wal', 'copy the WAL with the backup even when recovery_options has get-wal')
    .option('--delta-restore', 'not supported: restore into an empty directory')
    .option('--no-delta-restore', 'restore into an empty directory (the default)')
    .option('--network-compression', 'compress the SSH transfer with zstd (needs zstd on the remote host; by default used when it is there)')
    .option('--no-network-compression', 'send the SSH transfer uncompressed')
    .option('--bwlimit <kbps>', 'bandwidth limit in KiB/s, 0 for none')
    .option('-j, --jobs <n>', 'parallel copy lanes (default: parallel_jobs when set, else 2)')
    .addOption(new Option('--jobs-start-batch-period <seconds>').hideHelp())
    .addOption(new Option('--jobs-start-batch-size <n>').hideHelp())
    .addOption(new Option('--retry-times <n>').hideHelp())
    .addOption(new Option('--retry-sleep <seconds>').hideHelp())
    .addOption(new Option('--no-retry').hideHelp())
    .option('--recovery-conf-filename <file>', 'write the recovery settings to this file of the data directory instead of postgresql.auto.conf')
    .option('--recovery-option-port <port>', 'SSH port of this host for the barkeep-wal-restore command written with --get-wal')
    .option('--staging-wal-directory <dir>', 'where the WAL for recovery is put (default: barman_wal inside the destination)')
    .addOption(new Option('--staging-path <path>').hideHelp())
    .addOption(new Option('--staging-location <where>').choices(['local', 'remote']).hideHelp())
    .addOption(new Option('--combine-mode <mode>').hideHelp())
    .addOption(new Option('--snapshot-recovery-instance <name>').hideHelp())
    .action(async (server: string, backupId: string, destination: string, opts: RecoverCliOptions) => {
      host.setExitCode(await runRecover(host.context(), server, backupId, destination, opts));
    });
}

function whole(value: string | undefined, flag: string, min = 0): number | null {
  if (value === undefined) return null;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) throw new CliError(`${flag} '${value}': use a whole number >= ${min}`);
  return n;
}

export async function runRecover(ctx: CliContext, serverName: string, backupQuery: string, destination: string, opts: RecoverCliOptions): Promise<number> {
  const server = ctx.selectServer(serverName);
  if (!server) return 1;
  if (opts.deltaRestore) throw new CliError('--delta-restore is not supported by barkeep: restore into an empty or new directory');
  if (opts.networkCompression && !opts.remoteSshCommand) throw new CliError('Network compression can only be used with remote recovery');
  if (opts.snapshotRecoveryInstance) throw new CliError('--snapshot-recovery-instance: barkeep has no snapshot backups');
  if (opts.stagingLocation === 'remote' && !opts.remoteSshCommand) throw new CliError("--staging-location remote requires --remote-ssh-command");
  const tablespaces = new Map<string, string>();
  for (const rule of opts.tablespace) {
    const i = rule.indexOf(':');
    if (i <= 0 || i === rule.length - 1) throw new CliError(`Invalid tablespace relocation rule '${rule}': use NAME:LOCATION`);
    tablespaces.set(rule.slice(0, i), rule.slice(i + 1));
  }
  // Barman's parallel_jobs (1 by default) counts rsync processes; barkeep's lanes
  // are cheap, so without the setting it uses two (more rarely helps: the disk
  // or the network is the limit by then).
  const jobs = whole(opts.jobs, '--jobs', 1) ?? Math.max(1, server.sources.parallel_jobs !== undefined && server.sources.parallel_jobs !== 'default' ? (server.settings.parallel_jobs ?? 1) : 2);
  const bwlimit = whole(opts.bwlimit, '--bwlimit') ?? (server.settings.bandwidth_limit ?? null);
  const recoveryOptions = (server.settings.recovery_options ?? []) as readonly string[];
  const getWal = opts.getWal ?? recoveryOptions.includes('get-wal');

  const progress = progressLine(ctx, 'restored');
  try {
    const { target, warnings } = parseRecoveryTarget(opts);
    for (const w of warnings) ctx.warning(w);
    const recoverOpts: RecoverOptions = {
      server,
      backupQuery,
      destination,
      target,
      remoteSshCommand: opts.remoteSshCommand ?? null,
      jobs,
      bwlimit: bwlimit === 0 ? null : bwlimit,
      tablespaces,
      getWal,
      standbyMode: opts.standbyMode === true,
      recoveryConfFilename: opts.recoveryConfFilename ?? null,
      stagingWalDirectory: opts.stagingWalDirectory ?? null,
      recoveryOptionPort: whole(opts.recoveryOptionPort, '--recovery-option-port', 1),
      configFile: ctx.opts.config ?? null,
      networkCompression: opts.networkCompression ?? server.settings.network_compression ?? null,
      hooks: ServerHooks.forServer(server, { configFile: ctx.config.file, logger: ctx.logger }),
      // What Barman's cli passes on to its recovery hooks, as given (target_tli as a number when it is one).
      hookOptions: {
        target_tli: opts.targetTli !== undefined && /^\d+$/.test(opts.targetTli) ? Number(opts.targetTli) : opts.targetTli,
        target_time: opts.targetTime,
        target_xid: opts.targetXid,
        target_lsn: opts.targetLsn,
        target_name: opts.targetName,
        target_immediate: opts.targetImmediate,
        exclusive: opts.exclusive,
        target_action: opts.targetAction,
        standby_mode: opts.standbyMode,
        recovery_conf_filename: opts.recoveryConfFilename,
        recovery_option_port: opts.recoveryOptionPort,
      },
    };
    const json = ctx.opts.format === 'json';
    const summary = await recover(recoverOpts, {
      print: (line) => {
        progress.clear();
        if (!json) ctx.print(line);
      },
      warning: (m) => {
        progress.clear();
        ctx.warning(m);
      },
      logger: ctx.logger,
      onProgress: progress.update,
    });
    progress.clear();
    if (json) {
      ctx.printJson({
        server: server.name,
        backup_id: summary.backupId,
        destination: summary.destination,
        remote_command: opts.remoteSshCommand ?? null,
        elapsed_seconds: summary.elapsedSeconds,
        files: summary.files,
        bytes: summary.bytes,
        verified_files: summary.verifiedFiles,
        wal_segments: summary.walSegments,
        changes: summary.changed,
        warnings: summary.dangerous,
        missing_files: summary.missingFiles,
      });
    } else if (!ctx.opts.quiet) {
      process.stdout.write(formatRecoveryReport(summary));
    }
    return 0;
  } catch (err) {
    progress.clear();
    if (err instanceof RecoveryInputError || err instanceof RecoveryError || err instanceof BackupNotFoundError || err instanceof SshCommandError || err instanceof SshError) {
      ctx.error(err.message);
      return 1;
    }
    if (err instanceof RestoreCopyError) {
      ctx.error(`Failure copying base backup: ${err.message}`);
      return 1;
    }
    ctx.logger.error({ err, server: server.name }, 'recover failed');
    ctx.error(`Recovery of server ${server.name} failed: ${(err as Error).message}`);
    return 1;
  }
}
