import { Transform, type TransformCallback } from 'node:stream';
import { constants as zlibConstants, zstdCompress } from 'node:zlib';

// zstd on several cores for one stream: the input is cut into fixed-size
// chunks, each compressed as an independent zstd frame on libuv's thread
// pool, and the frames are emitted in input order. Concatenated frames are a
// valid zstd stream for every decoder. Node 22's own multi-threaded zstd
// (ZSTD_c_nbWorkers) fails as a stream ("push() after EOF"), hence this.
// At most `parallel` chunks are in flight: memory stays bounded.

const CHUNK = 4 * 1024 * 1024;

export function createParallelZstdCompressor(level: number, parallel: number): Transform {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const inFlight: Promise<Buffer>[] = [];

  const compress = (data: Buffer): Promise<Buffer> =>
    new Promise((resolve, reject) =>
      zstdCompress(data, { params: { [zlibConstants.ZSTD_c_compressionLevel]: level } }, (err, out) => (err ? reject(err) : resolve(out))),
    );

  return new Transform({
    highWaterMark: CHUNK,
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      pending.push(chunk);
      pendingBytes += chunk.length;
      const work = async () => {
        while (pendingBytes >= CHUNK) {
          const all = Buffer.concat(pending, pendingBytes);
          const head = all.subarray(0, CHUNK);
          const rest = all.subarray(CHUNK);
          pending = rest.length ? [Buffer.from(rest)] : [];
          pendingBytes = rest.length;
          inFlight.push(compress(Buffer.from(head)));
          // Keep order, and no more than `parallel` chunks in memory.
          if (inFlight.length >= parallel) this.push(await inFlight.shift()!);
        }
      };
      work().then(() => cb(), cb);
    },
    flush(cb: TransformCallback) {
      const finish = async () => {
        if (pendingBytes > 0) inFlight.push(compress(Buffer.concat(pending, pendingBytes)));
        pending = [];
        pendingBytes = 0;
        while (inFlight.length) this.push(await inFlight.shift()!);
      };
      finish().then(() => cb(), cb);
    },
  });
}
