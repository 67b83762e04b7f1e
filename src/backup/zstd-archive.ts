import { constants as zlibConstants, createZstdCompress, type ZstdCompress } from 'node:zlib';
import type { DirectArchive } from '../postgres/base-backup.ts';

// Client-side zstd for a tar backup, fed straight from the replication socket:
// each piece is copied once, into a 4 MiB input buffer; a full buffer is
// compressed as an independent zstd frame on libuv's thread pool, and the
// frames are written in input order. Concatenated frames are one valid zstd
// stream for every decoder. The input buffers are reused once compressed: the
// stream version this replaced copied every byte three times into fresh
// buffers, and the garbage collector then cost as much CPU as zstd itself.
// (Node 22's own multi-threaded zstd, ZSTD_c_nbWorkers, fails as a stream:
// "push() after EOF".)
// Each lane keeps one zstd context for all its frames (a frame ends with
// ZSTD_e_end): zstdCompress() makes a context per call, ~3 MB of native memory
// that stays until a garbage collection, which pushed the backup past 250 MB.
// When `parallel` frames are being compressed, whenReady() asks the caller
// to stop reading the socket until one is written: memory stays bounded.

const CHUNK = 4 * 1024 * 1024;

export class ZstdArchive implements DirectArchive {
  readonly #out: DirectArchive;
  readonly #lanes: Lane[];
  readonly #idle: Lane[];
  readonly #free: Buffer[] = [];
  #current: Buffer | null = null;
  #fill = 0;
  #inFlight = 0;
  /** The frames, written in order: each link waits for its own compression. */
  #written: Promise<void> = Promise.resolve();
  #error: Error | null = null;
  #waiters: (() => void)[] = [];
  /** Frames waiting for a lane, in dispatch order. */
  readonly #laneWaiters: (() => void)[] = [];

  constructor(out: DirectArchive, level: number, parallel: number) {
    this.#out = out;
    this.#lanes = Array.from({ length: Math.max(1, parallel) }, () => new Lane(level));
    this.#idle = [...this.#lanes];
  }

  writeNow(piece: Buffer): void {
    if (this.#error) throw this.#error;
    for (let pos = 0; pos < piece.length; ) {
      if (!this.#current) {
        this.#current = this.#free.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
        this.#fill = 0;
      }
      const n = piece.copy(this.#current, this.#fill, pos);
      this.#fill += n;
      pos += n;
      if (this.#fill === CHUNK) this.#dispatch();
    }
  }

  whenReady(): Promise<void> | null {
    if (this.#inFlight < this.#lanes.length) return null;
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  async close(): Promise<void> {
    if (this.#fill > 0) this.#dispatch();
    await this.#written;
    for (const lane of this.#lanes) lane.close();
    if (this.#error) {
      this.#out.abort();
      throw this.#error;
    }
    await this.#out.close();
  }

  abort(): void {
    this.#error ??= new Error('aborted');
    for (const lane of this.#lanes) lane.close();
    this.#out.abort();
  }

  async #lane(): Promise<Lane> {
    for (;;) {
      const lane = this.#idle.shift();
      if (lane) return lane;
      await new Promise<void>((resolve) => this.#laneWaiters.push(resolve));
    }
  }

  #dispatch(): void {
    const input = this.#current!;
    const length = this.#fill;
    this.#current = null;
    this.#fill = 0;
    this.#inFlight++;
    // A lane is free whenever fewer than lanes.length frames are in flight; past
    // that (the socket is being paused) a frame waits for the lane of an earlier one.
    const frame = this.#lane().then(async (lane) => {
      try {
        return await lane.frame(input.subarray(0, length));
      } finally {
        this.#idle.push(lane);
        this.#laneWaiters.shift()?.();
      }
    });
    frame.catch(() => undefined);
    this.#written = this.#written.then(async () => {
      try {
        const out = await frame;
        if (!this.#error) {
          this.#out.writeNow(out);
          // The output's own back-pressure (direct writes in flight) holds this frame's buffer, and so the socket.
          await this.#out.whenReady?.();
        }
      } catch (e) {
        this.#error ??= e as Error;
      } finally {
        this.#inFlight--;
        this.#free.push(input);
        const waiters = this.#waiters;
        this.#waiters = [];
        for (const w of waiters) w();
      }
    });
  }
}

/** One zstd context, compressing one frame at a time. */
class Lane {
  readonly #stream: ZstdCompress;
  #parts: Buffer[] = [];
  #failed: ((e: Error) => void) | null = null;

  constructor(level: number) {
    this.#stream = createZstdCompress({ chunkSize: 256 * 1024, params: { [zlibConstants.ZSTD_c_compressionLevel]: level } });
    this.#stream.on('data', (d: Buffer) => this.#parts.push(d));
    this.#stream.on('error', (e: Error) => this.#failed?.(e));
  }

  frame(input: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.#parts = [];
      this.#failed = reject;
      this.#stream.write(input);
      this.#stream.flush(zlibConstants.ZSTD_e_end, () => {
        this.#failed = null;
        resolve(this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts));
      });
    });
  }

  close(): void {
    this.#stream.close();
  }
}
