import { InvalidArgumentError, Option } from 'commander';
import type { ServerConfig } from '../../config/load.ts';
import { ServerHooks } from '../../hooks/server-hooks.ts';
import { ArchiveConfigError, archiveWal, type ArchiveEvent } from '../../wal/archiver.ts';
import { checkWalName, GetWalError, peekWals, sendWal } from '../../wal/get-wal.ts';
import { putWal, PutWalError } from '../../wal/put-wal.ts';
import type { CommandHost } from '../command-host.ts';
import { CliError, type CliContext } from '../context.ts';

// The WAL archive commands, with Barman's names, flags, messages and exit codes:
// archive-wal (queues -> wals/), get-wal (restore_command side) and put-wal
// (barman-wal-archive's receiving end).

export function register(host: CommandHost): void {
  const { program } = host;
  const run = (fn: () => Promise<number>) => async () => host.setExitCode(await fn());

  program
    .command('archive-wal')
    .description('archive the WAL files waiting in the incoming and streaming directories of a server')
    .argument('<server>', 'server name')
    .action(async (name: string) => run(() => runArchiveWal(host.context(), name))());

  let outputCompression: 'gzip' | 'bzip2' | undefined;
  const getWal = program
    .command('get-wal')
    .description('send a WAL file from the archive to standard output (or a directory), decompressed')
    .argument('<server>', 'server name')
    .argument('<wal_name>', 'the WAL file to get')
    .option('-o, --output-directory <dir>', 'put the retrieved WAL file in this directory with the original name')
    .option('-P, --partial', 'retrieve also partial WAL files (.partial)', false)
    .option('-z, --gzip', 'compress the output with gzip')
    .addOption(new Option('-x', 'compress the output with gzip').hideHelp())
    .option('-j, --bzip2', 'compress the output with bzip2')
    .option('--keep-compression', 'do not decompress the output if compressed', false)
    .option('-p, --peek <size>', "peek from the WAL archive up to 'SIZE' WAL files, starting from the requested one", positiveInt)
    .option('-t, --test', 'test the connection and the configuration of the server for WAL retrieval (WAL_NAME is ignored)', false)
    .action(async (server: string, walName: string, opts: GetWalCliOptions) => run(() => runGetWal(host.context(), server, walName, { ...opts, compression: outputCompression }))());
  // -z/-x/-j store into one destination in Barman: the last one given wins.
  getWal.on('option:gzip', () => (outputCompression = 'gzip'));
  getWal.on('option:x', () => (outputCompression = 'gzip'));
  getWal.on('option:bzip2', () => (outputCompression = 'bzip2'));

  program
    .command('put-wal')
    .description('receive a WAL file as a tar stream with checksums on standard input (from barman-wal-archive) into the incoming directory')
    .argument('<server>', 'server name')
    .option('-t, --test', 'test the connection and the configuration of the server for receiving WAL files', false)
    .action(async (server: string, opts: { test: boolean }) => run(() => runPutWal(host.context(), server, opts))());
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || n < 1) throw new InvalidArgumentError(`'${value}' must be a positive integer`);
  return n;
}

/** One server by name, as Barman's get_server (no `all` here); null once the reason is printed. */

/** " (SSH host: 1.2.3.4)" when run through SSH, as Barman adds to its messages. */
function sshSuffix(): string {
  const conn = process.env['SSH_CONNECTION'];
  const host = conn?.trim().split(/\s+/)[0];
  return host ? ` (SSH host: ${host})` : '';
}

