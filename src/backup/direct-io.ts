import { closeSync, constants, ftruncateSync, futimesSync, openSync, statfsSync, write } from 'node:fs';
import { writeAllSync } from '../util/write-all-sync.ts';
import { EarlyWriteback } from './early-writeback.ts';

// A backup's large files are written with O_DIRECT: from a few reused,
// aligned buffers straight to the disk, on the thread pool, while the socket
// goes on being read. Written through the page cache instead, each 770 MiB
// backup first made the kernel find 770 MiB of fresh pages and copy into them,
// and then write them back. On this project's VMs that cost anything from 0.3
// to 2 s of system CPU from one run to the next, on the core that also reads
// the socket; with O_DIRECT it is 0.15-0.3 s every time. It also leaves the
// backup server's page cache to what is read, not to files written once.
//
// Durability is unchanged: a direct write is on the device (maybe in its
// volatile cache) when it completes; the backup's final syncfs commits the
// metadata and flushes that cache, as it does for buffered files.
//
// Small files (under DIRECT_MIN_SIZE) stay buffered, synced early on the
// thread pool (early-writeback.ts): a direct write waits for
// the device, and most of a data directory's files are a few kB. Direct I/O
// is used on local file systems known to do it well (DIRECT_IO_FS); on NFS,
// where each direct write is a round trip to the server, on FUSE, overlay,
// ZFS and the rest, and where O_DIRECT is refused, files are buffered.

/** One aligned buffer: a 1 MiB slot is filled, then written by one pwrite. */
const SLOT = 1 << 20;
const SLOTS = 8;
/** Direct I/O offsets and lengths: the largest logical block size in use. */
const ALIGN = 4096;
/** Files smaller than this are written through the page cache. */
export const DIRECT_MIN_SIZE = 1 << 20;

/** statfs f_type of the file systems written with O_DIRECT: ext2/3/4, XFS, Btrfs, F2FS, tmpfs. */
const DIRECT_IO_FS = new Set([0xef53, 0x58465342, 0x9123683e, 0xf2f52010, 0x01021994]);

/** Buffers aligned for direct I/O, shared by every writer of the process. */
class SlotPool {
  readonly #free: Buffer[];
  #waiters: (() => void)[] = [];
  #writing = 0;

  constructor(free: Buffer[]) {
    this.#free = free;
  }

  take(): Buffer | undefined {
    return this.#free.pop();
  }

  /** A slot handed to a write: it comes back with give(). */
  sent(): void {
    this.#writing++;
  }

