import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { InvalidArgumentError, Option } from 'commander';
import { removeStaleTempFiles } from './wal-clients/durable-file.ts';
import { fetchWal } from './wal-clients/fetch-wal.ts';
import {
  ClientExit,
  clientProgram,
  parseClientArgs,
  runClient,
  sshTarget,
  USAGE_ERROR,
  type ConnectionOptions,
} from './wal-clients/program.ts';
import { deliverFromSpool, ensureSpoolDir, spoolPath } from './wal-clients/spool.ts';
import { shellQuote, sshCapture, SSH_FAILURE, type SshTarget } from './wal-clients/ssh.ts';

// barkeep-wal-restore: PostgreSQL's restore_command, the equivalent of
// barman-wal-restore 3.x. It runs `barkeep get-wal SERVER WAL` on the backup
// server over ssh and writes the WAL durably to the path PostgreSQL gave:
//   restore_command = 'barkeep-wal-restore -P backup pg %f %p'
// Exit statuses as barman-wal-restore's (PostgreSQL only tells zero from
// non-zero below 126): 0 restored; 1 (get-wal's status) the WAL is not in the
// archive, the normal end of recovery; 2 ssh could not connect, bad
// invocation, or a local failure; 3 WAL_DEST unusable.

export const DEFAULT_SPOOL_DIR = '/var/tmp/walrestore';
const DEST_ERROR = 3;

interface RestoreOptions extends ConnectionOptions {
  sleep: number;
  parallel: number;
  spoolDir: string;
  partial?: boolean;
  compression?: 'gzip' | 'bzip2';
  keepCompression?: boolean;
}

export async function main(argv: string[]): Promise<number> {
  const program = clientProgram(
    'barkeep-wal-restore',
    "PostgreSQL restore_command fetching WAL files from a barkeep (or Barman) server's get-wal over ssh",
  )
    .addOption(new Option('-s, --sleep <seconds>', 'sleep for SECONDS after a failure of get-wal request (0: no wait)').argParser(nonNegative).default(0))
    .addOption(new Option('-p, --parallel <jobs>', 'number of files to peek and transfer in parallel (0: disabled)').argParser(nonNegative).default(0))
    .addOption(new Option('--spool-dir <dir>', 'spool directory for WAL files fetched in parallel').default(DEFAULT_SPOOL_DIR))
    .option('-P, --partial', 'retrieve also partial WAL files (.partial)')
    .addOption(new Option('-z, --gzip', 'transfer the WAL files compressed with gzip (deprecated)').conflicts(['bzip2', 'keepCompression']))
    .addOption(new Option('-j, --bzip2', 'transfer the WAL files compressed with bzip2 (deprecated)').conflicts(['gzip', 'keepCompression']))
    .addOption(new Option('--keep-compression', 'transfer compressed files as stored and decompress them here').conflicts(['gzip', 'bzip2']))
    .option('-t, --test', "test the connection and the server's configuration for WAL retrieval; WAL_NAME and WAL_DEST are ignored")
    .argument('<BARMAN_HOST>', 'the host of the backup server')
    .argument('<SERVER_NAME>', 'the server name configured on the backup server')
    .argument('[WAL_NAME]', "the value of the '%f' keyword (according to 'restore_command')")
    .argument('[WAL_DEST]', "the value of the '%p' keyword (according to 'restore_command')");

  const early = parseClientArgs(program, argv);
  if (early !== null) return early;
  return runClient(async () => {
    const [host, server, walName, walDest] = program.processedArgs as [string, string, string | undefined, string | undefined];
    const raw = program.opts<Record<string, unknown> & RestoreOptions>();
    const opts: RestoreOptions = { ...raw, compression: raw['gzip'] ? 'gzip' : raw['bzip2'] ? 'bzip2' : undefined };
    const target = sshTarget(host, opts);
    if (opts.test) return connectivityTest(target, server, opts);
    if (walName === undefined || walDest === undefined) throw new ClientExit(`missing required argument '${walName === undefined ? 'WAL_NAME' : 'WAL_DEST'}'`, USAGE_ERROR);
    // It becomes a file name in the spool directory.
    if (!/^[^/\0]+$/.test(walName) || walName === '.' || walName === '..') throw new ClientExit(`invalid WAL_NAME '${walName}'`, USAGE_ERROR);
    if (opts.compression) {
      process.stderr.write(
        `WARNING: \`${opts.compression}\` option is deprecated and will be removed in future versions. For WAL compression, please make sure to enable it directly on the backup server via the \`compression\` configuration option\n`,
      );
    }
    return restore(target, server, walName, resolve(walDest), opts);
  });
}

