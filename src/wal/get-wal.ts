// get-wal: serve one WAL from the archive (decompressed, or recompressed on
// request) for restore_command / barman-wal-restore, and --peek for prefetching.
// Lookup order is Barman's get_wal_possible_paths: the archive, then the queues not
// yet archived, then (with --partial) the partial files, then the archive again in
// case the archiver moved the file while we were looking.
import { constants } from 'node:fs';
import { access, open, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ServerPaths } from '../catalog/layout.ts';
import { isWalFileName, walPath } from '../catalog/layout.ts';
import { isErrno } from '../util/durable-fs.ts';
import { createCompressor, createDecompressor, detectCompressionFromBytes, MAGIC_MAX_LENGTH, UnsupportedCompressionError, type CompressionFormat } from './compression.ts';
import { streamToDurableFile } from './durable-stream.ts';

export const PARTIAL_SUFFIX = '.partial';

/** get-wal's exit code for a bad WAL name or an unusable output (Barman's). */
export const GET_WAL_USAGE_EXIT = 3;

export class GetWalError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.exitCode = exitCode;
  }
}

export function walCandidatePaths(paths: ServerPaths, walName: string, partial: boolean): string[] {
  const archived = walPath(paths, walName);
  const incoming = join(paths.incomingWalsDirectory, walName);
  const streaming = join(paths.streamingWalsDirectory, walName);
  const out = [archived, incoming, streaming];
  if (partial) {
    // streaming again: pg_receivewal may complete the partial while we look;
    // archived/incoming partials are the last segment of an old timeline after a promotion.
    out.push(streaming + PARTIAL_SUFFIX, streaming, archived + PARTIAL_SUFFIX, incoming + PARTIAL_SUFFIX);
  }
  out.push(archived);
  return out;
}

export interface GetWalOptions {
  partial?: boolean;
  /** Recompress the output (get-wal -z / -j). */
  compression?: 'gzip' | 'bzip2' | null;
  /** Send the stored bytes as they are. */
  keepCompression?: boolean;
  pathPrefix?: string | null;
}

export type GetWalDestination = { stream: Writable } | { directory: string };

export interface SentWal {
  /** The file served. */
  source: string;
  /** The output file, with { directory }. */
  output?: string;
}

export function checkWalName(walName: string, sourceSuffix = ''): void {
  if (!isWalFileName(walName)) throw new GetWalError(`'${walName}' is not a valid wal file name${sourceSuffix}`, GET_WAL_USAGE_EXIT);
}

/** Streams the WAL to the destination; null when it is in none of the places it could be. */
export async function sendWal(paths: ServerPaths, walName: string, dest: GetWalDestination, opts: GetWalOptions = {}): Promise<SentWal | null> {
  checkWalName(walName);
  if ('directory' in dest) await checkOutputDirectory(dest.directory, walName);
  for (const candidate of walCandidatePaths(paths, walName, opts.partial ?? false)) {
    // Once open, the archiver renaming or removing the file no longer matters.
    let fh: FileHandle;
    try {
      fh = await open(candidate, 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'EISDIR')) continue;
      throw err;
    }
    try {
      if (!(await fh.stat()).isFile()) continue;
      const filters = await outputFilters(fh, opts);
      const input = fh.createReadStream({ start: 0, autoClose: false, highWaterMark: 1 << 20 });
      const output = 'directory' in dest ? join(dest.directory, walName) : undefined;
      try {
        if ('stream' in dest) await pipeline([input, ...filters, dest.stream], { end: false });
        else await streamToDurableFile(output!, input, filters);
      } catch (err) {
        // Barman's "Error decompressing WAL" case, or the output failing midway: exit 1.
        throw new GetWalError(`Error sending WAL file '${candidate}'${output ? ` into '${output}'` : ''}: ${(err as Error).message}`, 1);
      }
      if (output === undefined) return { source: candidate };
      return { source: candidate, output };
    } finally {
      await fh.close();
    }
  }
  return null;
}

async function outputFilters(fh: FileHandle, opts: GetWalOptions) {
  if (opts.keepCompression) return [];
  const head = Buffer.alloc(MAGIC_MAX_LENGTH);
  const { bytesRead } = await fh.read(head, 0, head.length, 0);
  // By magic bytes, as Barman identifies compression; raw WAL never starts with one.
  const stored: CompressionFormat | null = detectCompressionFromBytes(head.subarray(0, bytesRead));
  const wanted = opts.compression ?? null;
  if (stored === wanted) return [];
  try {
    return [createDecompressor(stored, { pathPrefix: opts.pathPrefix ?? null }), createCompressor(wanted, { pathPrefix: opts.pathPrefix ?? null })];
  } catch (err) {
    if (err instanceof UnsupportedCompressionError) throw new GetWalError(err.message, 1);
    throw err;
  }
}

async function checkOutputDirectory(directory: string, walName: string): Promise<void> {
  const target = join(directory, walName);
  try {
    if (!(await stat(directory)).isDirectory()) throw Object.assign(new Error('Not a directory'), { code: 'ENOTDIR' });
    await access(directory, constants.W_OK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const reason = e.code === 'ENOENT' ? 'No such file or directory' : e.code === 'EACCES' ? 'Permission denied' : e.message;
    throw new GetWalError(`Unable to open '${target}' file: [Errno ${e.errno ? Math.abs(e.errno) : '?'}] ${reason}: '${target}'`, GET_WAL_USAGE_EXIT);
  }
}

// Segment names are %08X%08X%08X: timeline, log, segment.
const SEGMENT_RE = /^([0-9A-Fa-f]{8})([0-9A-Fa-f]{8})([0-9A-Fa-f]{8})$/;
// Without knowing the segment size, Barman's generator tries every name in a log
// up to this many segments (the count for the smallest possible segment size).
const MAX_SEGMENT_IN_LOG = 0x7ffff;

/**
 * get-wal --peek: up to `count` existing WAL names from `walName` on (partials excluded).
 * The segment size is unknown here, so a missing name that could be the first past
 * the end of a log (its segment number is a power of two) continues at the next log.
 */
export async function peekWals(paths: ServerPaths, walName: string, count: number): Promise<string[]> {
  checkWalName(walName);
  const found: string[] = [];
  const m = SEGMENT_RE.exec(walName);
  if (!m) {
    if (count > 0 && (await existsAny(walCandidatePaths(paths, walName, false)))) found.push(walName);
    return found;
  }
  const tli = parseInt(m[1]!, 16);
  let log = parseInt(m[2]!, 16);
  let seg = parseInt(m[3]!, 16);
  while (found.length < count) {
    const name = hex8(tli) + hex8(log) + hex8(seg);
    if (await existsAny(walCandidatePaths(paths, name, false))) {
      found.push(name);
      seg++;
      if (seg > MAX_SEGMENT_IN_LOG) {
        seg = 0;
        log++;
      }
      continue;
    }
    if (seg === 0 || (seg & (seg - 1)) !== 0 || log >= 0xffffffff) break;
    seg = 0;
    log++;
  }
  return found;
}

function hex8(n: number): string {
  return n.toString(16).toUpperCase().padStart(8, '0');
}

async function existsAny(paths: readonly string[]): Promise<boolean> {
  for (const p of paths) {
    try {
      await stat(p);
      return true;
    } catch (err) {
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
    }
  }
  return false;
}
