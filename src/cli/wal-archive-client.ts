import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Option } from 'commander';
import { createCompressor, type CompressionLevel, type WalCompression } from '../wal/compression.ts';
import { writeChecksumTar, type HashAlgorithm } from './wal-clients/checksum-tar.ts';
import { writeTempFile } from './wal-clients/durable-file.ts';
import {
  ClientExit,
  clientProgram,
  parseClientArgs,
  runClient,
  sshTarget,
  USAGE_ERROR,
  type ConnectionOptions,
} from './wal-clients/program.ts';
import { shellQuote, sshCapture, spawnSsh, SSH_FAILURE, waitForExit, type SshTarget } from './wal-clients/ssh.ts';

// barkeep-wal-archive: PostgreSQL's archive_command on the database host,
// the equivalent of barman-wal-archive 3.x. It streams the WAL file as a tar
// with its checksum over `ssh USER@HOST barkeep put-wal SERVER`, and exits 0
// only when the backup server has stored it:
//   archive_command = 'barkeep-wal-archive backup pg %p'
// Exit statuses as barman-wal-archive's: 0 stored; 2 bad invocation or local
// problem; 3 ssh could not connect; otherwise put-wal's own status.

interface ArchiveOptions extends ConnectionOptions {
  md5?: boolean;
  compression?: WalCompression;
  compressionLevel?: CompressionLevel;
}

const CLIENT_COMPRESSIONS: [flags: string, name: WalCompression | 'snappy', what: string][] = [
  ['-z, --gzip', 'gzip', 'gzip-compress the WAL file before sending it'],
  ['-j, --bzip2', 'bzip2', "bzip2-compress the WAL file before sending it (runs the 'bzip2' program)"],
  ['--xz', 'xz', "xz-compress the WAL file before sending it (runs the 'xz' program)"],
  ['--snappy', 'snappy', 'accepted for compatibility; not supported by barkeep'],
  ['--zstd', 'zstd', 'zstd-compress the WAL file before sending it'],
  ['--lz4', 'lz4', "lz4-compress the WAL file before sending it (runs the 'lz4' program)"],
];

export async function main(argv: string[]): Promise<number> {
  const program = clientProgram(
    'barkeep-wal-archive',
    "PostgreSQL archive_command sending WAL files to a barkeep (or Barman) server's put-wal over ssh",
  )
    .option('-t, --test', "test the connection and the server's configuration for receiving WAL files; WAL_PATH is ignored")
    .option('--md5', 'send MD5SUMS instead of SHA256SUMS, for Barman servers older than 3.11');
  for (const [flags, name, what] of CLIENT_COMPRESSIONS) {
    program.addOption(new Option(flags, what).preset(name).conflicts(CLIENT_COMPRESSIONS.filter(([, n]) => n !== name).map(([, n]) => n)));
  }
  program
    .option('--compression-level <level>', "compression level: an integer, or 'low', 'medium', 'high'")
    .argument('<BARMAN_HOST>', 'the host of the backup server')
    .argument('<SERVER_NAME>', 'the server name configured on the backup server')
    .argument('[WAL_PATH]', "the value of the '%p' keyword (according to 'archive_command')");

  const early = parseClientArgs(program, argv);
  if (early !== null) return early;
  return runClient(async () => {
    const [host, server, walPath] = program.processedArgs as [string, string, string | undefined];
    const raw = program.opts<Record<string, unknown> & ConnectionOptions>();
    const opts: ArchiveOptions = { ...raw, compression: chosenCompression(raw), compressionLevel: parseLevel(raw['compressionLevel']) };
    const target = sshTarget(host, opts);
    if (opts.test) return connectivityTest(target, server);
    if (walPath === undefined) throw new ClientExit("missing required argument 'WAL_PATH'", USAGE_ERROR);
    return archive(target, server, walPath, opts);
  });
}

