import { Option } from 'commander';
import { S3_MIN_PART_SIZE, computePartSize, parseSse, SseOptionError, type ServerSideEncryption } from '../../storage/object-store.ts';
import { isStorageError } from '../../storage/errors.ts';
import {
  CloudExit,
  cloudConnection,
  cloudProgram,
  EXIT_OPERATION,
  EXIT_USAGE,
  parseCloudArgs,
  runCloud,
  type CloudCommonOptions,
} from './cloud-program.ts';
import { storageExit } from './catalog-command.ts';
import { parseCloudSize, parseJobs, parseTags, openCloudStore, loadKey, sayFor } from './backup-restore-common.ts';

// barkeep-cloud-backup: barman-cloud-backup's command line and bucket layout,
// with the backup taken over a replication connection (BASE_BACKUP) instead of
// reading PGDATA from the file system, so it runs from any host.

const COMPRESSIONS: [flags: string, name: string, what: string][] = [
  ['-z, --gzip', 'gzip', 'gzip-compress the backup while uploading to the cloud'],
  ['-j, --bzip2', 'bzip2', "bzip2-compress the backup while uploading to the cloud (runs the 'bzip2' program)"],
  ['--snappy', 'snappy', 'snappy compression: not supported by barkeep (use --zstd or --lz4)'],
  ['--zstd', 'zstd', 'zstd-compress the backup while uploading to the cloud (barkeep extension: barman-cloud-restore cannot read it)'],
  ['--lz4', 'lz4', "lz4-compress the backup while uploading to the cloud (barkeep extension, runs the 'lz4' program; barman-cloud-restore cannot read it)"],
];

/** barman-cloud's MAX_ARCHIVE_SIZE for S3: larger -S values are capped, with a warning. */
const MAX_ARCHIVE_SIZE = 2 ** 40;

interface BackupFlags extends CloudCommonOptions {
  host?: string;
  port?: string;
  user?: string;
  dbname: string;
  name?: string;
  jobs: number;
  maxArchiveSize: number;
  minChunkSize?: number;
  maxBandwidth?: number;
  immediateCheckpoint?: boolean;
  tag?: string[];
  tags?: string[];
  encryption?: string;
  sseKmsKeyId?: string;
  [compression: string]: unknown;
}

