// barkeep-cloud-wal-archive: PostgreSQL's archive_command shipping WAL
// straight to S3 in barman-cloud's layout, with barman-cloud-wal-archive's
// options, e.g. the line
//   archive_command = 'barkeep-cloud-wal-archive -P barman-cloud -e AES256 -j s3://barman-s3-test/ pg12 %p'
// Differences: an existing object for the WAL is compared, never overwritten
// (see src/cloud/wal-archive.ts); --encryption-key-file encrypts client-side;
// --async hands the work to a background pusher that keeps connections open
// and pushes ahead of PostgreSQL (src/cloud/async-archive.ts).
//
// This module runs once per WAL segment: it imports only the option parser
// statically; the S3 SDK is loaded by the code paths that talk to S3, and the
// async "already pushed" answer never loads it.
import { basename, resolve } from 'node:path';
import { InvalidArgumentError, Option } from 'commander';
import { parseSse, SseOptionError, type ServerSideEncryption } from '../../storage/object-store.ts';
import type { CompressionLevel } from '../../wal/compression.ts';
import type { WalArchiveCompression } from '../../cloud/wal-archive.ts';
import { isWalFileName } from '../../catalog/layout.ts';
import { CloudExit, cloudConnection, cloudProgram, EXIT_OPERATION, EXIT_USAGE, parseCloudArgs, runCloud, type CloudCommonOptions, type CloudConnection } from './cloud-program.ts';
import { parseTag } from './wal-archive-tags.ts';
import { DEFAULT_ASYNC_SPOOL_ROOT } from './wal-archive-fast.ts';

const COMPRESSIONS: [flags: string, name: WalArchiveCompression | 'snappy', what: string][] = [
  ['-z, --gzip', 'gzip', 'gzip-compress the WAL while uploading to the cloud'],
  ['-j, --bzip2', 'bzip2', "bzip2-compress the WAL while uploading to the cloud (runs the 'bzip2' program)"],
  ['--xz', 'xz', "xz-compress the WAL while uploading to the cloud (runs the 'xz' program)"],
  ['--snappy', 'snappy', 'snappy-compress the WAL (not supported by barkeep)'],
  ['--zstd', 'zstd', 'zstd-compress the WAL while uploading to the cloud'],
  ['--lz4', 'lz4', "lz4-compress the WAL while uploading to the cloud (runs the 'lz4' program)"],
];


interface ArchiveCliOptions extends CloudCommonOptions {
  compressionLevel?: string;
  tag?: [string, string][];
  tags?: [string, string][];
  historyTag?: [string, string][];
  historyTags?: [string, string][];
  encryption?: string;
  sseKmsKeyId?: string;
  async?: boolean;
  spoolDir?: string;
  asyncJobs: number;
  asyncTimeout: number;
}

export async function main(argv: string[]): Promise<number> {
  const program = cloudProgram(
    'barkeep-cloud-wal-archive',
    "This script can be used in the `archive_command` of a PostgreSQL server to ship WAL files to the Cloud (AWS S3 or an S3-compatible store), in barman-cloud's layout.",
    'destination',
  ).argument('[WAL_PATH]', "the value of the '%p' keyword (according to 'archive_command')");
  for (const [flags, name, what] of COMPRESSIONS) {
    program.addOption(new Option(flags, what).preset(name).conflicts(COMPRESSIONS.filter(([, n]) => n !== name).map(([, n]) => n)));
  }
  const collect = (value: string, previous: [string, string][] | undefined): [string, string][] => [...(previous ?? []), parseTag(value)];
  program
    .option('--compression-level <level>', "the compression level: an integer, or 'low', 'medium', 'high'")
    .addOption(new Option('--tag <KEY,VALUE>', 'tag added to archived WAL files in cloud storage (repeatable)').argParser(collect))
    .addOption(new Option('--tags <KEY,VALUE...>', 'deprecated: use --tag').argParser(collect).hideHelp())
    .addOption(new Option('--history-tag <KEY,VALUE>', 'tag added to archived history files in cloud storage, instead of --tag (repeatable)').argParser(collect))
    .addOption(new Option('--history-tags <KEY,VALUE...>', 'deprecated: use --history-tag').argParser(collect).hideHelp())
    .addOption(new Option('-e, --encryption <ENCRYPTION>', "the server-side encryption S3 applies to the uploaded data: 'AES256' or 'aws:kms'").choices(['AES256', 'aws:kms']))
    .option('--sse-kms-key-id <id>', 'the AWS KMS key ID for server-side encryption with --encryption aws:kms')
    .option('--async', 'return as soon as a background pusher has the WAL in the bucket; it pushes the next ready WAL files ahead, in parallel (barkeep extension)')
    .option('--spool-dir <dir>', `the async mode's state directory (default ${DEFAULT_ASYNC_SPOOL_ROOT}/SERVER_NAME)`)
    .addOption(new Option('--async-jobs <n>', 'WAL files the background pusher uploads at once').argParser(positive('--async-jobs')).default(4))
    .addOption(new Option('--async-timeout <seconds>', 'how long a call waits for its WAL file to be pushed').argParser(positive('--async-timeout')).default(60));

  const early = parseCloudArgs(program, argv);
  if (early !== null) return early;
  return runCloud(async () => {
    const [url, server, walPathArg] = program.processedArgs as [string, string, string | undefined];
    const o = program.opts<ArchiveCliOptions>();
    const connection = cloudConnection(o);
    const compression = chosenCompression(o as unknown as Record<string, unknown>);
    const compressionLevel = parseLevel(o.compressionLevel);
    const tags = tagsOf([...(o.tag ?? []), ...(o.tags ?? [])]);
    const historyTags = tagsOf([...(o.historyTag ?? []), ...(o.historyTags ?? [])]);
    let sse: ServerSideEncryption | undefined;
    try {
      sse = parseSse(o.encryption, o.sseKmsKeyId);
    } catch (err) {
      if (err instanceof SseOptionError) throw new CloudExit(err.message, EXIT_USAGE);
      throw err;
    }
    if (o.test) return connectivityTest(url, server, connection);

    const walPath = hookWalPath() ?? walPathArg;
    if (walPath === undefined) throw new CloudExit('the following arguments are required: WAL_PATH', EXIT_USAGE);
    if (!isWalFileName(basename(walPath))) throw new CloudExit(`${walPath} is an invalid name for a WAL file`, EXIT_USAGE);
    const settings = { compression, compressionLevel, tags, historyTags, sse };

    if (o.async) {
      const { archiveAsync } = await import('../../cloud/async-archive.ts');
      const outcome = await archiveAsync({
        walPath,
        timeoutSeconds: o.asyncTimeout,
        pusher: {
          url,
          server,
          connection,
          settings,
          jobs: o.asyncJobs,
          spoolDir: resolve(o.spoolDir ?? `${DEFAULT_ASYNC_SPOOL_ROOT}/${server}`),
          idleSeconds: 5,
        },
      });
      if (outcome.status === 'failed') throw new CloudExit(outcome.message, EXIT_OPERATION);
      return 0;
    }
    return archiveNow(url, server, walPath, connection, settings, o.verbose > 0);
  });
}

