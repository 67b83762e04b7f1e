// barkeep-cloud-wal-restore: PostgreSQL's restore_command fetching WAL from a
// bucket in barman-cloud's layout, with barman-cloud-wal-restore's options:
//   restore_command = 'barkeep-cloud-wal-restore s3://bucket/path pg %f %p'
// Exit 1 when the WAL is not in the bucket (PostgreSQL's "end of archive"),
// quietly as barman-cloud does. Beyond barman-cloud: client-side decryption
// (--encryption-key-file), checks against truncated or damaged objects, and
// prefetch of the following segments (--prefetch, --spool-dir).
import { basename, resolve } from 'node:path';
import { InvalidArgumentError, Option } from 'commander';
import { isWalFileName } from '../../catalog/layout.ts';
import { CloudExit, cloudConnection, cloudProgram, EXIT_OPERATION, EXIT_USAGE, parseCloudArgs, runCloud, type CloudCommonOptions } from './cloud-program.ts';

export const DEFAULT_RESTORE_SPOOL_ROOT = '/var/tmp/barkeep-cloud-wal-restore';
export const DEFAULT_PREFETCH = 8;

interface RestoreCliOptions extends CloudCommonOptions {
  partial: boolean;
  prefetch: number;
  spoolDir?: string;
}

export async function main(argv: string[]): Promise<number> {
  const program = cloudProgram(
    'barkeep-cloud-wal-restore',
    'This script can be used as a `restore_command` to download WAL files previously archived with barkeep-cloud-wal-archive or barman-cloud-wal-archive (AWS S3 or an S3-compatible store).',
    'source',
  )
    .argument('<WAL_NAME>', "the value of the '%f' keyword (according to 'restore_command')")
    .argument('<WAL_DEST>', "the value of the '%p' keyword (according to 'restore_command')")
    .option('--no-partial', 'do not download partial WAL files (.partial)')
    .addOption(
      new Option('--prefetch <n>', 'WAL segments fetched per call, the requested one included; the next ones wait in the spool directory (0: no prefetch)')
        .argParser(nonNegative)
        .default(DEFAULT_PREFETCH),
    )
    .option('--spool-dir <dir>', `where prefetched segments wait (default ${DEFAULT_RESTORE_SPOOL_ROOT}/SERVER_NAME)`);

  const early = parseCloudArgs(program, argv);
  if (early !== null) return early;
  return runCloud(async () => {
    const [url, server, walName, walDest] = program.processedArgs as [string, string, string, string];
    const o = program.opts<RestoreCliOptions>();
    const connection = cloudConnection(o);
    if (!isWalFileName(walName) || basename(walName) !== walName) throw new CloudExit(`${walName} is an invalid name for a WAL file`, EXIT_USAGE);

    const { statusFor } = await import('../../cloud/wal-errors.ts');
    try {
      const { openCloudStore } = await import('../../cloud/wal-store.ts');
      const { store, loc } = await openCloudStore(url, server, connection);
      try {
        if (o.test) {
          await store.bucketExists();
          return 0;
        }
        const encryptionKey = connection.encryptionKeyFile ? await (await import('../../storage/encryption.ts')).loadEncryptionKey(connection.encryptionKeyFile) : undefined;
        const { restoreWal } = await import('../../cloud/wal-restore.ts');
        const verbose = o.verbose > 0;
        const outcome = await restoreWal(store, loc, walName, resolve(walDest), {
          partial: o.partial,
          encryptionKey,
          prefetch: o.prefetch,
          spoolDir: resolve(o.spoolDir ?? `${DEFAULT_RESTORE_SPOOL_ROOT}/${server}`),
          ...(verbose ? { log: (line: string) => process.stderr.write(`INFO: ${line}\n`) } : {}),
        });
        if (outcome === 'not-found') {
          if (verbose) process.stderr.write(`INFO: WAL file ${walName} for server ${server} does not exist\n`);
          return EXIT_OPERATION;
        }
        return 0;
      } finally {
        store.close();
      }
    } catch (err) {
      if (err instanceof CloudExit) throw err;
      throw new CloudExit((err as Error)?.message ?? String(err), statusFor(err));
    }
  });
}

function nonNegative(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('use a whole number of 0 or more');
  return Number(value);
}
