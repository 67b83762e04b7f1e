import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { zstdDecompressSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { createParallelZstdCompressor } from '../../src/wal/parallel-zstd.ts';

// Chunks compressed out of order on the thread pool must come out in input
// order, as frames every zstd decoder reads as one stream.

async function compress(input: Buffer, parallel: number, pieces: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  const step = Math.ceil(input.length / pieces);
  const source = Readable.from(Array.from({ length: pieces }, (_, i) => input.subarray(i * step, (i + 1) * step)));
  const z = source.pipe(createParallelZstdCompressor(3, parallel));
  for await (const c of z) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

describe('parallel zstd', () => {
  // 21 MiB: five full 4 MiB chunks and a short last one; half random, half repetitive.
  const input = Buffer.concat(Array.from({ length: 21 }, (_, i) => (i % 2 ? randomBytes(1 << 20) : Buffer.alloc(1 << 20, i))));

  it.each([1, 2, 4])('with %i at once, decodes to the input with the zstd tool and with Node', async (parallel) => {
    const out = await compress(input, parallel, 97);
    expect(zstdDecompressSync(out).equals(input)).toBe(true);
    const cli = spawnSync('zstd', ['-dc'], { input: out, maxBuffer: 64 << 20 });
    expect(cli.status).toBe(0);
    expect(cli.stdout.equals(input)).toBe(true);
  });

  it('compresses an empty stream to something every decoder accepts', async () => {
    const out = await compress(Buffer.alloc(0), 2, 1);
    expect(zstdDecompressSync(out).length).toBe(0);
  });
});
