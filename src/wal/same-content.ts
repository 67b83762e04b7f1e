// Whether two stored WAL files hold the same WAL once decompressed: how the archiver
// tells a harmless re-delivery from a real conflict. Both are streamed through a
// hash, so memory stays bounded whatever the segment size.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createDecompressor, type CompressionFormat } from './compression.ts';

export interface StoredFile {
  path: string;
  format: CompressionFormat | null;
}

export async function sameWalContent(a: StoredFile, b: StoredFile, pathPrefix: string | null = null): Promise<boolean> {
  const [x, y] = await Promise.all([contentDigest(a, pathPrefix), contentDigest(b, pathPrefix)]);
  return x.equals(y);
}

async function contentDigest(file: StoredFile, pathPrefix: string | null): Promise<Buffer> {
  const hash = createHash('sha256');
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb();
    },
  });
  try {
    await pipeline(createReadStream(file.path), createDecompressor(file.format, { pathPrefix }), sink);
  } catch (err) {
    throw new Error(`cannot read ${file.path}${file.format ? ` as ${file.format} data` : ''}: ${(err as Error).message}`);
  }
  return hash.digest();
}