export async function runArchiveWal(ctx: CliContext, name: string): Promise<number> {
  const server = ctx.selectServer(name);
  if (!server) return 1;
  let failed = false;
  const onEvent = (e: ArchiveEvent): void => {
    if (e.type === 'queue-start') {
      const batch = e.runSize < e.found ? ` (batch size: ${e.runSize})` : '';
      ctx.print(`Processing xlog segments from ${e.source} for ${server.name}${batch}`);
    } else if (e.type === 'file') {
      ctx.print(`\t${e.file.name}`);
      if (e.file.outcome === 'duplicate') {
        ctx.print(`\tError: ${e.file.name} is already present in server ${server.name}. File moved to errors directory.`);
        ctx.logger.warn({ server: server.name, wal: e.file.name, errorPath: e.file.path }, 'duplicate WAL with different content moved to errors directory');
      } else {
        ctx.logger.info({ server: server.name, wal: e.file.name, outcome: e.file.outcome, entry: e.file.entry }, 'archived WAL');
      }
    } else {
      const r = e.report;
      if (r.files.length === 0 && r.failure === null) ctx.print('\tno file found');
      if (r.failure) {
        failed = true;
        ctx.error(`Cannot archive ${r.failure.name} from ${r.source} for server ${server.name}: ${r.failure.message}`);
        ctx.logger.error({ server: server.name, wal: r.failure.name, error: r.failure.message }, 'archive-wal failed');
      }
      if (r.hookStop) {
        ctx.warning(`Archiving of ${server.name}/${r.hookStop.name} aborted by pre_archive_retry_script: ${r.hookStop.message}`);
      }
      if (r.unknown.length > 0) {
        ctx.print(`Some unknown objects have been found while processing xlog segments for ${server.name}. Objects moved to errors directory:`);
        for (const u of r.unknown) ctx.print(`\t${u.name}`);
        ctx.logger.warn({ server: server.name, files: r.unknown }, 'unexpected files moved to errors directory');
      }
    }
  };
  let result;
  try {
    result = await archiveWal(server, { onEvent, hooks: ServerHooks.forServer(server, { configFile: ctx.config.file, logger: ctx.logger }) });
  } catch (err) {
    if (err instanceof ArchiveConfigError) throw new CliError(err.message);
    throw err;
  }
  if (result.busy) {
    ctx.print(`Another archive-wal process is already running on server ${server.name}. Skipping to the next server`);
    return 0;
  }
  return failed || ctx.hadErrors ? 1 : 0;
}

interface GetWalCliOptions {
  outputDirectory?: string;
  partial: boolean;
  keepCompression: boolean;
  peek?: number;
  test: boolean;
  compression?: 'gzip' | 'bzip2' | undefined;
}

export async function runGetWal(ctx: CliContext, name: string, walName: string, opts: GetWalCliOptions): Promise<number> {
  const server = ctx.selectServer(name, { allowInactive: true });
  if (!server) return 1;
  if (opts.test) {
    ctx.print(`Ready to retrieve WAL files from the server ${server.name}`);
    return 0;
  }
  if (opts.compression && opts.keepCompression) throw new CliError(`argument \`${opts.compression}\` not allowed with argument \`keep-compression\``);
  const suffix = sshSuffix();
  try {
    checkWalName(walName, suffix);
    if (opts.peek !== undefined) {
      for (const wal of await peekWals(server.paths, walName, opts.peek)) ctx.print(wal);
      return 0;
    }
    const dest = opts.outputDirectory !== undefined ? { directory: opts.outputDirectory } : { stream: process.stdout };
    const sent = await sendWal(server.paths, walName, dest, {
      partial: opts.partial,
      compression: opts.compression ?? null,
      keepCompression: opts.keepCompression,
      pathPrefix: server.settings.path_prefix ?? null,
    });
    if (sent === null) {
      ctx.logger.info({ server: server.name, wal: walName }, 'get-wal: WAL not found');
      throw new CliError(`WAL file '${walName}' not found in server '${server.name}'${suffix}`);
    }
    const where = sent.output !== undefined ? `into '${sent.output}' file` : 'to standard output';
    const message = `Sending WAL '${basenameOf(sent.source)}' for server '${server.name}' ${where}${suffix}`;
    // With stdout as the data channel, messages must not taint it.
    if (sent.output !== undefined) ctx.print(message);
    ctx.logger.info({ server: server.name, wal: walName, source: sent.source }, message);
    return 0;
  } catch (err) {
    if (err instanceof GetWalError) throw new CliError(err.message, err.exitCode);
    throw err;
  }
}

function basenameOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

export async function runPutWal(ctx: CliContext, name: string, opts: { test: boolean }): Promise<number> {
  const server = ctx.selectServer(name);
  if (!server) return 1;
  if (opts.test) {
    ctx.print(`Ready to accept WAL files for the server ${server.name}`);
    return 0;
  }
  try {
    const result = await putWal(server.paths, process.stdin, {
      sourceSuffix: sshSuffix(),
      onInfo: (m) => ctx.print(m),
      onWarning: (m) => ctx.warning(m),
      onLog: (m) => ctx.logger.info({ server: server.name }, m),
    });
    ctx.logger.info({ server: server.name, ...result }, 'put-wal done');
    return 0;
  } catch (err) {
    if (err instanceof PutWalError) throw new CliError(err.message, 1);
    throw err;
  }
}
