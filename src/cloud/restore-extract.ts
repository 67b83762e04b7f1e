// Extraction of one backup archive (already decrypted and decompressed) into
// its directory, checking every regular file against the backup_manifest:
// sizes as the bytes are written, checksums on worker threads that read each
// file back once written (ManifestVerifier), so a file that does not match is
// named before the restore reports success.
//
// File writes go to the thread pool (PooledWrites): the thread that parses the
// tar and feeds the decompressor never waits for the disk; profiled on a gzip
// restore, the main thread went from busy to mostly idle. Durability comes at
// the end from one syncfs per file system (restore.ts).
import { chmodSync, close as closeCb, closeSync, constants, futimes as futimesCb, linkSync, mkdirSync, open as openCb, symlinkSync, write as writeCb, writev as writevCb } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { BackupManifest, ManifestFile } from '../backup/manifest.ts';
import type { HashPool } from '../backup/verify/hash-pool.ts';
import { createChecksum, type Checksum } from '../backup/verify/checksum.ts';
import { displayName, memberPath, TarFormatError, TarParser, type TarMember } from './backup-tar.ts';

export class RestoreVerificationError extends Error {}

/**
 * Tracks which manifest files were restored, over all the archives of a backup.
 * With a hash pool, checksums are computed by worker threads that read each file
 * back once it is written (from the page cache), so hashing runs beside the
 * download and decompression instead of on the thread that writes; settle()
 * waits for them. Without one, files are hashed as they are written.
 */
export class ManifestVerifier {
  readonly manifest: BackupManifest;
  readonly pool: HashPool | null;
  readonly #seen = new Set<string>();
  readonly #pending: Promise<void>[] = [];
  /** Files restored that the manifest does not list. */
  readonly unexpected: string[] = [];
  verified = 0;

  constructor(manifest: BackupManifest, pool: HashPool | null = null) {
    this.manifest = manifest;
    this.pool = pool;
  }

  /** Checks a written file's checksum on the pool; the outcome comes with settle(). */
  hashLater(path: string | Buffer, entry: ManifestFile, objectName: string): void {
    const p = this.pool!.hashFile(typeof path === 'string' ? Buffer.from(path) : path, entry.algorithm).then((r) => {
      if (r.bytes !== entry.size) throw new RestoreVerificationError(`${objectName}: ${displayName(entry.key)} is ${r.bytes} bytes on disk, the backup manifest says ${entry.size}`);
      if (entry.checksum && !r.digest.equals(entry.checksum)) {
        throw new RestoreVerificationError(`${objectName}: ${displayName(entry.key)} does not match its ${entry.algorithm} checksum in the backup manifest: the backup is damaged`);
      }
    });
    p.catch(() => undefined);
    this.#pending.push(p);
  }

