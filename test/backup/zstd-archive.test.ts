import { randomBytes } from 'node:crypto';
import { zstdDecompressSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ZstdArchive } from '../../src/backup/zstd-archive.ts';
import type { DirectArchive } from '../../src/postgres/base-backup.ts';

// Client-side zstd of a tar backup: whatever the pieces and however many
// lanes, the file must decompress to exactly the bytes sent, and a failure
// while writing must fail the archive rather than leave a short file.

class Collect implements DirectArchive {
  parts: Buffer[] = [];
  closed = false;
  aborted = false;
  failOn: number | null = null;
  writeNow(chunk: Buffer): void {
    if (this.failOn !== null && this.parts.length === this.failOn) throw new Error('ENOSPC: no space left on device');
    this.parts.push(Buffer.from(chunk));
  }
  close(): void {
    this.closed = true;
  }
  abort(): void {
    this.aborted = true;
  }
}

// Compressible like table pages, with random stretches: ~13 MiB, so several 4 MiB frames and a short last one.
const input = Buffer.concat(Array.from({ length: 13 }, (_, i) => (i % 3 === 0 ? randomBytes(1 << 20) : Buffer.alloc(1 << 20, i))).concat([randomBytes(54_321)]));

async function compress(lanes: number, pieceSize: number, out = new Collect()): Promise<Collect> {
  const z = new ZstdArchive(out, 3, lanes);
  let paused = 0;
  try {
    for (let i = 0; i < input.length; i += pieceSize) {
      z.writeNow(input.subarray(i, i + pieceSize));
      const ready = z.whenReady();
      if (ready) {
        // As the socket would: nothing more until the compressor has room.
        paused++;
        await ready;
      }
    }
    await z.close();
  } catch (e) {
    // As runBaseBackup does when a write fails.
    z.abort();
    throw e;
  }
  if (lanes === 1) expect(paused).toBeGreaterThan(0);
  return out;
}

describe('ZstdArchive', () => {
  for (const [lanes, piece] of [
    [1, 32_768],
    [2, 262_144],
    [4, 1_000_003],
  ] as const) {
    it(`${lanes} lane(s), ${piece}-byte pieces: the frames decompress to the input, in order`, async () => {
      const out = await compress(lanes, piece);
      expect(out.closed).toBe(true);
      expect(zstdDecompressSync(Buffer.concat(out.parts)).equals(input)).toBe(true);
      // One frame per 4 MiB: the parts are written frame by frame.
      expect(out.parts.length).toBe(Math.ceil(input.length / (4 << 20)));
    });
  }

  it('an error writing a frame fails the archive at close, and nothing more is written', async () => {
    const out = new Collect();
    out.failOn = 1;
    await expect(compress(2, 65_536, out)).rejects.toThrow(/ENOSPC/);
    expect(out.parts).toHaveLength(1);
    expect(out.aborted).toBe(true);
    expect(out.closed).toBe(false);
  });
});
