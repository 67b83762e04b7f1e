// Worker side of hash-pool.ts: reads one file at a time and hashes it, so the
// checksums of a plain backup use every core instead of the main thread's one.
// With copyTo, the bytes are also written there (a local restore copies and
// verifies in one read; it makes the copies durable itself, all at once, and
// the copies start their write-back early, as a backup's files do). Blocking
// I/O is fine: this thread does nothing else.
import { closeSync, copyFile, fchmodSync, fstatSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { writeAllSync } from '../../util/write-all-sync.ts';
import { EarlyWriteback } from '../early-writeback.ts';
import { createChecksum, type ChecksumAlgorithm } from './checksum.ts';

export interface HashRequest {
  id: number;
  path: Uint8Array;
  algorithm: ChecksumAlgorithm;
  /** How many leading bytes to send back (pg_control's system identifier). */
  headBytes: number;
  /** Also write the bytes to this new file (not fsynced: the caller syncs the filesystem). */
  copyTo?: Uint8Array;
  mode?: number;
}

/** Answered once no write-back this worker started is under way (its descriptors are closed). */
export interface DrainRequest {
  id: number;
  drain: true;
}

export type HashResponse = { id: number; bytes: number; digest: Uint8Array; head: Uint8Array } | { id: number; error: string } | { id: number; drained: true };

const CHUNK = 1 << 20;
/** The copy loop lets the write-back callbacks run this often. */
const YIELD_EVERY = 64 * CHUNK;
const KERNEL_COPY_MIN = 16 * CHUNK;
const buffer = Buffer.allocUnsafe(CHUNK);
const writeback = new EarlyWriteback();

parentPort?.on('message', (req: HashRequest | DrainRequest) => {
  if ('drain' in req) {
    const answer = (): void => {
      if (writeback.busy) setTimeout(answer, 5);
      else parentPort!.postMessage({ id: req.id, drained: true } satisfies HashResponse);
    };
    answer();
    return;
  }
  void handle(req);
});

async function handle(req: HashRequest): Promise<void> {
  let fd: number | null = null;
  let out: number | null = null;
  try {
    fd = openSync(Buffer.from(req.path), 'r');
    if (req.copyTo) out = openSync(Buffer.from(req.copyTo), 'w', req.mode ?? 0o600);
    // A large file is copied by the kernel on the thread pool while this thread
    // hashes the source: the copy and the checksum overlap instead of taking
    // turns, and the bytes cross into user space once instead of twice.
    const kernelCopy = out !== null && fstatSync(fd).size >= KERNEL_COPY_MIN ? copyInKernel(req.path, req.copyTo!) : null;
    kernelCopy?.catch(() => undefined);
    const checksum = createChecksum(req.algorithm);
    let bytes = 0;
    let sinceYield = 0;
    let head = Buffer.alloc(0);
    for (;;) {
      const n = readSync(fd, buffer, 0, CHUNK, null);
      if (n === 0) break;
      if (head.length < req.headBytes) head = Buffer.concat([head, buffer.subarray(0, Math.min(n, req.headBytes - head.length))]);
      checksum.update(buffer.subarray(0, n));
      if (out !== null) {
        if (!kernelCopy) writeAllSync(out, buffer, n);
        writeback.wrote(out, n);
        sinceYield += n;
        if (sinceYield >= YIELD_EVERY) {
          // A finished fdatasync can only be noticed (and the next one started) from the event loop.
          sinceYield = 0;
          await new Promise((r) => setImmediate(r));
        }
      }
      bytes += n;
    }
    if (kernelCopy) {
      await kernelCopy;
      // The copy took the source's permissions; the restore decides them.
      fchmodSync(out!, req.mode ?? 0o600);
      if (fstatSync(out!).size !== bytes) throw new Error(`copying to ${Buffer.from(req.copyTo!).toString()}: ${fstatSync(out!).size} bytes written, ${bytes} read`);
    }
    if (out !== null) {
      writeback.close(out);
      out = null;
    }
    const response: HashResponse = { id: req.id, bytes, digest: checksum.digest(), head };
    parentPort!.postMessage(response);
  } catch (err) {
    parentPort!.postMessage({ id: req.id, error: (err as Error).message } satisfies HashResponse);
  } finally {
    if (fd !== null) closeSync(fd);
    if (out !== null) writeback.close(out);
  }
}

/** copyFile onto the file already opened (same inode: libuv truncates and rewrites it). */
function copyInKernel(from: Uint8Array, to: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => copyFile(Buffer.from(from), Buffer.from(to), (err) => (err ? reject(err) : resolve())));
}
