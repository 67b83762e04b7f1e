import { execFileSync } from 'node:child_process';
import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  compressionFormat,
  createCompressor,
  createDecompressor,
  detectCompression,
  detectCompressionFromBytes,
  resolveCompressionLevel,
  WAL_COMPRESSIONS,
  type CompressionFormat,
  type WalCompression,
} from '../../src/wal/compression.ts';
import { processFilter } from '../../src/wal/process-filter.ts';
import { makeTempDir } from '../support/tmp.ts';
import { makeWalSegments, type WalFixture } from './fixtures.ts';

// Every compression round-trips a real WAL segment byte for byte, through barkeep
// and through the standard tools in both directions.

const TOOL: Record<Exclude<CompressionFormat, 'snappy'>, string> = { gzip: 'gzip', bzip2: 'bzip2', lz4: 'lz4', zstd: 'zstd', xz: 'xz' };

let wal: WalFixture;
let segment: Buffer;
let segmentPath: string;
let scratch: string;

beforeAll(async () => {
  wal = await makeWalSegments(2, 20000);
  segmentPath = join(wal.dir, wal.names[1]!);
  segment = readFileSync(segmentPath);
  scratch = makeTempDir('compression');
});

async function collect(source: Readable, ...filters: NodeJS.ReadWriteStream[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await pipeline([
    source,
    ...filters,
    new Writable({
      write(chunk: Buffer, _e, cb) {
        chunks.push(chunk);
        cb();
      },
    }),
  ]);
  return Buffer.concat(chunks);
}

describe.each(WAL_COMPRESSIONS.map((c) => [c]))('%s', (compression: WalCompression) => {
  const format = compressionFormat(compression);

  it.each(['low', 'medium', 'high'] as const)('round-trips a real WAL segment at level %s, readable by the standard tool', async (level) => {
    const packed = await collect(createReadStream(segmentPath), createCompressor(compression, { level }));
    expect(packed.length).toBeLessThan(segment.length);
    expect(detectCompressionFromBytes(packed)).toBe(format);
    expect((await collect(Readable.from([packed]), createDecompressor(format))).equals(segment)).toBe(true);
    const file = join(scratch, `${compression}-${level}`);
    writeFileSync(file, packed);
    expect(await detectCompression(file)).toBe(format);
    const byTool = execFileSync(TOOL[format], ['-d', '-c', file], { maxBuffer: 64 << 20 });
    expect(byTool.equals(segment)).toBe(true);
  });

  it('decompresses what the standard tool compressed', async () => {
    const packed = execFileSync(TOOL[format], ['-c', segmentPath], { maxBuffer: 64 << 20 });
    expect((await collect(Readable.from([packed]), createDecompressor(format))).equals(segment)).toBe(true);
  });
});

describe('no compression', () => {
  it('passes bytes through unchanged', async () => {
    expect((await collect(createReadStream(segmentPath), createCompressor('none'))).equals(segment)).toBe(true);
    expect((await collect(createReadStream(segmentPath), createCompressor(null), createDecompressor(null))).equals(segment)).toBe(true);
  });
});

describe('detectCompression', () => {
  it('recognises every magic exactly as Barman does', () => {
    const cases: [string, CompressionFormat | null][] = [
      ['1f8b08', 'gzip'],
      ['425a68', 'bzip2'],
      ['fd377a585a00', 'xz'],
      ['28b52ffd', 'zstd'],
      ['04224d18', 'lz4'],
      ['ff060000734e61507059', 'snappy'],
      ['1f8b09', null],
      ['425a', null],
      ['fd377a585a01', null],
      ['', null],
    ];
    for (const [hex, expected] of cases) {
      expect(detectCompressionFromBytes(Buffer.concat([Buffer.from(hex, 'hex'), hex === '' ? Buffer.alloc(0) : Buffer.from('rest of the file')]))).toBe(expected);
    }
  });

  it('finds no compression in raw WAL, history files or empty files', async () => {
    expect(await detectCompression(segmentPath)).toBeNull();
    expect(await detectCompression(segment.subarray(0, 4))).toBeNull();
    const history = join(scratch, '00000002.history');
    writeFileSync(history, '1\t0/3000000\tno recovery target specified\n');
    expect(await detectCompression(history)).toBeNull();
    const empty = join(scratch, 'empty');
    writeFileSync(empty, '');
    expect(await detectCompression(empty)).toBeNull();
  });
});

describe('resolveCompressionLevel', () => {
  it("maps low/medium/high and clamps integers to each algorithm's range", () => {
    expect([resolveCompressionLevel('gzip', 'low'), resolveCompressionLevel('gzip', 'medium'), resolveCompressionLevel('gzip', 'high')]).toEqual([1, 6, 9]);
    expect([resolveCompressionLevel('pigz', null), resolveCompressionLevel('bzip2', 'medium'), resolveCompressionLevel('pybzip2', 'high')]).toEqual([6, 5, 9]);
    expect([resolveCompressionLevel('lz4', 'low'), resolveCompressionLevel('lz4', 'medium'), resolveCompressionLevel('lz4', 'high')]).toEqual([0, 6, 10]);
    expect([resolveCompressionLevel('zstd', 'low'), resolveCompressionLevel('zstd', 'medium'), resolveCompressionLevel('zstd', 'high')]).toEqual([1, 4, 9]);
    expect([resolveCompressionLevel('xz', 'low'), resolveCompressionLevel('xz', 'medium'), resolveCompressionLevel('xz', 'high')]).toEqual([1, 3, 5]);
    expect(resolveCompressionLevel('gzip', 42)).toBe(9);
    expect(resolveCompressionLevel('gzip', -3)).toBe(1);
    expect(resolveCompressionLevel('zstd', -40)).toBe(-22);
    expect(resolveCompressionLevel('lz4', 99)).toBe(16);
  });

  it('compresses at a negative zstd level and the lz4 maximum', async () => {
    for (const [c, level] of [
      ['zstd', -5],
      ['lz4', 16],
    ] as const) {
      const packed = await collect(createReadStream(segmentPath), createCompressor(c, { level }));
      expect((await collect(Readable.from([packed]), createDecompressor(c))).equals(segment)).toBe(true);
    }
  });
});

describe('process filters fail clearly', () => {
  it('reports corrupt input with the tool and its message', async () => {
    const garbage = Buffer.concat([Buffer.from('425a6839', 'hex'), Buffer.alloc(1000, 7)]);
    await expect(collect(Readable.from([garbage]), createDecompressor('bzip2'))).rejects.toThrow(/bzip2 decompression: 'bzip2' exited with code 2/);
    const lz4Garbage = Buffer.concat([Buffer.from('04224d18', 'hex'), Buffer.alloc(100, 1)]);
    await expect(collect(Readable.from([lz4Garbage]), createDecompressor('lz4'))).rejects.toThrow(/lz4 decompression: 'lz4' exited with code/);
  });

  it('names the missing program and its package', async () => {
    const filter = processFilter('barkeep-no-such-program', [], { description: 'test filter', debianPackage: 'nothing' });
    await expect(collect(Readable.from([Buffer.from('x')]), filter)).rejects.toThrow("test filter: the 'barkeep-no-such-program' program was not found on PATH (Debian package nothing)");
  });

  it('fails a truncated gzip stream', async () => {
    const packed = await collect(createReadStream(segmentPath), createCompressor('gzip'));
    await expect(collect(Readable.from([packed.subarray(0, packed.length - 100)]), createDecompressor('gzip'))).rejects.toThrow(/unexpected end of file/);
  });

  it('keeps memory bounded: a slow consumer pauses the child process', async () => {
    // 64 MiB out of bzip2 -d into a consumer slower than the tool: what waits in our
    // buffer stays small because the child's stdout is paused, not drained into memory.
    const packed = execFileSync('bzip2', ['-c', '-1'], { input: Buffer.alloc(64 << 20, 0), maxBuffer: 64 << 20 });
    const filter = createDecompressor('bzip2');
    let received = 0;
    let maxBuffered = 0;
    await pipeline(
      Readable.from([packed]),
      filter,
      new Writable({
        highWaterMark: 1 << 16,
        write(chunk: Buffer, _e, cb) {
          received += chunk.length;
          maxBuffered = Math.max(maxBuffered, filter.readableLength);
          setImmediate(cb);
        },
      }),
    );
    expect(received).toBe(64 << 20);
    expect(maxBuffered).toBeLessThan(1 << 20);
  });

  it('reports an unsupported format', () => {
    expect(() => createDecompressor('snappy')).toThrow(/snappy-compressed WAL files are not supported/);
  });
});