function chosenCompression(raw: Record<string, unknown>): WalCompression | undefined {
  const chosen = CLIENT_COMPRESSIONS.map(([, name]) => name).find((name) => raw[name] !== undefined);
  if (chosen === 'snappy') throw new ClientExit('--snappy is not supported by barkeep-wal-archive: use --zstd, --lz4 or -z', USAGE_ERROR);
  return chosen;
}

function parseLevel(value: unknown): CompressionLevel | undefined {
  if (value === undefined) return undefined;
  const text = String(value).toLowerCase();
  if (/^-?\d+$/.test(text)) return Number(text);
  if (text === 'low' || text === 'medium' || text === 'high') return text;
  throw new ClientExit(`--compression-level '${String(value)}': use an integer or one of low, medium, high`, USAGE_ERROR);
}

async function connectivityTest(target: SshTarget, server: string): Promise<number> {
  const r = await sshCapture(target, ['put-wal', shellQuote(server), '--test'], { mergeStderr: true });
  if (r.spawnError) throw new ClientExit(`Impossible to invoke remote put-wal: ${r.spawnError.message}`, 2);
  process.stdout.write(`${r.output}\n`);
  return r.code;
}

async function archive(target: SshTarget, server: string, walPath: string, opts: ArchiveOptions): Promise<number> {
  const info = await stat(walPath).catch((e: NodeJS.ErrnoException) => {
    throw new ClientExit(`Cannot read WAL_PATH '${walPath}': ${e.code === 'ENOENT' ? 'no such file' : e.message}`, 2);
  });
  if (info.isDirectory()) throw new ClientExit(`WAL_PATH cannot be a directory: ${walPath}`, 2);
  const name = basename(walPath);
  const algorithm: HashAlgorithm = opts.md5 ? 'md5' : 'sha256';

  // A tar header carries the size, so a compressed copy must exist first.
  const scratch = opts.compression ? await mkdtemp(join(tmpdir(), 'barkeep-wal-archive-')) : null;
  try {
    let sendPath = walPath;
    if (scratch && opts.compression) {
      const compressor = createCompressor(opts.compression, { level: opts.compressionLevel ?? null });
      const compressed = await writeTempFile(join(scratch, name), createReadStream(walPath), [compressor]).catch((e: Error) => {
        throw new ClientExit(`Cannot compress '${walPath}': ${e.message}`, 2);
      });
      sendPath = compressed.path;
    }
    // Open before connecting: a file that cannot be read must not reach put-wal as an empty tar.
    const fh = await open(sendPath, 'r').catch((e: Error) => {
      throw new ClientExit(`Cannot read WAL_PATH '${walPath}': ${e.message}`, 2);
    });
    const size = (await fh.stat()).size;
    const ssh = spawnSsh(target, ['put-wal', shellQuote(server)], ['pipe', 'inherit', 'inherit']);
    const exited = waitForExit(ssh);
    const source = fh.createReadStream({ highWaterMark: 1 << 20 });
    const sending = writeChecksumTar(ssh.stdin!, [{ name, source, size, mode: info.mode & 0o7777, mtime: info.mtime, uid: info.uid, gid: info.gid }], algorithm);
    // When put-wal or ssh fails early the send fails with EPIPE: the exit status says why.
    const sendError = await sending.then(
      () => null,
      (e: Error) => e,
    );
    const outcome = await exited;
    // The stream owns the descriptor (autoClose): destroying it closes the file if the send stopped early.
    source.destroy();
    if (outcome.spawnError) throw new ClientExit(`Error executing ssh: ${outcome.spawnError.message}`, 2);
    if (outcome.code === 0 && sendError) throw new ClientExit(`Error sending '${walPath}': ${sendError.message}`, 2);
    if (outcome.code === 0) return 0;
    if (outcome.code === SSH_FAILURE) throw new ClientExit('Connection problem with ssh', 3);
    throw new ClientExit(`Remote '${target.remoteCommand} put-wal' command has failed!`, outcome.code);
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
}
