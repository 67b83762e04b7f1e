// WAL compression as stream filters, with Barman's names, levels and magic-byte
// detection (barman/compression.py). Archived WALs keep their bare names, so the
// format of a stored file is always found from its first bytes, never a suffix.
//
// gzip and zstd use Node's zlib (in-process, streaming). bzip2, lz4 and xz run the
// standard command-line tools as stream filters (process-filter.ts), because the npm
// alternatives are worse on every count that matters here:
// - bzip2: no maintained pure-JS compressor exists (compressjs, last released 2016,
//   buffer-only: 0.3 MiB/s on a real 16 MiB segment, against 17 MiB/s for `bzip2 -5`);
//   unbzip2-stream and seek-bzip only decompress.
// - lz4: the streaming `lz4` package is a native addon (would be built against the
//   wrong Node); lz4js is buffer-only, without levels, 67 MiB/s against 214 MiB/s for
//   `lz4 -1`; the wasm builds are block APIs without frame streaming.
// The C tools are the reference implementations, so `bzip2 -d`/`lz4 -d` read their
// output by definition; they run on another core, in parallel with our I/O; a process
// per WAL costs about a millisecond next to the codec time. Debian packages: bzip2,
// lz4, xz-utils. (bench/wal-compression.ts measures all of them.)
import { open } from 'node:fs/promises';
import { PassThrough, type Duplex } from 'node:stream';
import { constants as zlibConstants, createGunzip, createGzip, createZstdCompress, createZstdDecompress } from 'node:zlib';
import { processFilter } from './process-filter.ts';

/** Values of `compression` that barkeep can write (Barman's names; pigz/pygzip/pybzip2 are aliases). */
export const WAL_COMPRESSIONS = ['gzip', 'pigz', 'pygzip', 'bzip2', 'pybzip2', 'lz4', 'zstd', 'xz'] as const;
export type WalCompression = (typeof WAL_COMPRESSIONS)[number];

/** On-disk formats, named as Barman's identify_compression names them. */
export type CompressionFormat = 'gzip' | 'bzip2' | 'xz' | 'zstd' | 'lz4' | 'snappy';

export type CompressionLevel = number | 'low' | 'medium' | 'high';

export function isWalCompression(value: string): value is WalCompression {
  return (WAL_COMPRESSIONS as readonly string[]).includes(value);
}

/** The format a configured compression writes: pigz and pygzip write gzip, pybzip2 bzip2. */
export function compressionFormat(compression: WalCompression): Exclude<CompressionFormat, 'snappy'> {
  switch (compression) {
    case 'gzip':
    case 'pigz':
    case 'pygzip':
      return 'gzip';
    case 'bzip2':
    case 'pybzip2':
      return 'bzip2';
    default:
      return compression;
  }
}

interface LevelRange {
  min: number;
  max: number;
  low: number;
  medium: number;
  high: number;
}

// Barman's LEVEL_* class attributes.
const LEVELS: Record<Exclude<CompressionFormat, 'snappy'>, LevelRange> = {
  gzip: { min: 1, max: 9, low: 1, medium: 6, high: 9 },
  bzip2: { min: 1, max: 9, low: 1, medium: 5, high: 9 },
  xz: { min: 1, max: 9, low: 1, medium: 3, high: 5 },
  zstd: { min: -22, max: 22, low: 1, medium: 4, high: 9 },
  lz4: { min: 0, max: 16, low: 0, medium: 6, high: 10 },
};

/** `compression_level` as Barman resolves it: a name, or an integer clamped to the algorithm's range. */
export function resolveCompressionLevel(compression: WalCompression, level: CompressionLevel | null | undefined): number {
  const range = LEVELS[compressionFormat(compression)];
  if (typeof level === 'number') return Math.min(range.max, Math.max(range.min, Math.trunc(level)));
  if (level === 'low') return range.low;
  if (level === 'high') return range.high;
  return range.medium;
}

