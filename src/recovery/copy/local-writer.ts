// Restores onto this host. Plain backups are copied by worker threads that
// read, hash and write each file in one pass (HashPool.copyFile); tar members
// and generated files are written from this thread with synchronous writes.
// finish() makes everything durable with one syncfs per destination
// filesystem (`sync -f`), as the backup does: fsyncing file by file cost more,
// and a crash before recover reports success is a restore to run again.
import { execFile } from 'node:child_process';
import { chmodSync, closeSync, createReadStream, mkdirSync, openSync, symlinkSync } from 'node:fs';
import { writeAllSync } from '../../util/write-all-sync.ts';
import { dirname } from 'node:path';
import { createChecksum } from '../../backup/verify/checksum.ts';
import { HashPool } from '../../backup/verify/hash-pool.ts';
import type { Throttle } from './throttle.ts';
import { bodyChunks, type RestoreEntry, type RestoreWriter, type WriteResult } from './restore-writer.ts';

export class LocalWriter implements RestoreWriter {
  readonly lanes: number;
  readonly #throttle: Throttle | null;
  #pool: HashPool | null = null;
  readonly #made = new Set<string>();

  readonly #syncPaths: string[];

  constructor(opts: { jobs: number; throttle: Throttle | null; syncPaths: string[] }) {
    this.lanes = Math.max(1, opts.jobs);
    this.#throttle = opts.throttle;
    this.#syncPaths = opts.syncPaths;
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
      return { bytes: 0, digest: Buffer.alloc(0) };
    }
    this.#ensureDir(parent);
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
        writeAllSync(fd, chunk);
        bytes += chunk.length;
      }
    } finally {
      closeSync(fd);
    }
    return { bytes, digest: checksum.digest() };
  }

  async finish(): Promise<void> {
    await this.#pool?.close();
    this.#pool = null;
    for (const path of this.#syncPaths) {
      const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        execFile('sync', ['-f', path], (err, _out, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }));
      });
      if (r.code !== 0) throw new Error(`cannot make ${path} durable: sync -f failed: ${r.stderr.trim() || `exit status ${r.code}`}`);
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
