// Restores onto this host. Plain backups are copied by worker threads that
// read, hash and write each file in one pass (HashPool.copyFile); tar members
// and generated files are written from this thread with synchronous writes.
// Every file is fsynced before it counts as written; the directories are
// fsynced in finish(), so a crash after recover reports success loses nothing.
import { chmodSync, closeSync, createReadStream, fsyncSync, mkdirSync, openSync, symlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { createChecksum } from '../../backup/verify/checksum.ts';
import { HashPool } from '../../backup/verify/hash-pool.ts';
import type { Throttle } from './throttle.ts';
import { bodyChunks, type RestoreEntry, type RestoreWriter, type WriteResult } from './restore-writer.ts';

export class LocalWriter implements RestoreWriter {
  readonly lanes: number;
  readonly #throttle: Throttle | null;
  #pool: HashPool | null = null;
  /** Directories whose entries changed: fsynced at the end. */
  readonly #dirty = new Set<string>();
  readonly #made = new Set<string>();

  constructor(opts: { jobs: number; throttle: Throttle | null }) {
    this.lanes = Math.max(1, opts.jobs);
    this.#throttle = opts.throttle;
  }

  async createDirectories(entries: readonly RestoreEntry[]): Promise<void> {
    for (const e of entries) await this.write(0, e);
  }

  async write(_lane: number, entry: RestoreEntry): Promise<WriteResult> {
    const path = fsPath(entry.dest);
    const parent = dirname(entry.dest);
    if (entry.type === 'directory') {
      mkdirSync(path, { recursive: true, mode: entry.mode });
      chmodSync(path, entry.mode);
      this.#made.add(entry.dest);
      this.#dirty.add(entry.dest);
      this.#dirty.add(parent);
      return { bytes: 0, digest: Buffer.alloc(0) };
    }
    this.#ensureDir(parent);
    this.#dirty.add(parent);
    if (entry.type === 'symlink') {
      symlinkSync(fsPath(entry.linkTarget ?? ''), path);
      return { bytes: 0, digest: Buffer.alloc(0) };
    }
    const body = entry.body ?? { kind: 'buffer' as const, data: Buffer.alloc(0) };
    if (body.kind === 'path' && this.#throttle === null) {
      this.#pool ??= new HashPool(this.lanes);
      const r = await this.#pool.copyFile(body.path, path, entry.mode, entry.algorithm);
      return { bytes: r.bytes, digest: r.digest };
    }
    const checksum = createChecksum(entry.algorithm);
    const fd = openSync(path, 'w', entry.mode);
    let bytes = 0;
    try {
      for await (const chunk of bodyChunks(body, (p) => createReadStream(p, { highWaterMark: 1 << 20 }))) {
        if (this.#throttle) await this.#throttle.take(chunk.length);
        checksum.update(chunk);
        for (let done = 0; done < chunk.length; ) done += writeSync(fd, chunk, done, chunk.length - done);
        bytes += chunk.length;
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return { bytes, digest: checksum.digest() };
  }

  async finish(): Promise<void> {
    await this.#pool?.close();
    this.#pool = null;
    for (const dir of this.#dirty) {
      const fd = openSync(fsPath(dir), 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }

  async abort(): Promise<void> {
    await this.#pool?.close();
    this.#pool = null;
  }

  #ensureDir(dir: string): void {
    if (this.#made.has(dir)) return;
    mkdirSync(fsPath(dir), { recursive: true, mode: 0o700 });
    this.#made.add(dir);
  }
}

/** Paths are latin1 strings of their bytes (names need not be UTF-8). */
export function fsPath(latin1: string): Buffer {
  return Buffer.from(latin1, 'latin1');
}
