// Throughput of barkeep's WAL compression filters on one WAL segment, next to the
// ratio each achieves: `node bench/wal-compression.ts SEGMENT [ROUNDS]`.
// Uses src/ directly (Node 22 strips the types).
import { createReadStream, readFileSync, statSync } from 'node:fs';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createCompressor, createDecompressor, compressionFormat, type WalCompression } from '../src/wal/compression.ts';

const [, , segment, roundsText] = process.argv;
if (!segment) {
  console.error('usage: node bench/wal-compression.ts SEGMENT [ROUNDS]');
  process.exit(2);
}
const rounds = Number(roundsText ?? 3);
const size = statSync(segment).size;
const original = readFileSync(segment);

function sink(): { stream: Writable; chunks: Buffer[] } {
  const chunks: Buffer[] = [];
  return {
    chunks,
    stream: new Writable({
      write(chunk: Buffer, _e, cb) {
        chunks.push(chunk);
        cb();
      },
    }),
  };
}

const mibps = (bytes: number, ms: number) => (bytes / 1048576 / (ms / 1000)).toFixed(0);

console.log(`segment ${segment}: ${size} bytes, best of ${rounds}`);
console.log('compression  level   ratio   compress MiB/s   decompress MiB/s');
for (const compression of ['gzip', 'bzip2', 'lz4', 'zstd', 'xz'] as WalCompression[]) {
  for (const level of ['low', 'medium', 'high'] as const) {
    let best = Infinity;
    let bestD = Infinity;
    let packed = Buffer.alloc(0);
    for (let i = 0; i < rounds; i++) {
      const out = sink();
      const t0 = performance.now();
      await pipeline(createReadStream(segment, { highWaterMark: 1 << 20 }), createCompressor(compression, { level }), out.stream);
      best = Math.min(best, performance.now() - t0);
      packed = Buffer.concat(out.chunks);
      const back = sink();
      const t1 = performance.now();
      await pipeline(async function* () {
        yield packed;
      }, createDecompressor(compressionFormat(compression)), back.stream);
      bestD = Math.min(bestD, performance.now() - t1);
      if (!Buffer.concat(back.chunks).equals(original)) throw new Error(`${compression} ${level}: round trip differs`);
    }
    console.log(
      `${compression.padEnd(12)} ${level.padEnd(7)} ${((packed.length / size) * 100).toFixed(1).padStart(5)}%   ${mibps(size, best).padStart(14)}   ${mibps(size, bestD).padStart(16)}`,
    );
  }
}
