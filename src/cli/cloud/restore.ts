import { Option } from 'commander';
import { isAbsolute } from 'node:path';
import { BackupNotFoundError } from '../../catalog/catalog.ts';
import { parseRecoveryTarget, RecoveryInputError, type RecoveryTarget, type TargetOptions } from '../../recovery/targets.ts';
import { CloudExit, cloudConnection, cloudProgram, EXIT_OPERATION, EXIT_USAGE, parseCloudArgs, runCloud, type CloudCommonOptions } from './cloud-program.ts';
import { storageExit } from './catalog-command.ts';
import { loadKey, openCloudStore, parseJobs, sayFor, type Say } from './backup-restore-common.ts';

// barkeep-cloud-restore: barman-cloud-restore's command line, restoring in
// parallel, verifying against the backup_manifest, and optionally writing the
// recovery configuration.

interface RestoreFlags extends CloudCommonOptions {
  tablespace?: string[];
  targetTime?: string;
  targetLsn?: string;
  targetTli?: string;
  jobs: number;
  recoveryTargetTime?: string;
  recoveryTargetXid?: string;
  recoveryTargetLsn?: string;
  recoveryTargetName?: string;
  recoveryTargetImmediate?: boolean;
  recoveryTargetTli?: string;
  recoveryTargetAction?: string;
  restoreCommand?: string;
  snapshotRecoveryInstance?: string;
  snapshotRecoveryZone?: string;
}