export interface FilterOptions {
  level?: CompressionLevel | null;
  /** Barman's path_prefix: where to look for the bzip2/lz4/xz programs first. */
  pathPrefix?: string | null;
}

/** A Transform that compresses with `compression`; a pass-through for none. */
export function createCompressor(compression: WalCompression | 'none' | null, opts: FilterOptions = {}): Duplex {
  if (compression === null || compression === 'none') return new PassThrough();
  const level = resolveCompressionLevel(compression, opts.level);
  const format = compressionFormat(compression);
  const tool = { pathPrefix: opts.pathPrefix ?? null, description: `${compression} compression` };
  switch (format) {
    case 'gzip':
      return createGzip({ level });
    case 'zstd':
      return createZstdCompress({ params: { [zlibConstants.ZSTD_c_compressionLevel]: level } });
    case 'bzip2':
      return processFilter('bzip2', ['-c', `-${level}`], { ...tool, debianPackage: 'bzip2' });
    case 'xz':
      return processFilter('xz', ['-c', `-${level}`], { ...tool, debianPackage: 'xz-utils' });
    case 'lz4':
      return processFilter('lz4', ['-c', '-q', `-${lz4CliLevel(level)}`], { ...tool, debianPackage: 'lz4' });
  }
}

// Barman passes the level to lz4.frame, where anything below 3 is the default fast
// mode (= `lz4 -1`) and 3..16 are HC levels that liblz4 caps at 12.
function lz4CliLevel(level: number): number {
  return level < 3 ? 1 : Math.min(level, 12);
}

export class UnsupportedCompressionError extends Error {}

/** A Transform that decompresses `format`; a pass-through for null (not compressed). */
export function createDecompressor(format: CompressionFormat | null, opts: Pick<FilterOptions, 'pathPrefix'> = {}): Duplex {
  const tool = { pathPrefix: opts.pathPrefix ?? null, description: `${format} decompression` };
  switch (format) {
    case null:
      return new PassThrough();
    case 'gzip':
      return createGunzip();
    case 'zstd':
      return createZstdDecompress();
    case 'bzip2':
      return processFilter('bzip2', ['-d', '-c'], { ...tool, debianPackage: 'bzip2' });
    case 'xz':
      return processFilter('xz', ['-d', '-c'], { ...tool, debianPackage: 'xz-utils' });
    case 'lz4':
      return processFilter('lz4', ['-d', '-c', '-q'], { ...tool, debianPackage: 'lz4' });
    case 'snappy':
      throw new UnsupportedCompressionError('snappy-compressed WAL files are not supported by barkeep (decompress them with python-snappy first)');
  }
}

// barman/compression.py MAGIC values. gzip and pigz share one magic; Barman reports
// the first name in alphabetical order, i.e. gzip (and bzip2 for pybzip2).
const MAGICS: readonly [CompressionFormat, Buffer][] = [
  ['bzip2', Buffer.from('425a68', 'hex')],
  ['gzip', Buffer.from('1f8b08', 'hex')],
  ['lz4', Buffer.from('04224d18', 'hex')],
  ['snappy', Buffer.from('ff060000734e61507059', 'hex')],
  ['xz', Buffer.from('fd377a585a00', 'hex')],
  ['zstd', Buffer.from('28b52ffd', 'hex')],
];

export const MAGIC_MAX_LENGTH = Math.max(...MAGICS.map(([, m]) => m.length));

export function detectCompressionFromBytes(head: Uint8Array): CompressionFormat | null {
  const buf = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  for (const [format, magic] of MAGICS) {
    if (buf.length >= magic.length && buf.subarray(0, magic.length).equals(magic)) return format;
  }
  return null;
}

/** The compression of a file (by path) or of data starting with the given bytes; null if none. */
export async function detectCompression(source: string | Uint8Array): Promise<CompressionFormat | null> {
  if (typeof source !== 'string') return detectCompressionFromBytes(source);
  const fh = await open(source, 'r');
  try {
    const head = Buffer.alloc(MAGIC_MAX_LENGTH);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    return detectCompressionFromBytes(head.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}