export async function main(argv: string[]): Promise<number> {
  const program = cloudProgram(
    'barkeep-cloud-backup',
    'Take a base backup of a PostgreSQL server and stream it to the cloud (S3 or an S3-compatible store) in the layout of ' +
      "barman-cloud-backup: <URL>/<SERVER_NAME>/base/<BACKUP_ID>/data.tar..., one <oid>.tar... per tablespace, and backup.info. " +
      'Unlike barman-cloud-backup, which reads PGDATA from the file system and must run on the database host, barkeep ' +
      'asks PostgreSQL for the backup over a replication connection (BASE_BACKUP), so it can run on any host: the user ' +
      'needs the REPLICATION attribute (and a "replication" line in pg_hba.conf), PostgreSQL 13 or later. ' +
      'When archive_mode is on, the backup is DONE only once PostgreSQL confirms that the last WAL segment it needs ' +
      "is archived. Configuration files outside the data directory are not copied. The server's backup_manifest is stored too " +
      '(base/<BACKUP_ID>/backup_manifest) and barkeep-cloud-restore verifies every file against it.',
    'destination',
  );
  for (const [flags, name, what] of COMPRESSIONS) {
    program.addOption(new Option(flags, what).preset(name).conflicts(COMPRESSIONS.filter(([, n]) => n !== name).map(([, n]) => n)));
  }
  program
    .option('-h, --host <host>', 'host or Unix socket for PostgreSQL connection (default: libpq settings)')
    .option('-p, --port <port>', 'port for PostgreSQL connection (default: libpq settings)')
    .option('-U, --user <user>', 'user name for PostgreSQL connection (default: libpq settings)')
    .option('-d, --dbname <dbname>', 'Database name or conninfo string for Postgres connection', 'postgres')
    .option('--immediate-checkpoint', 'forces the initial checkpoint to be done as quickly as possible')
    .addOption(new Option('-J, --jobs <n>', 'number of parts uploaded in parallel').argParser((v) => parseJobs(v, '-J/--jobs')).default(2))
    .addOption(
      new Option('-S, --max-archive-size <size>', 'maximum size of an archive when uploading to cloud storage; larger archives are split into data_0001.tar... parts')
        .argParser((v) => parseCloudSize(v, '--max-archive-size'))
        .default(parseCloudSize('100GB', '--max-archive-size'), '100GB'),
    )
    .addOption(new Option('--min-chunk-size <size>', 'minimum size of an individual chunk (multipart part) when uploading to cloud storage (default: 5MB on S3)').argParser((v) => parseCloudSize(v, '--min-chunk-size')))
    .addOption(new Option('--max-bandwidth <size>', 'the maximum amount of data to be uploaded per second (e.g. 20MB)').argParser((v) => parseCloudSize(v, '--max-bandwidth')))
    .option('-n, --name <name>', 'a name which can be used to reference this backup in commands such as barkeep-cloud-restore and barkeep-cloud-backup-delete')
    .option('--tag <KEY,VALUE>', 'tag added to all uploaded files in cloud storage (repeatable)', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .addOption(new Option('--tags <KEY,VALUE...>', 'deprecated spelling of --tag').hideHelp())
    .addOption(new Option('-e, --encryption <algorithm>', "the encryption algorithm used when storing the uploaded data in S3. Allowed values: 'AES256'|'aws:kms'").choices(['AES256', 'aws:kms']))
    .option('--sse-kms-key-id <id>', 'the AWS KMS key ID to use for server-side encryption with aws:kms')
    .addOption(new Option('--snapshot-instance <name>', 'snapshot backups are not supported by barkeep').hideHelp())
    .addOption(new Option('--snapshot-disk <name>', 'snapshot backups are not supported by barkeep').hideHelp())
    .addOption(new Option('--snapshot-zone <zone>', 'snapshot backups are not supported by barkeep').hideHelp())
    .addOption(new Option('--snapshot-gcp-project <project>', 'snapshot backups are not supported by barkeep').hideHelp())
    .addOption(new Option('--gcp-project <project>', 'snapshot backups are not supported by barkeep').hideHelp())
    .addOption(new Option('--encryption-scope <scope>', 'Azure Blob Storage is not supported by barkeep').hideHelp());

  const early = parseCloudArgs(program, argv);
  if (early !== null) return early;
  return runCloud(async () => {
    const [url, server] = program.processedArgs as [string, string];
    const flags = program.opts<BackupFlags>();
    const say = sayFor(flags);
    const connection = cloudConnection(flags);
    refuseUnsupported(flags);
    const compression = chosenCompression(flags);
    const name = flags.name === undefined ? null : checkBackupName(flags.name);
    let sse: ServerSideEncryption | undefined;
    try {
      sse = parseSse(flags.encryption, flags.sseKmsKeyId);
    } catch (err) {
      if (err instanceof SseOptionError) throw new CloudExit(err.message, EXIT_USAGE);
      throw err;
    }
    const tags = parseTags([...(flags.tag ?? []), ...(flags.tags ?? [])]);
    let maxArchiveSize = flags.maxArchiveSize;
    if (maxArchiveSize > MAX_ARCHIVE_SIZE) {
      say.warn(`max-archive-size too big. Capping it to 1.0 TiB`);
      maxArchiveSize = MAX_ARCHIVE_SIZE;
    }
    let partSize: number;
    try {
      // As barman-cloud: parts sized so an archive of twice -S still fits the part limit.
      partSize = computePartSize({ expectedSize: 2 * maxArchiveSize, minPartSize: Math.max(S3_MIN_PART_SIZE, flags.minChunkSize ?? 0) });
    } catch (err) {
      throw new CloudExit((err as Error).message, EXIT_USAGE);
    }
    const key = await loadKey(connection.encryptionKeyFile);

    const store = await openCloudStore(url, connection, { concurrency: flags.jobs });
    try {
      if (flags.test) {
        await store.bucketExists();
        return 0;
      }
      if (!(await store.bucketExists())) {
        say.verbose(`Creating bucket for ${store.location}`);
        await store.createBucket();
      }
      // Loaded only once the arguments are good: the PostgreSQL client is not needed before.
      const { buildConninfo } = await import('../../cloud/backup-conninfo.ts');
      const { cloudBackup, CloudBackupConnectError, CloudBackupFailed } = await import('../../cloud/backup.ts');
      let conninfo: string;
      try {
        conninfo = buildConninfo({
          ...(flags.host !== undefined ? { host: flags.host } : {}),
          ...(flags.port !== undefined ? { port: flags.port } : {}),
          ...(flags.user !== undefined ? { user: flags.user } : {}),
          dbname: flags.dbname,
        });
      } catch (err) {
        throw new CloudExit(`invalid connection options: ${(err as Error).message}`, EXIT_USAGE);
      }
      try {
        const r = await cloudBackup({
          store,
          server,
          conninfo,
          name,
          compression,
          encryptionKey: key,
          jobs: flags.jobs,
          maxArchiveSize,
          partSize,
          maxBandwidth: flags.maxBandwidth ?? 0,
          immediateCheckpoint: flags.immediateCheckpoint === true,
          ...(sse ? { sse } : {}),
          ...(tags ? { tags } : {}),
          print: say.print,
          verbose: say.verbose,
          warn: say.warn,
        });
        const stored = r.objects.reduce((n, o) => n + o.size, 0);
        const raw = r.objects.reduce((n, o) => n + o.rawSize, 0);
        say.print(
          `Backup ${r.backupId} of server ${server} completed in ${r.seconds.toFixed(1)} s: ` +
            `${r.objects.length} objects, ${mib(stored)} stored${compression || key ? ` (${mib(raw)} of data)` : ''}`,
        );
        say.print(`Backup start at LSN: ${r.info.begin_xlog} (${r.info.begin_wal}), end at LSN: ${r.info.end_xlog} (${r.info.end_wal})`);
        return 0;
      } catch (err) {
        if (err instanceof CloudBackupConnectError) throw new CloudExit(err.message, EXIT_OPERATION);
        if (err instanceof CloudBackupFailed) {
          const cause = err.cause;
          throw new CloudExit(err.message, isStorageError(cause) ? cause.exitCode : EXIT_OPERATION);
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

function mib(n: number): string {
  return `${(n / 1048576).toFixed(1)} MiB`;
}


function chosenCompression(flags: BackupFlags): 'gzip' | 'bzip2' | 'zstd' | 'lz4' | null {
  const chosen = COMPRESSIONS.map(([, n]) => n).find((n) => flags[n] !== undefined);
  if (chosen === 'snappy') throw new CloudExit('--snappy is not supported by barkeep-cloud-backup: use --zstd, --lz4, -z/--gzip or -j/--bzip2', EXIT_USAGE);
  return (chosen as 'gzip' | 'bzip2' | 'zstd' | 'lz4' | undefined) ?? null;
}

function refuseUnsupported(flags: BackupFlags): void {
  for (const opt of ['snapshotInstance', 'snapshotDisk', 'snapshotZone', 'snapshotGcpProject', 'gcpProject']) {
    if (flags[opt] !== undefined) throw new CloudExit('snapshot backups are not supported by barkeep-cloud-backup', EXIT_USAGE);
  }
  if (flags['encryptionScope'] !== undefined) throw new CloudExit('--encryption-scope applies to Azure Blob Storage, which barkeep does not support', EXIT_USAGE);
  // barman-cloud-backup doubles as a Barman post-backup hook that uploads an existing backup.
  if (process.env['BARMAN_HOOK'] !== undefined && process.env['BARMAN_PHASE'] !== undefined) {
    throw new CloudExit(
      'barkeep-cloud-backup does not run as a Barman hook script (uploading an existing backup): use cloud_destination in the barkeep server configuration',
      EXIT_USAGE,
    );
  }
}

const RESERVED = ['latest', 'last', 'oldest', 'first', 'last-failed'];

/** barman's check_backup_name: not empty, not a backup ID, not a shortcut. */
function checkBackupName(name: string): string {
  if (name === '') throw new CloudExit('Backup name cannot be empty', EXIT_USAGE);
  if (/^\d{8}T\d{6}$/.test(name)) throw new CloudExit(`Backup name '${name}' is not allowed: backup ID`, EXIT_USAGE);
  if (RESERVED.includes(name)) throw new CloudExit(`Backup name '${name}' is not allowed: reserved word`, EXIT_USAGE);
  return name;
}