export async function main(argv: string[]): Promise<number> {
  const program = cloudProgram(
    'barkeep-cloud-restore',
    'Restore a backup made with barkeep-cloud-backup or barman-cloud-backup from the cloud into RECOVERY_DESTINATION. ' +
      'Archives are downloaded and extracted in parallel (-J), large ones with parallel ranged requests; every file is ' +
      'checked against the backup_manifest when the backup has one (barkeep-cloud-backup stores it), and the restored ' +
      'files are flushed to disk before success is reported. With --restore-command or a --recovery-target-* option, ' +
      'the recovery configuration is written too (postgresql.auto.conf, recovery.signal; archive_command disabled as ' +
      'barman recover does); otherwise configure recovery yourself, as with barman-cloud-restore.',
    'source',
  )
    .argument('<BACKUP_ID>', "the backup ID, a backup name, 'latest'/'last', 'oldest'/'first', or 'auto' (the newest backup ending before --target-time/--target-lsn)")
    .argument('<RECOVERY_DESTINATION>', 'the path to a directory for recovery (absent or empty)')
    .option('--tablespace <NAME:LOCATION>', 'tablespace relocation rule (repeatable)', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option('--target-time <time>', "with BACKUP_ID 'auto': choose the newest backup that ended before this time")
    .option('--target-lsn <lsn>', "with BACKUP_ID 'auto': choose the newest backup that ended before this LSN")
    .option('--target-tli <tli>', "with BACKUP_ID 'auto': choose among the backups of this timeline")
    .addOption(new Option('-J, --jobs <n>', 'archives extracted, and ranged downloads, in parallel').argParser((v) => parseJobs(v, '-J/--jobs')).default(4))
    .option('--recovery-target-time <time>', 'write recovery_target_time (barkeep extension)')
    .option('--recovery-target-xid <xid>', 'write recovery_target_xid (barkeep extension)')
    .option('--recovery-target-lsn <lsn>', 'write recovery_target_lsn (barkeep extension)')
    .option('--recovery-target-name <name>', 'write recovery_target_name: a restore point, e.g. barman_<BACKUP_ID> (barkeep extension)')
    .option('--recovery-target-immediate', "write recovery_target = 'immediate': end recovery as soon as the backup is consistent (barkeep extension)")
    .option('--recovery-target-tli <tli>', "write recovery_target_timeline: a number, 'current' or 'latest' (barkeep extension)")
    .addOption(new Option('--recovery-target-action <action>', 'write recovery_target_action (barkeep extension)').choices(['pause', 'shutdown', 'promote']))
    .option('--restore-command <command>', "write restore_command, e.g. 'barkeep-cloud-wal-restore s3://bucket/ pg %f %p' (barkeep extension)")
    .addOption(new Option('--snapshot-recovery-instance <name>', 'snapshot backups are not supported by barkeep').hideHelp())
    .addOption(new Option('--snapshot-recovery-zone <zone>', 'snapshot backups are not supported by barkeep').hideHelp());

  const early = parseCloudArgs(program, argv);
  if (early !== null) return early;
  return runCloud(async () => {
    const [url, server, backupQuery, destination] = program.processedArgs as [string, string, string, string];
    const flags = program.opts<RestoreFlags>();
    const say = sayFor(flags);
    const connection = cloudConnection(flags);
    if (flags.snapshotRecoveryInstance !== undefined || flags.snapshotRecoveryZone !== undefined) {
      throw new CloudExit('snapshot backups are not supported by barkeep-cloud-restore', EXIT_USAGE);
    }
    const relocations = parseRelocations(flags.tablespace ?? []);
    const { selection, recovery } = parseTargets(flags, say);
    if (destination === '') throw new CloudExit('RECOVERY_DESTINATION is empty', EXIT_USAGE);
    const key = await loadKey(connection.encryptionKeyFile);
    const store = await openCloudStore(url, connection, { maxSockets: Math.max(50, flags.jobs * 2) });
    try {
      if (flags.test) {
        await store.bucketExists();
        return 0;
      }
      if (!(await store.bucketExists())) throw new CloudExit(`Bucket ${store.location} does not exist`, EXIT_OPERATION);
      const { cloudRestore, RestoreDestinationError, RestoreInputError, RestoreVerificationError } = await import('../../cloud/restore.ts');
      try {
        const r = await cloudRestore({
          store,
          server,
          backupQuery,
          destination,
          relocations,
          selection,
          recovery,
          jobs: flags.jobs,
          encryptionKey: key,
          print: say.print,
          verbose: say.verbose,
          warn: say.warn,
        });
        say.print(
          `Restored backup ${r.backupId} of server ${server} into ${destination}: ${r.files} files, ${(r.bytes / 1048576).toFixed(1)} MiB in ${r.seconds.toFixed(1)} s` +
            (r.verified === null ? ' (no backup_manifest: files not verified)' : `, ${r.verified} files verified against the backup_manifest`),
        );
        for (const t of r.tablespaces) say.print(`Tablespace ${t.name} (oid ${t.oid}) restored into ${t.location}`);
        say.print(`Backup end: LSN ${r.info.end_xlog} (${r.info.end_wal}), ${r.info.end_time}`);
        for (const line of r.archiveCommandDisabled) say.print(`Disabled for safety, review it: ${line}`);
        if (recovery) {
          say.print('Recovery configuration appended to postgresql.auto.conf, with recovery.signal:');
          for (const line of r.recoveryLines) say.print(`    ${line}`);
          say.print(`Next step: start PostgreSQL on ${destination} (as the user owning it); it replays the WAL and ${recovery.target.kind ? 'stops at the target' : 'ends recovery at the end of the archive'}.`);
        } else {
          say.print(
            `Next step: configure recovery (restore_command = 'barkeep-cloud-wal-restore [options] SOURCE_URL ${server} %f %p' and recovery.signal in ${destination}), ` +
              'or run again with --restore-command and --recovery-target-*; then start PostgreSQL.',
          );
        }
        if (process.geteuid?.() === 0) say.print(`The files belong to root: give them to the PostgreSQL user (chown -R postgres: ${destination}) before starting it.`);
        return 0;
      } catch (err) {
        if (err instanceof RestoreDestinationError) throw new CloudExit(err.message, EXIT_OPERATION);
        if (err instanceof RestoreVerificationError || err instanceof RestoreInputError || err instanceof BackupNotFoundError || err instanceof RecoveryInputError) {
          throw new CloudExit(`${err.message}${err instanceof RestoreVerificationError ? ` (the restore in ${destination} is incomplete: remove it before trying again)` : ''}`, EXIT_OPERATION);
        }
        throw err;
      }
    } catch (err) {
      return storageExit(err);
    } finally {
      store.close();
    }
  });
}


function parseRelocations(rules: string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const rule of rules) {
    const colon = rule.indexOf(':');
    if (colon <= 0 || colon === rule.length - 1) {
      throw new CloudExit(`Invalid tablespace relocation rule '${rule}': the valid syntax for a relocation rule is NAME:LOCATION`, EXIT_USAGE);
    }
    const location = rule.slice(colon + 1);
    if (!isAbsolute(location)) throw new CloudExit(`Invalid tablespace relocation rule '${rule}': LOCATION must be an absolute path`, EXIT_USAGE);
    map.set(rule.slice(0, colon), location);
  }
  return map;
}