async function archiveNow(
  url: string,
  server: string,
  walPath: string,
  connection: CloudConnection,
  settings: { compression: WalArchiveCompression | null; compressionLevel: CompressionLevel | undefined; tags?: Record<string, string> | undefined; historyTags?: Record<string, string> | undefined; sse: ServerSideEncryption | undefined },
  verbose: boolean,
): Promise<number> {
  const { statusFor } = await import('../../cloud/wal-errors.ts');
  try {
    const { openCloudStore } = await import('../../cloud/wal-store.ts');
    const { archiveWalFile } = await import('../../cloud/wal-archive.ts');
    const encryptionKey = connection.encryptionKeyFile ? await (await import('../../storage/encryption.ts')).loadEncryptionKey(connection.encryptionKeyFile) : undefined;
    const { store, loc } = await openCloudStore(url, server, connection);
    try {
      const result = await archiveWalFile(store, loc, walPath, { ...settings, encryptionKey });
      if (verbose || result.outcome === 'already-archived') {
        process.stderr.write(`INFO: ${basename(walPath)} ${result.outcome === 'archived' ? 'archived as' : 'was already archived, with the same content, as'} ${result.key}\n`);
      }
      return 0;
    } finally {
      store.close();
    }
  } catch (err) {
    if (err instanceof CloudExit) throw err;
    throw new CloudExit(describe(err, walPath), statusFor(err));
  }
}

/** -t: the bucket can be reached (its absence is not an error: the first archive creates it, as barman-cloud does). */
async function connectivityTest(url: string, server: string, connection: CloudConnection): Promise<number> {
  const { statusFor } = await import('../../cloud/wal-errors.ts');
  try {
    const { openCloudStore } = await import('../../cloud/wal-store.ts');
    const { store } = await openCloudStore(url, server, connection);
    try {
      await store.bucketExists();
    } finally {
      store.close();
    }
    return 0;
  } catch (err) {
    throw new CloudExit((err as Error).message, statusFor(err));
  }
}

function describe(err: unknown, walPath: string): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOENT' && e.path === walPath) return `${walPath}: no such WAL file`;
  if (e?.code === 'EISDIR') return `${walPath} is a directory, not a WAL file`;
  return e?.message ?? String(err);
}

// barman-cloud-wal-archive as a Barman hook (pre_archive_script or
// pre_archive_retry_script) takes the WAL file from BARMAN_FILE.
function hookWalPath(): string | undefined {
  const hook = process.env['BARMAN_HOOK'];
  const phase = process.env['BARMAN_PHASE'];
  if (hook === undefined || phase === undefined) return undefined;
  if ((hook !== 'archive_script' && hook !== 'archive_retry_script') || phase !== 'pre') {
    throw new CloudExit(`barkeep-cloud-wal-archive called as unsupported hook script: ${phase}_${hook}`, EXIT_USAGE);
  }
  const file = process.env['BARMAN_FILE'];
  if (!file) throw new CloudExit('Expected environment variable BARMAN_FILE not set', EXIT_USAGE);
  return file;
}

function chosenCompression(raw: Record<string, unknown>): WalArchiveCompression | null {
  const chosen = COMPRESSIONS.map(([, name]) => name).find((name) => raw[name] !== undefined);
  if (chosen === 'snappy') throw new CloudExit('--snappy is not supported by barkeep-cloud-wal-archive: use --zstd, --lz4, -z/--gzip, -j/--bzip2 or --xz', EXIT_USAGE);
  return chosen ?? null;
}

function parseLevel(value: string | undefined): CompressionLevel | undefined {
  if (value === undefined) return undefined;
  const text = value.toLowerCase();
  if (/^-?\d+$/.test(text)) return Number(text);
  if (text === 'low' || text === 'medium' || text === 'high') return text;
  throw new CloudExit(`--compression-level '${value}': use an integer or one of low, medium, high`, EXIT_USAGE);
}

function tagsOf(pairs: [string, string][]): Record<string, string> | undefined {
  return pairs.length > 0 ? Object.fromEntries(pairs) : undefined;
}

function positive(flag: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${flag} takes a whole number above 0`);
    return n;
  };
}