  give(slot: Buffer, written = false): void {
    if (written) this.#writing--;
    this.#free.push(slot);
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /**
   * Resolves when a slot comes back: null while two or more are free (one to
   * fill, one to spare), or when none is being written (all are being filled
   * by other files: none would come back, and the writers go buffered).
   */
  whenFree(): Promise<void> | null {
    if (this.#free.length >= 2 || this.#writing === 0) return null;
    return new Promise((r) => this.#waiters.push(r));
  }
}

let shared: SlotPool | null | undefined;

// The DOM/WebAssembly type libraries are not in this project's tsconfig.
const wasm = (globalThis as { WebAssembly?: { Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer } } }).WebAssembly;

function slotPool(): SlotPool | null {
  if (shared !== undefined) return shared;
  shared = null;
  try {
    // Node gives no way to ask for aligned memory, but a WebAssembly memory
    // is mapped on its own pages (64 KiB aligned): slices of it at multiples
    // of SLOT are aligned for any device. Without WebAssembly (--jitless),
    // everything is buffered.
    const memory = new wasm!.Memory({ initial: (SLOT * SLOTS) / 65536, maximum: (SLOT * SLOTS) / 65536 });
    shared = new SlotPool(Array.from({ length: SLOTS }, (_, i) => Buffer.from(memory.buffer, i * SLOT, SLOT)));
  } catch {
    // buffered writes only
  }
  return shared;
}

/** One file of a backup being written, direct or buffered. */
export interface FileWriter {
  /** Written with O_DIRECT (else through the page cache). */
  readonly direct: boolean;
  write(data: Uint8Array): void;
  /** All the file's bytes were written: set its mtime and close it (a direct one once its writes complete). */
  end(mtime?: number): void;
  /** The backup failed: close the file (a direct one once its writes complete). */
  abort(): void;
}

/**
 * Writes the files of one archive: large ones with O_DIRECT, completing in
 * the background (whenReady() is the back-pressure, drain() waits for them
 * all and throws the first failure, which also fails every later write or
 * open), the others with synchronous writes through the page cache.
 */
export class DirectWriter {
  readonly #pool = slotPool();
  readonly #writeback = new EarlyWriteback();
  #error: Error | null = null;
  /** O_DIRECT was refused here: later files are buffered. */
  #unsupported = false;
  #fsChecked = false;
  #busy = 0;
  #idle: (() => void)[] = [];
  readonly #dir: string;

  /** `dir`: where the files go (one file system: asked once). */
  constructor(dir: string) {
    this.#dir = dir;
  }

  /** A file of `size` bytes (Infinity: not known yet), written direct when it can be. */
  open(path: string | Buffer, flags: number, mode: number, size: number): FileWriter {
    return this.#openDirect(path, flags, mode, size) ?? new BufferedFileWriter(openSync(path, flags, mode), this.#writeback);
  }

  #openDirect(path: string | Buffer, flags: number, mode: number, size: number): DirectFileWriter | null {
    this.check();
    if (size < DIRECT_MIN_SIZE || this.#unsupported || !this.#pool) return null;
    if (!this.#fsChecked) {
      this.#fsChecked = true;
      this.#unsupported = !onDirectIoFs(this.#dir);
      if (this.#unsupported) return null;
    }
    try {
      return new DirectFileWriter(this, this.#pool, path, openSync(path, flags | constants.O_DIRECT, mode));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
      this.#unsupported = true;
      return null;
    }
  }

  /** A promise while the aligned buffers run short: the reader should wait. */
  whenReady(): Promise<void> | null {
    return this.#pool?.whenFree() ?? null;
  }

  /** Waits for every write and file close started; throws the first failure. */
  async drain(): Promise<void> {
    while (this.#busy > 0) await new Promise<void>((r) => this.#idle.push(r));
    this.check();
  }

  /** @internal */
  fail(e: Error): void {
    this.#error ??= e;
  }

  /** @internal Throws the first failure of a background write. */
  check(): void {
    if (this.#error) throw this.#error;
  }

  /** @internal O_DIRECT writes were refused (EINVAL): files opened later are buffered. */
  refused(): void {
    this.#unsupported = true;
  }

  /** @internal */
  started(): void {
    this.#busy++;
  }

  /** @internal */
  finished(): void {
    if (--this.#busy > 0) return;
    const idle = this.#idle;
    this.#idle = [];
    for (const w of idle) w();
  }
}

/** One file being written with O_DIRECT; see DirectWriter. */
class DirectFileWriter implements FileWriter {
  readonly direct = true;
  readonly #w: DirectWriter;
  readonly #pool: SlotPool;
  readonly #path: string | Buffer;
  readonly #fd: number;
  /** Bytes accepted so far. */
  #size = 0;
  /** The slot being filled, and the file offset of its first byte. */
  #slot: Buffer | null = null;
  #slotAt = 0;
  #fill = 0;
  /** A buffered descriptor for the rest of the file once no slot was free. */
  #buffered = -1;
  /** A buffered descriptor for the bytes of a slot whose direct write was refused or cut short. */
  #rescue = -1;
  #pending = 0;
  #ended = false;
  #closed = false;
  #mtime: number | null = null;
  #aborted = false;

  constructor(w: DirectWriter, pool: SlotPool, path: string | Buffer, fd: number) {
    this.#w = w;
    this.#pool = pool;
    this.#path = path;
    this.#fd = fd;
    w.started();
  }

  write(data: Uint8Array): void {
    this.#w.check();
    let at = 0;
    while (at < data.length) {
      if (this.#buffered >= 0) {
        // Once a file has gone buffered it stays so: its offsets are no longer aligned.
        writeAllSync(this.#buffered, data.subarray(at), data.length - at, this.#size);
        this.#size += data.length - at;
        return;
      }
      if (!this.#slot) {
        const slot = this.#pool.take();
        if (!slot) {
          // Every slot is on its way to the disk and the reader did not wait (whenReady): write the rest through the page cache.
          this.#buffered = openSync(this.#path, constants.O_WRONLY);
          continue;
        }
        this.#slot = slot;
        this.#slotAt = this.#size;
        this.#fill = 0;
      }
      const n = Math.min(data.length - at, SLOT - this.#fill);
      this.#slot.set(n === data.length && at === 0 ? data : data.subarray(at, at + n), this.#fill);
      this.#fill += n;
      this.#size += n;
      at += n;
      if (this.#fill === SLOT) this.#submit();
    }
  }

  /** All the file's bytes were written: finish it (truncate the padding, mtime, close) once its writes complete. */
  end(mtime?: number): void {
    if (this.#ended) return;
    this.#ended = true;
    if (mtime !== undefined) this.#mtime = mtime;
    if (this.#slot && this.#fill > 0) this.#submit();
    else if (this.#slot) {
      this.#pool.give(this.#slot);
      this.#slot = null;
    }
    this.#maybeFinish();
  }

  /** The backup failed: close the file as soon as its writes are done. */
  abort(): void {
    this.#aborted = true;
    if (this.#slot) {
      this.#pool.give(this.#slot);
      this.#slot = null;
    }
    this.end();
  }

  #submit(): void {
    const slot = this.#slot!;
    const at = this.#slotAt;
    const length = this.#fill;
    // The tail of a file is padded to the alignment and truncated off when the file is finished.
    const padded = Math.ceil(length / ALIGN) * ALIGN;
    if (padded > length) slot.fill(0, length, padded);
    this.#slot = null;
    this.#pending++;
    this.#pool.sent();
    write(this.#fd, slot, 0, padded, at, (err, written) => {
      try {
        if (err && err.code !== 'EINVAL') throw err;
        if (err || written < padded) {
          // A refused direct write (EINVAL: an alignment this device does not take) or a short one: the rest goes through the page cache.
          if (err) this.#w.refused();
          const from = err ? 0 : written;
          if (this.#rescue < 0) this.#rescue = openSync(this.#path, constants.O_WRONLY);
          if (from < length) writeAllSync(this.#rescue, slot.subarray(from, length), length - from, at + from);
        }
      } catch (e) {
        this.#w.fail(withPath(e as Error, this.#path));
      }
      this.#pool.give(slot, true);
      this.#pending--;
      this.#maybeFinish();
    });
  }

  #maybeFinish(): void {
    if (!this.#ended || this.#pending > 0 || this.#closed) return;
    this.#closed = true;
    try {
      if (!this.#aborted) {
        if (this.#size % ALIGN !== 0) ftruncateSync(this.#fd, this.#size);
        if (this.#mtime !== null) futimesSync(this.#fd, this.#mtime, this.#mtime);
      }
    } catch (e) {
      this.#w.fail(withPath(e as Error, this.#path));
    } finally {
      closeSync(this.#fd);
      if (this.#buffered >= 0) closeSync(this.#buffered);
      if (this.#rescue >= 0) closeSync(this.#rescue);
      this.#w.finished();
    }
  }
}

/** A file written through the page cache, synced early on the thread pool. */
class BufferedFileWriter implements FileWriter {
  readonly direct = false;
  #fd: number;
  readonly #writeback: EarlyWriteback;

  constructor(fd: number, writeback: EarlyWriteback) {
    this.#fd = fd;
    this.#writeback = writeback;
  }

  write(data: Uint8Array): void {
    writeAllSync(this.#fd, data);
    this.#writeback.wrote(this.#fd, data.length);
  }

  end(mtime?: number): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    try {
      if (mtime !== undefined) futimesSync(fd, mtime, mtime);
    } finally {
      this.#writeback.close(fd);
    }
  }

  abort(): void {
    this.end();
  }
}

function onDirectIoFs(dir: string): boolean {
  try {
    return DIRECT_IO_FS.has(statfsSync(dir).type);
  } catch {
    return false;
  }
}

function withPath(e: Error, path: string | Buffer): Error {
  const where = typeof path === 'string' ? path : path.toString('utf8');
  if (!e.message.includes(where)) e.message = `${e.message} (writing ${where})`;
  return e;
}