function parseTargets(flags: RestoreFlags, say: Say): { selection: RecoveryTarget; recovery: { target: RecoveryTarget; restoreCommand: string | null } | null } {
  const parse = (opts: TargetOptions, prefix: string): RecoveryTarget => {
    try {
      const { target, warnings } = parseRecoveryTarget(opts);
      for (const w of warnings) say.warn(w.replace(/--target-/g, prefix));
      return target;
    } catch (err) {
      if (err instanceof RecoveryInputError) throw new CloudExit(err.message.replace(/--target-/g, prefix), EXIT_USAGE);
      throw err;
    }
  };
  const recoveryGiven =
    flags.recoveryTargetTime !== undefined ||
    flags.recoveryTargetXid !== undefined ||
    flags.recoveryTargetLsn !== undefined ||
    flags.recoveryTargetName !== undefined ||
    flags.recoveryTargetImmediate === true ||
    flags.recoveryTargetTli !== undefined ||
    flags.recoveryTargetAction !== undefined ||
    flags.restoreCommand !== undefined;
  let recovery: { target: RecoveryTarget; restoreCommand: string | null } | null = null;
  if (recoveryGiven) {
    const target = parse(
      {
        ...(flags.recoveryTargetTime !== undefined ? { targetTime: flags.recoveryTargetTime } : {}),
        ...(flags.recoveryTargetXid !== undefined ? { targetXid: flags.recoveryTargetXid } : {}),
        ...(flags.recoveryTargetLsn !== undefined ? { targetLsn: flags.recoveryTargetLsn } : {}),
        ...(flags.recoveryTargetName !== undefined ? { targetName: flags.recoveryTargetName } : {}),
        ...(flags.recoveryTargetImmediate ? { targetImmediate: true } : {}),
        ...(flags.recoveryTargetTli !== undefined ? { targetTli: flags.recoveryTargetTli } : {}),
        ...(flags.recoveryTargetAction !== undefined ? { targetAction: flags.recoveryTargetAction } : {}),
      },
      '--recovery-target-',
    );
    if (flags.restoreCommand !== undefined && /[\n\r]/.test(flags.restoreCommand)) throw new CloudExit('--restore-command must be one line', EXIT_USAGE);
    if (flags.restoreCommand === undefined) {
      say.warn('no --restore-command: PostgreSQL needs a restore_command (in its configuration) to fetch the WAL from the bucket');
    }
    recovery = { target, restoreCommand: flags.restoreCommand ?? null };
  }
  const selectionGiven = flags.targetTime !== undefined || flags.targetLsn !== undefined || flags.targetTli !== undefined;
  const selection = selectionGiven
    ? parse(
        {
          ...(flags.targetTime !== undefined ? { targetTime: flags.targetTime } : {}),
          ...(flags.targetLsn !== undefined ? { targetLsn: flags.targetLsn } : {}),
          ...(flags.targetTli !== undefined ? { targetTli: flags.targetTli } : {}),
        },
        '--target-',
      )
    : (recovery?.target ?? { kind: null, tli: null, exclusive: false, action: null });
  return { selection, recovery };
}
