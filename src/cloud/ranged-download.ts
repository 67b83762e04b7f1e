// Downloading one large object with several ranged GETs at once, reassembled
// in order into a single stream: a single S3 connection rarely goes faster
// than ~100 MB/s, and barman-cloud-restore reads each tar through one.
//
// Memory is bounded by a semaphore shared by every download of a restore:
// each range in flight holds a permit (and at most `rangeSize` bytes) until
// the consumer has taken its bytes. Ranges of one object are requested in
// order and the semaphore is FIFO, so the oldest outstanding range of every
// object always holds (or is first in line for) a permit: no download can
// starve waiting for another's consumer.
import { Readable } from 'node:stream';
import type { ObjectStore } from '../storage/object-store.ts';

export const DEFAULT_RANGE_SIZE = 8 * 1024 * 1024;

/** A FIFO counting semaphore. */
export class Permits {
  #free: number;
  #waiting: (() => void)[] = [];

  constructor(count: number) {
    this.#free = count;
  }

  /** Waits for a permit; an aborted wait rejects and takes none. */
  async acquire(signal?: AbortSignal): Promise<void> {
    if (this.#free > 0 && this.#waiting.length === 0) {
      this.#free--;
      return;
    }
    signal?.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      const grant = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        const i = this.#waiting.indexOf(grant);
        if (i >= 0) this.#waiting.splice(i, 1);
        reject(signal!.reason ?? new Error('aborted'));
      };
      this.#waiting.push(grant);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}

export interface RangedDownloadOptions {
  permits: Permits;
  /** Bytes per GET (default 8 MiB, within the 8-16 MB AWS suggests for ranged GETs). */
  rangeSize?: number;
  /** Ranges of this object requested ahead of the consumer (default: as many as permits allow, 4). */
  window?: number;
  signal?: AbortSignal;
}

/**
 * The object's bytes, `size` long (from a listing or head()), as one stream.
 * Objects up to one range are streamed by a single GET.
 */
export function rangedDownload(store: ObjectStore, key: string, size: number, opts: RangedDownloadOptions): Readable {
  const rangeSize = opts.rangeSize ?? DEFAULT_RANGE_SIZE;
  const window = Math.max(1, opts.window ?? 4);
  const { permits } = opts;
  const abort = new AbortController();
  const onOuterAbort = () => abort.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onOuterAbort, { once: true });

  if (size <= rangeSize) {
    return Readable.from(
      (async function* () {
        await permits.acquire(abort.signal);
        try {
          const body = await store.get(key, { signal: abort.signal });
          let got = 0;
          for await (const chunk of body) {
            got += (chunk as Buffer).length;
            yield chunk as Buffer;
          }
          if (got !== size) throw new Error(`${key}: expected ${size} bytes, got ${got}`);
        } finally {
          permits.release();
          opts.signal?.removeEventListener('abort', onOuterAbort);
        }
      })(),
      { objectMode: false },
    );
  }

  // Each range keeps the chunks received so far; the range at the head of the
  // queue is passed on as its chunks arrive (no wait for the whole range), the
  // ones behind it fill up meanwhile.
  interface Range {
    chunks: Buffer[];
    done: boolean;
    error: unknown;
    wake: (() => void) | null;
    holds: boolean;
    task: Promise<void>;
  }
  const fetchRange = (start: number, end: number): Range => {
    const range: Range = { chunks: [], done: false, error: null, wake: null, holds: false, task: Promise.resolve() };
    const notify = () => {
      const w = range.wake;
      range.wake = null;
      w?.();
    };
    range.task = (async () => {
      try {
        await permits.acquire(abort.signal);
        range.holds = true;
        const body = await store.get(key, { range: { start, end }, signal: abort.signal });
        let got = 0;
        for await (const chunk of body) {
          range.chunks.push(chunk as Buffer);
          got += (chunk as Buffer).length;
          notify();
        }
        if (got !== end - start + 1) throw new Error(`${key}: bytes ${start}-${end} came back ${got} bytes long instead of ${end - start + 1}`);
        range.done = true;
      } catch (err) {
        range.error = err;
      }
      notify();
    })();
    return range;
  };

  return Readable.from(
    (async function* () {
      const queue: Range[] = [];
      let next = 0;
      try {
        while (next < size || queue.length > 0) {
          while (queue.length < window && next < size) {
            const end = Math.min(next + rangeSize, size) - 1;
            queue.push(fetchRange(next, end));
            next = end + 1;
          }
          const head = queue[0]!;
          let complete = false;
          try {
            for (;;) {
              const chunk = head.chunks.shift();
              if (chunk) {
                yield chunk;
                continue;
              }
              if (head.error !== null) throw head.error;
              if (head.done) break;
              await new Promise<void>((resolve) => {
                head.wake = resolve;
              });
            }
            complete = true;
          } finally {
            // Leaving early (an error, or the consumer stopped): stop the transfers first.
            if (!complete) abort.abort(new Error('download cancelled'));
            queue.shift();
            if (head.holds) {
              head.holds = false;
              await head.task;
              permits.release();
            }
          }
        }
      } finally {
        // Stopped early (error, consumer gone): cancel what is in flight and give back its permits.
        abort.abort(new Error('download cancelled'));
        opts.signal?.removeEventListener('abort', onOuterAbort);
        for (const r of queue) {
          await r.task;
          if (r.holds) permits.release();
        }
      }
    })(),
    { objectMode: false },
  );
}
