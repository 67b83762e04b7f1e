// barkeep-cloud-backup-delete: deletes one backup (-b) or every backup a retention
// policy makes OBSOLETE (-r), with the WAL no remaining backup needs, by
// barman-cloud-backup-delete's rules (barman/clients/cloud_backup_delete.py).
//   -b refuses a kept backup, and with -m N a DONE backup when N or fewer DONE backups
//      are left;
//   -r computes the same report as the local catalog's retention and deletes the
//      OBSOLETE backups oldest first (OBSOLETE*, kept for -m, stay);
//   a backup.info that cannot be read stops everything: with a hole in the catalog,
//   retention could pick the wrong backups or WAL;
//   --dry-run names what would go and deletes nothing.
// Progress goes to stdout (-q silences it), problems to stderr.
import { Option } from 'commander';
import { applyCloudRetention, CloudCatalogUnsafe, safeDeleter } from '../../cloud/cloud-retention-apply.ts';
import { CloudDeleteError, type DeleteMessages } from '../../cloud/cloud-retention-delete.ts';
import { parseRetentionPolicy, type RetentionPolicy } from '../../config/retention-policy.ts';
import { ConfigValueError } from '../../config/values.ts';
import { cloudMessages, openCatalogSession, storageExit } from './catalog-command.ts';
import { CloudExit, type CloudCommonOptions, cloudProgram, EXIT_OPERATION, EXIT_USAGE, parseCloudArgs, runCloud } from './cloud-program.ts';

interface DeleteOptions extends CloudCommonOptions {
  backupId?: string;
  retentionPolicy?: string;
  minimumRedundancy: number;
  dryRun?: boolean;
  batchSize?: number;
}

function nonNegative(value: string): number {
  if (!/^\d+$/.test(value)) throw new CloudExit(`-m/--minimum-redundancy: '${value}' is not a whole number >= 0`, EXIT_USAGE);
  return Number(value);
}

function positive(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new CloudExit(`--batch-size: '${value}' is not a whole number >= 1`, EXIT_USAGE);
  return Number(value);
}

export async function main(argv: string[]): Promise<number> {
  const program = cloudProgram(
    'barkeep-cloud-backup-delete',
    'This script can be used to delete backups made with barman-cloud-backup (or barkeep-cloud-backup), with the WAL they alone needed. AWS S3 and S3-compatible stores are supported.',
    'source',
  )
    .addOption(new Option('-b, --backup-id <BACKUP_ID>', 'Backup ID of the backup to be deleted (or first/oldest, last/latest, last-failed, or a backup name)').conflicts('retentionPolicy'))
    .addOption(
      new Option(
        '-r, --retention-policy <RETENTION_POLICY>',
        'If specified, delete all backups eligible for deletion according to the supplied retention policy. Syntax: REDUNDANCY value | RECOVERY WINDOW OF value {DAYS | WEEKS | MONTHS}',
      ),
    )
    .addOption(new Option('-m, --minimum-redundancy <MINIMUM_REDUNDANCY>', 'The minimum number of backups that should always be available.').argParser(nonNegative).default(0))
    .option('--dry-run', 'Find the objects which need to be deleted but do not delete them')
    .addOption(
      new Option('--batch-size <DELETE_BATCH_SIZE>', 'The maximum number of objects to be deleted in a single request to the cloud provider (default and maximum: 1000 for aws-s3)').argParser(
        positive,
      ),
    );
  const early = parseCloudArgs(program, argv);
  if (early !== null) return early;
  const [url, server] = program.args as [string, string];
  const o = program.opts<DeleteOptions>();
  if (o.backupId === undefined && o.retentionPolicy === undefined) {
    process.stderr.write('ERROR: one of the arguments -b/--backup-id -r/--retention-policy is required\n');
    return EXIT_USAGE;
  }
  let policy: RetentionPolicy | null = null;
  if (o.retentionPolicy !== undefined) {
    try {
      policy = parseRetentionPolicy(o.retentionPolicy);
    } catch (err) {
      if (!(err instanceof ConfigValueError)) throw err;
      process.stderr.write(`ERROR: Could not create retention policy ${o.retentionPolicy}: ${err.message}\n`);
      return EXIT_USAGE;
    }
  }
  const log = cloudMessages(o, 'default');
  const messages: DeleteMessages = { ...log, dryRun: (line) => process.stdout.write(`${line}\n`) };

  return runCloud(async () => {
    const session = await openCatalogSession(url, server, o, log);
    if (session === null) return 0;
    const { catalog } = session;
    try {
      const common = { dryRun: o.dryRun ?? false, messages, keyPrefix: session.keyPrefix, ...(o.batchSize !== undefined ? { batchSize: o.batchSize } : {}) };
      let walFailed = false;
      if (policy === null) {
        const deleter = await safeDeleter(catalog, common);
        const backupId = await catalog.resolveBackupId(o.backupId!);
        // Read, not cached: this one backup's annotation is what matters.
        if ((await catalog.keepAnnotation(backupId, { useCache: false })) !== null) {
          throw new CloudExit(
            `Skipping delete of backup ${backupId} for server ${server} as it has a current keep request. ` +
              'If you really want to delete this backup please remove the keep and try again.',
            EXIT_OPERATION,
          );
        }
        const target = await catalog.backup(backupId);
        const done = (await catalog.backups()).filter((b) => b.info.status === 'DONE').length;
        if (target !== null && target.info.status === 'DONE' && o.minimumRedundancy > 0 && o.minimumRedundancy >= done) {
          throw new CloudExit(
            `Skipping delete of backup ${backupId} for server ${server} due to minimum redundancy requirements ` +
              `(minimum redundancy = ${o.minimumRedundancy}, current redundancy = ${done})`,
            EXIT_OPERATION,
          );
        }
        walFailed = (await deleter.delete(backupId, 'requested with -b/--backup-id', true)).walFailed;
      } else {
        walFailed = (
          await applyCloudRetention(catalog, policy, { ...common, minimumRedundancy: o.minimumRedundancy })
        ).walFailed;
      }
      return walFailed ? EXIT_OPERATION : 0;
    } catch (err) {
      if (err instanceof CloudDeleteError || err instanceof CloudCatalogUnsafe) throw new CloudExit(err.message, EXIT_OPERATION);
      return storageExit(err);
    } finally {
      session.store.close();
    }
  });
}