function nonNegative(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('use a whole number of 0 or more');
  return Number(value);
}

function getWalWords(opts: RestoreOptions, server: string, walName: string, extra: { test?: boolean; peek?: number } = {}): string[] {
  const words = ['get-wal'];
  if (extra.test) words.push('--test');
  if (extra.peek) words.push('--peek', shellQuote(String(extra.peek)));
  if (opts.compression) words.push(`--${opts.compression}`);
  if (opts.keepCompression) words.push('--keep-compression');
  if (opts.partial) words.push('--partial');
  words.push(shellQuote(server), shellQuote(walName));
  return words;
}

async function connectivityTest(target: SshTarget, server: string, opts: RestoreOptions): Promise<number> {
  const r = await sshCapture(target, getWalWords(opts, server, 'dummy_wal_name', { test: true }), { mergeStderr: true });
  if (r.spawnError) throw new ClientExit(`Impossible to invoke remote get-wal: ${r.spawnError.message}`, 2);
  process.stdout.write(`${r.output}\n`);
  return r.code;
}

async function restore(target: SshTarget, server: string, walName: string, dest: string, opts: RestoreOptions): Promise<number> {
  await checkDestination(dest);
  await removeStaleTempFiles(dest);

  try {
    if (await deliverFromSpool(opts.spoolDir, walName, dest)) return 0;
  } catch (e) {
    throw new ClientExit(`Failure moving ${spoolPath(opts.spoolDir, walName)} to ${dest}: ${(e as Error).message}`, 2);
  }

  const prefetch = opts.parallel > 0 ? await peekNext(target, server, walName, opts) : [];
  // The next WALs go to the spool while the one PostgreSQL waits for comes straight to it.
  const spooled = Promise.all(prefetch.map((name) => fetchWal(target, getWalWords(opts, server, name), spoolPath(opts.spoolDir, name))));
  const main = await fetchWal(target, getWalWords(opts, server, walName), dest);
  await spooled;

  if (main.spawnError) throw new ClientExit(`Error executing "ssh": ${main.spawnError.message}`, 2, opts.sleep);
  // A local failure stops ssh too: its exit status would only blur the cause.
  if (main.localError) throw new ClientExit(`Cannot restore '${walName}' to '${dest}': ${main.localError.message}`, 2, opts.sleep);
  if (main.code === SSH_FAILURE) throw new ClientExit('Connection problem with ssh', 2, opts.sleep);
  if (main.code !== 0) throw new ClientExit(`Remote '${target.remoteCommand} get-wal' command has failed!`, main.code, opts.sleep);
  return 0;
}

async function checkDestination(dest: string): Promise<void> {
  const info = await stat(dest).catch(() => null);
  if (info?.isDirectory()) throw new ClientExit(`WAL_DEST cannot be a directory: ${dest}`, DEST_ERROR);
  try {
    await access(dirname(dest), constants.W_OK | constants.X_OK);
  } catch (e) {
    throw new ClientExit(`Cannot open '${dest}' (WAL_DEST) for writing: ${(e as Error).message}`, DEST_ERROR);
  }
}

/** The WALs after `walName` that get-wal --peek says exist, to prefetch; fails if `walName` itself is missing. */
async function peekNext(target: SshTarget, server: string, walName: string, opts: RestoreOptions): Promise<string[]> {
  try {
    await ensureSpoolDir(opts.spoolDir);
  } catch (e) {
    throw new ClientExit(`Cannot create '${opts.spoolDir}' directory: ${(e as Error).message}`, 2);
  }
  const r = await sshCapture(target, getWalWords(opts, server, walName, { peek: opts.parallel }), { mergeStderr: false });
  if (r.spawnError) throw new ClientExit(`Impossible to invoke remote get-wal --peek: ${r.spawnError.message}`, 2);
  const names = r.output.split('\n').map((l) => l.trim()).filter(Boolean);
  if (names[0] !== walName) throw new ClientExit(`The required file is not available: ${walName}`, 2);
  // Names come from the server: only plain file names may become spool paths.
  return names.slice(1).filter((n) => /^[0-9A-Za-z._-]+$/.test(n) && !n.startsWith('.'));
}
