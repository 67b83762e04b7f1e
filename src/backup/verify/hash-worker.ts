// Worker side of hash-pool.ts: reads one file at a time and hashes it, so the
// checksums of a plain backup use every core instead of the main thread's one.
// Blocking reads are fine here: this thread does nothing else.
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { createChecksum, type ChecksumAlgorithm } from './checksum.ts';

export interface HashRequest {
  id: number;
  path: Uint8Array;
  algorithm: ChecksumAlgorithm;
  /** How many leading bytes to send back (pg_control's system identifier). */
  headBytes: number;
}

export type HashResponse = { id: number; bytes: number; digest: Uint8Array; head: Uint8Array } | { id: number; error: string };

const CHUNK = 1 << 20;
const buffer = Buffer.allocUnsafe(CHUNK);

parentPort?.on('message', (req: HashRequest) => {
  let fd: number | null = null;
  try {
    fd = openSync(Buffer.from(req.path), 'r');
    const checksum = createChecksum(req.algorithm);
    let bytes = 0;
    let head = Buffer.alloc(0);
    for (;;) {
      const n = readSync(fd, buffer, 0, CHUNK, null);
      if (n === 0) break;
      if (head.length < req.headBytes) head = Buffer.concat([head, buffer.subarray(0, Math.min(n, req.headBytes - head.length))]);
      checksum.update(buffer.subarray(0, n));
      bytes += n;
    }
    const response: HashResponse = { id: req.id, bytes, digest: checksum.digest(), head };
    parentPort!.postMessage(response);
  } catch (err) {
    parentPort!.postMessage({ id: req.id, error: (err as Error).message } satisfies HashResponse);
  } finally {
    if (fd !== null) closeSync(fd);
  }
});
