// barkeep-cloud-check-wal-archive: is this bucket safe to archive a new
// cluster's WAL into? barman-cloud-check-wal-archive's rules: it is if the
// server's WAL archive is empty or the bucket does not exist; with
// --timeline N, WAL files of timelines before N are tolerated (a cluster
// restored from this archive and promoted to timeline N). CloudNativePG runs
// it before archiving a new cluster's first WAL.
import { InvalidArgumentError, Option } from 'commander';
import { CloudExit, cloudConnection, cloudProgram, EXIT_OPERATION, parseCloudArgs, runCloud, type CloudCommonOptions } from './cloud-program.ts';

interface CheckCliOptions extends CloudCommonOptions {
  timeline?: number;
}

export async function main(argv: string[]): Promise<number> {
  const program = cloudProgram(
    'barkeep-cloud-check-wal-archive',
    'Checks that the WAL archive on the specified cloud storage can be safely used for a new PostgreSQL server.',
    'destination',
  ).addOption(new Option('--timeline <N>', 'the earliest timeline whose WALs should cause the check to fail').argParser(positive));

  const early = parseCloudArgs(program, argv);
  if (early !== null) return early;
  return runCloud(async () => {
    const [url, server] = program.processedArgs as [string, string];
    const o = program.opts<CheckCliOptions>();
    const connection = cloudConnection(o);
    const { statusFor } = await import('../../cloud/wal-errors.ts');
    let problem: string | null;
    try {
      const { openCloudStore } = await import('../../cloud/wal-store.ts');
      const { checkWalArchive } = await import('../../cloud/wal-archive-check.ts');
      const { store, loc } = await openCloudStore(url, server, connection);
      try {
        if (o.test) {
          await store.bucketExists();
          return 0;
        }
        problem = await checkWalArchive(store, loc, o.timeline);
      } finally {
        store.close();
      }
    } catch (err) {
      throw new CloudExit(`Barman cloud WAL archive check exception: ${(err as Error)?.message ?? String(err)}`, statusFor(err));
    }
    if (problem !== null) throw new CloudExit(`WAL archive check failed for server ${server}: ${problem}`, EXIT_OPERATION);
    return 0;
  });
}

function positive(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError('a timeline is a whole number of 1 or more');
  return Number(value);
}