  /** Waits for the checksums computed on the pool; throws the first mismatch. */
  async settle(): Promise<void> {
    const results = await Promise.allSettled(this.#pending);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  entry(key: string): ManifestFile | undefined {
    return this.manifest.files.get(key);
  }

  seen(key: string): void {
    this.#seen.add(key);
  }

  /** Manifest files that no archive held. */
  missing(): string[] {
    return [...this.manifest.files.keys()].filter((k) => !this.#seen.has(k));
  }
}

/** State shared by every archive extracted into the same directory tree. */
export class ExtractionRoot {
  readonly root: string;
  /** Directories made so far (relative): mkdir is not repeated for every file. */
  readonly #dirs = new Set<string>(['']);
  /** Symbolic links made from archive members: nothing may be written through them. */
  readonly #links = new Set<string>();
  /** Directory modes, applied at the end (a read-only directory would stop its own extraction). */
  readonly #modes = new Map<string, number>();
  files = 0;
  bytes = 0;

  constructor(root: string) {
    this.root = root;
  }

  /** The file system path of a member path. Member names are bytes (latin1 strings here): non-ASCII ones stay bytes. */
  path(rel: string): string | Buffer {
    if (rel === '') return this.root;
    return isAscii(rel) ? join(this.root, rel) : Buffer.concat([Buffer.from(`${this.root}/`), Buffer.from(rel, 'latin1')]);
  }

  ensureDir(rel: string): void {
    if (this.#dirs.has(rel)) return;
    const slash = rel.lastIndexOf('/');
    this.ensureDir(slash < 0 ? '' : rel.slice(0, slash));
    this.#checkNotLink(rel);
    try {
      mkdirSync(this.path(rel), { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    this.#dirs.add(rel);
  }

  directoryMode(rel: string, mode: number): void {
    this.#modes.set(rel, mode & 0o7777);
  }

  link(rel: string): void {
    this.#links.add(rel);
  }

  /** Refuses a path that goes through a symbolic link an archive created. */
  checkPath(rel: string): void {
    let i = rel.indexOf('/');
    while (i >= 0) {
      this.#checkNotLink(rel.slice(0, i));
      i = rel.indexOf('/', i + 1);
    }
  }

  #checkNotLink(rel: string): void {
    if (this.#links.has(rel)) throw new TarFormatError(`refusing to write through the symbolic link '${displayName(rel)}' an archive member created`);
  }

  /** Applies the directory modes the archives asked for. */
  finish(): void {
    for (const [rel, mode] of this.#modes) {
      // PostgreSQL refuses to start unless PGDATA is 0700 or 0750.
      chmodSync(this.path(rel), rel === '' ? mode & 0o750 : mode);
    }
  }
}

export interface ExtractOptions {
  root: ExtractionRoot;
  /** Prefix of this archive's members in the manifest: '' or 'pg_tblspc/<oid>/'. */
  manifestPrefix: string;
  verifier: ManifestVerifier | null;
  /** The object, for messages. */
  objectName: string;
  warn: (line: string) => void;
}

const OPEN_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
const fsOpen = promisify(openCb);
const WRITE_BATCH = 512 * 1024;
const fsWrite = promisify(writeCb);
const fsWritev = promisify(writevCb);
const fsFutimes = promisify(futimesCb);
const fsClose = promisify(closeCb);

/**
 * The extraction's file writes, on the thread pool: the thread that parses the
 * tar (and feeds the decompressor) does not wait for the disk, so decompressing
 * and writing overlap. Writes to one file stay in order; memory is bounded by
 * the bytes queued (and the files open) at once.
 */
class PooledWrites {
  readonly #maxBytes: number;
  readonly #maxFiles: number;
  #bytes = 0;
  #files = 0;
  #pending = 0;
  #error: Error | null = null;
  #waiters: (() => void)[] = [];
  readonly #open = new Set<number>();

  constructor(maxBytes = 32 * 1024 * 1024, maxFiles = 64) {
    this.#maxBytes = maxBytes;
    this.#maxFiles = maxFiles;
  }

  get error(): Error | null {
    return this.#error;
  }

  open(path: string | Buffer, mode: number): PooledFile {
    this.#files++;
    const file: PooledFile = { fd: this.#track(fsOpen(path, OPEN_FLAGS, mode).then((fd) => this.#opened(fd))), position: 0, batch: [], batchLength: 0 };
    return file;
  }

  /**
   * Queues `data` for the file. Small pieces (an uncompressed archive arrives in
   * the network's 16-64 KiB chunks) are gathered into one writev of WRITE_BATCH
   * bytes: a thread-pool round trip per piece cost more than the writing.
   */
  write(file: PooledFile, data: Buffer): void {
    this.#bytes += data.length;
    file.batch.push(data);
    file.batchLength += data.length;
    if (file.batchLength >= WRITE_BATCH) this.#flush(file);
  }

  #flush(file: PooledFile): void {
    if (file.batchLength === 0) return;
    // writev: the pieces go to the kernel as they are, with no copy into one buffer
    // (copies of everything restored kept the garbage collector busy).
    const pieces = file.batch;
    const length = file.batchLength;
    file.batch = [];
    file.batchLength = 0;
    const position = file.position;
    file.position += length;
    file.fd = this.#track(
      file.fd.then(async (fd) => {
        try {
          let done = (await fsWritev(fd, pieces, position)).bytesWritten;
          // A short write (rare: signals, quotas) is finished piece by piece.
          for (let i = 0, skip = done; done < length; i++) {
            const piece = pieces[i]!;
            if (skip >= piece.length) {
              skip -= piece.length;
              continue;
            }
            for (let off = skip; off < piece.length; ) {
              const n = (await fsWrite(fd, piece, off, piece.length - off, position + done)).bytesWritten;
              off += n;
              done += n;
            }
            skip = 0;
          }
        } finally {
          this.#bytes -= length;
          this.#wake();
        }
        return fd;
      }),
    );
  }

  /** Sets the mtime and closes; `then` runs once the file is complete on disk (in the page cache). */
  close(file: PooledFile, mtime: number, then: () => void): void {
    this.#flush(file);
    void this.#track(
      file.fd
        .then(async (fd) => {
          await fsFutimes(fd, mtime, mtime);
          this.#open.delete(fd);
          await fsClose(fd);
          then();
        })
        .finally(() => {
          this.#files--;
          this.#wake();
        }),
    );
  }

  /** Resolves when there is room for more (or an error to report). */
  async room(): Promise<void> {
    while (!this.#error && (this.#bytes > this.#maxBytes || this.#files > this.#maxFiles)) await this.#next();
  }

  /** Resolves when every queued operation has ended; throws the first error. */
  async drain(): Promise<void> {
    while (this.#pending > 0) await this.#next();
    if (this.#error) throw this.#error;
  }

  /** After a failure: closes what is still open. */
  abandon(): void {
    for (const fd of this.#open) closeSync(fd);
    this.#open.clear();
  }

  #opened(fd: number): number {
    this.#open.add(fd);
    return fd;
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#pending++;
    p.then(
      () => undefined,
      (err: Error) => {
        this.#error ??= err;
      },
    ).finally(() => {
      this.#pending--;
      this.#wake();
    });
    return p;
  }

  #next(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

interface PooledFile {
  /** The descriptor, once every write queued so far has completed. */
  fd: Promise<number>;
  position: number;
  /** Data not handed to the thread pool yet. */
  batch: Buffer[];
  batchLength: number;
}

/** A Writable taking a plain tar stream and extracting it. */
export function extractArchive(o: ExtractOptions): Writable {
  const parser = new TarParser();
  const { root } = o;
  const io = new PooledWrites();
  const hardlinks: { rel: string; target: string }[] = [];
  let current: { file: PooledFile; rel: string; member: TarMember; checksum: Checksum | null; expected: ManifestFile | undefined; written: number } | null = null;

  const fail = (message: string): never => {
    throw new RestoreVerificationError(`${o.objectName}: ${message}`);
  };

  const finishFile = (): void => {
    const f = current!;
    current = null;
    root.files++;
    root.bytes += f.written;
    verify(f.rel, f.written, f.checksum);
    const later = f.expected?.checksum && !f.checksum ? f.expected : null;
    io.close(f.file, f.member.mtime, () => {
      if (later) o.verifier!.hashLater(root.path(f.rel), later, o.objectName);
    });
  };

  const verify = (rel: string, size: number, checksum: Checksum | null): void => {
    const v = o.verifier;
    if (!v) return;
    const key = o.manifestPrefix + rel;
    const entry = v.entry(key);
    if (!entry) {
      v.unexpected.push(key);
      return;
    }
    v.seen(key);
    if (entry.size !== size) fail(`${displayName(key)} is ${size} bytes, the backup manifest says ${entry.size}: the backup is damaged`);
    if (entry.checksum && checksum) {
      const digest = checksum.digest();
      if (!digest.equals(entry.checksum)) {
        fail(`${displayName(key)} does not match its ${entry.algorithm} checksum in the backup manifest: the backup is damaged`);
      }
    }
    v.verified++;
  };

  const onMember = (m: TarMember): void => {
    const rel = memberPath(m.name);
    if (rel === null) {
      if (m.type === 'directory') root.directoryMode('', m.mode);
      return;
    }
    root.checkPath(rel);
    const slash = rel.lastIndexOf('/');
    const parent = slash < 0 ? '' : rel.slice(0, slash);
    switch (m.type) {
      case 'directory':
        root.ensureDir(rel);
        root.directoryMode(rel, m.mode);
        return;
      case 'file': {
        root.ensureDir(parent);
        const file = io.open(root.path(rel), m.mode & 0o7777 || 0o600);
        const expected = o.verifier?.entry(o.manifestPrefix + rel);
        const inline = expected?.checksum && !o.verifier?.pool;
        current = { file, rel, member: m, checksum: inline ? createChecksum(expected!.algorithm) : null, expected, written: 0 };
        if (m.size === 0) finishFile();
        return;
      }
      case 'symlink':
        root.ensureDir(parent);
        symlinkSync(isAscii(m.linkname) ? m.linkname : Buffer.from(m.linkname, 'latin1'), root.path(rel));
        root.link(rel);
        return;
      case 'hardlink': {
        const target = memberPath(m.linkname);
        if (target === null) fail(`hard link '${displayName(m.name)}' to the archive root`);
        root.checkPath(target!);
        root.ensureDir(parent);
        // Made once the target's writes are done (at the end of the archive).
        hardlinks.push({ rel, target: target! });
        return;
      }
      default:
        o.warn(`${o.objectName}: skipped '${displayName(m.name)}' (unsupported tar member type '${m.typeflag}')`);
    }
  };

  const process = (chunk: Buffer): void => {
    for (const ev of parser.feed(chunk)) {
      if (ev.kind === 'member') {
        onMember(ev.member);
      } else if (ev.kind === 'data') {
        if (!current) continue;
        io.write(current.file, ev.data);
        current.checksum?.update(ev.data);
        current.written += ev.data.length;
      } else if (ev.kind === 'pad') {
        if (current) finishFile();
      }
    }
  };

  return new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _enc, cb) {
      try {
        if (io.error) throw io.error;
        process(chunk);
      } catch (err) {
        cb(describe(err, o.objectName));
        return;
      }
      io.room().then(
        () => cb(io.error ? describe(io.error, o.objectName) : null),
        (err: unknown) => cb(describe(err, o.objectName)),
      );
    },
    final(cb) {
      (async () => {
        parser.finish();
        await io.drain();
        for (const h of hardlinks) linkSync(root.path(h.target), root.path(h.rel));
      })().then(
        () => cb(),
        (err: unknown) => cb(describe(err, o.objectName)),
      );
    },
    destroy(err, cb) {
      current = null;
      // Whatever is still queued fails or completes on its own; descriptors are not left open.
      io.drain()
        .catch(() => undefined)
        .finally(() => {
          io.abandon();
          cb(err);
        });
    },
  });
}

function isAscii(s: string): boolean {
  return !/[^\x00-\x7f]/.test(s);
}

function describe(err: unknown, objectName: string): Error {
  if (err instanceof RestoreVerificationError) return err;
  if (err instanceof TarFormatError) return new RestoreVerificationError(`${objectName} is corrupt or truncated: ${err.message}`);
  const e = err as NodeJS.ErrnoException;
  if (e?.code && e.path) return new Error(`cannot restore ${objectName}: ${e.code} on ${e.path}`);
  return err as Error;
}
