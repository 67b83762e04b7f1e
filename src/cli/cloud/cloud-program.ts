import { Command, CommanderError, Option } from 'commander';
import { VERSION } from '../version.ts';

// What every barkeep-cloud-* command shares with barman-cloud's
// (barman/clients/cloud_cli.py): the positional URL and server name, the
// options for reaching the bucket, verbosity counters, `-t/--test`, and the exit
// statuses scripts and CloudNativePG act on:
//   0 success, 1 the operation failed (the bucket was reachable),
//   2 network error, 3 bad invocation, 4 any other error.
// Only `--help` shows help: `-h` is the PostgreSQL host in cloud-backup.

export const EXIT_OPERATION = 1;
export const EXIT_NETWORK = 2;
export const EXIT_USAGE = 3;
export const EXIT_GENERAL = 4;

export class CloudExit extends Error {
  readonly status: number;

  constructor(message: string, status: number) {
    super(message);
    this.status = status;
  }
}

/** The options of cloud_cli.create_argument_parser, as commander gives them back. */
export interface CloudCommonOptions {
  verbose: number;
  quiet: number;
  test?: boolean;
  cloudProvider: string;
  endpointUrl?: string;
  awsProfile?: string;
  profile?: string;
  readTimeout?: number;
  azureCredential?: string;
  encryptionKeyFile?: string;
}

/** What a command needs to reach the store, with barman-cloud's deprecated spellings folded in. */
export interface CloudConnection {
  endpointUrl?: string;
  profile?: string;
  readTimeoutSeconds: number;
  encryptionKeyFile?: string;
}

const count = (_value: string, previous: number) => previous + 1;

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new CloudExit(`--read-timeout: '${value}' is not a positive number of seconds`, EXIT_USAGE);
  return n;
}

/**
 * A barman-cloud command line. `urlRole` names the first positional argument
 * ('source' or 'destination') as barman-cloud's usage does; commands add their
 * own options and remaining arguments.
 */
export function cloudProgram(name: string, description: string, urlRole: 'source' | 'destination'): Command {
  return new Command(name)
    .description(description)
    .helpOption('--help', 'show this help message and exit')
    .version(`${name} ${VERSION}`, '-V, --version', "show program's version number and exit")
    .argument(`<${urlRole.toUpperCase()}_URL>`, `URL of the cloud ${urlRole}, such as a bucket in AWS S3. For example: 's3://bucket/path/to/folder'`)
    .argument('<SERVER_NAME>', 'the name of the server as configured in Barman')
    .addOption(new Option('-v, --verbose', 'increase output verbosity (e.g., -vv is more than -v)').argParser(count).default(0).conflicts('quiet'))
    .addOption(new Option('-q, --quiet', 'decrease output verbosity (e.g., -qq is less than -q)').argParser(count).default(0))
    .option('-t, --test', 'test cloud connectivity and exit')
    .addOption(
      new Option('--cloud-provider <provider>', 'the cloud provider to use as a storage backend (barkeep supports aws-s3 and S3-compatible stores)')
        .choices(['aws-s3', 'azure-blob-storage', 'google-cloud-storage'])
        .default('aws-s3'),
    )
    .option('--endpoint-url <url>', 'override the default S3 endpoint URL with the given one (S3-compatible stores)')
    .option('-P, --aws-profile <profile>', 'profile name (e.g. INI section in AWS credentials file)')
    .addOption(new Option('--profile <profile>', 'profile name (deprecated: use --aws-profile)').hideHelp())
    .addOption(new Option('--read-timeout <seconds>', 'the time in seconds until a timeout is raised when waiting to read from a connection (defaults to 60 seconds)').argParser(positiveInteger))
    .addOption(new Option('--credential, --azure-credential <kind>', 'Azure credential type (Azure Blob Storage is not supported by barkeep)').hideHelp())
    .option('--encryption-key-file <file>', 'client-side encryption (AES-256-GCM) with the 32-byte key in this file (barkeep extension; objects are decrypted transparently on restore)')
    .allowExcessArguments(false)
    .showHelpAfterError('(add --help for additional information)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s), writeOut: (s) => process.stdout.write(s) });
}

/** Parses argv; returns an exit status instead when the run ends here (help, version, usage error). */
export function parseCloudArgs(program: Command, argv: string[]): number | null {
  try {
    program.parse(argv, { from: 'user' });
    return null;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : EXIT_USAGE;
    if (e instanceof CloudExit) {
      process.stderr.write(`ERROR: ${e.message}\n`);
      return e.status;
    }
    throw e;
  }
}

/** Checks the provider and folds deprecated spellings; throws CloudExit(3) on what barkeep cannot do. */
export function cloudConnection(o: CloudCommonOptions): CloudConnection {
  if (o.cloudProvider !== 'aws-s3') {
    throw new CloudExit(`--cloud-provider ${o.cloudProvider} is not supported by barkeep: use aws-s3 (AWS S3 or an S3-compatible store with --endpoint-url)`, EXIT_USAGE);
  }
  if (o.azureCredential !== undefined) throw new CloudExit('--credential applies to Azure Blob Storage, which barkeep does not support', EXIT_USAGE);
  const connection: CloudConnection = { readTimeoutSeconds: o.readTimeout ?? 60 };
  if (o.endpointUrl !== undefined) connection.endpointUrl = o.endpointUrl;
  const profile = o.awsProfile ?? o.profile;
  if (profile !== undefined) connection.profile = profile;
  if (o.encryptionKeyFile !== undefined) connection.encryptionKeyFile = o.encryptionKeyFile;
  return connection;
}

/** Runs a command's body and turns its outcome into the exit status, printing one ERROR line on failure. */
export async function runCloud(body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (e) {
    const exit = e instanceof CloudExit ? e : new CloudExit((e as Error)?.message ?? String(e), EXIT_GENERAL);
    process.stderr.write(`ERROR: ${exit.message}\n`);
    return exit.status;
  }
}
