import { constants, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { PassThrough, Writable, pipeline } from 'node:stream';
import { TarParser } from '../cloud/backup-tar.ts';
import type { BaseBackupSink, DirectArchive } from '../postgres/base-backup.ts';
import { DirectWriter, type FileWriter } from './direct-io.ts';
import { PlainExtractor } from './plain-extract.ts';
import { createCompressor, createDecompressor, resolveCompressionLevel } from '../wal/compression.ts';
import { ZstdArchive } from './zstd-archive.ts';

// Where the archives of a BASE_BACKUP go. Plain: the tars are extracted while
// they stream in (base.tar into data/, <oid>.tar into <backup>/<oid>/, as
// Barman lays out a plain postgres backup). Tar: each archive is stored as a
// file in data/, compressed on the way if asked (client-side), or as the
// server compressed it. Both keep backup_label's text for backup.info.

export type ClientCompression = 'gzip' | 'lz4' | 'zstd' | null;

export interface SinkState {
  backupLabel: string | null;
  /** Archive and manifest files written (tar format), relative to the backup directory. */
  files: string[];
  /** Bytes of every regular file written: the backup's size, as Barman sums it. */
  bytes: number;
}

export function plainSink(backupDir: string, state: SinkState, endMarkerOptional = false): BaseBackupSink {
  return {
    openArchive(name) {
      // Server-side compression saves network: decompress, then extract.
      const m = /^(base|\d+)\.tar(?:\.(gz|lz4|zst))?$/.exec(name);
      if (!m) throw new Error(`unexpected archive '${name}' from the server`);
      const [, which, compressed] = m;
      const target = new PlainExtractor(which === 'base' ? join(backupDir, 'data') : join(backupDir, which!), {
        archive: name,
        endMarkerOptional,
        tally: state,
        ...(which === 'base' ? { onBackupLabel: (text: string) => void (state.backupLabel = text) } : {}),
      });
      if (!compressed) return target;
      return chain(createDecompressor(({ gz: 'gzip', lz4: 'lz4', zst: 'zstd' } as const)[compressed as 'gz']), asWritable(target));
    },
    openManifest() {
      return new DirectFile(join(backupDir, 'data', 'backup_manifest'), state, false);
    },
  };
}

export function tarSink(backupDir: string, state: SinkState, clientCompression: ClientCompression, level?: number, parallel?: number): BaseBackupSink {
  return {
    openArchive(name) {
      const serverCompressed = /\.tar\.(gz|lz4|zst)$/.exec(name)?.[1];
      const suffix = clientCompression === null ? '' : { gzip: '.gz', lz4: '.lz4', zstd: '.zst' }[clientCompression];
      const file = join('data', `${name}${serverCompressed ? '' : suffix}`);
      state.files.push(file);
      const out = new DirectFile(join(backupDir, file), state);
      const isBase = name.startsWith('base.tar');
      if (!serverCompressed && clientCompression === null) return isBase ? new LabelScan(out, state) : out;
      if (!serverCompressed && clientCompression === 'zstd') {
        const zstd = new ZstdArchive(out, resolveCompressionLevel('zstd', level), parallel ?? 1);
        return isBase ? new LabelScan(zstd, state) : zstd;
      }
      const stored = serverCompressed ? asWritable(out) : chain(createCompressor(clientCompression!, level === undefined ? {} : { level }), asWritable(out));
      if (!isBase) return stored;
      // Read backup_label out of the base archive on the way through.
      const label = asWritable(new LabelScan(null, state));
      const labelIn = serverCompressed ? chain(createDecompressor(({ gz: 'gzip', lz4: 'lz4', zst: 'zstd' } as const)[serverCompressed as 'gz']), label) : label;
      return tee(stored, labelIn);
    },
    openManifest() {
      state.files.push(join('data', 'backup_manifest'));
      return new DirectFile(join(backupDir, 'data', 'backup_manifest'), state, false);
    },
  };
}

// Chunks move through the sink chain in up to 1 MiB batches: Node's 16 KiB
// default paused the replication socket on almost every 32 KiB message.
const HWM = 1 << 20;

/**
 * A file written from the caller's turn: an archive goes direct (O_DIRECT from
 * the thread pool, see direct-io.ts), the manifest and anything where direct
 * I/O is not available with synchronous writes (no thread pool round trip per
 * chunk, which cost twice pg_basebackup's CPU; a slow disk blocks the event
 * loop, which is back-pressure on the socket).
 */
class DirectFile implements DirectArchive {
  readonly #file: FileWriter;
  readonly #tally: { bytes: number };
  readonly #direct: DirectWriter;

  constructor(path: string, tally: { bytes: number }, archive = true) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.#direct = new DirectWriter(dirname(path));
    // An archive's size is not known before it ends: any size goes direct.
    this.#file = this.#direct.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600, archive ? Infinity : 0);
    this.#tally = tally;
  }

  writeNow(chunk: Buffer): void {
    try {
      this.#file.write(chunk);
      this.#tally.bytes += chunk.length;
    } catch (e) {
      this.abort();
      throw e;
    }
  }

  whenReady(): Promise<void> | null {
    return this.#direct.whenReady();
  }

  async close(): Promise<void> {
    this.#file.end();
    await this.#direct.drain();
  }

  abort(): void {
    try {
      this.#file.abort();
    } catch {
      // already failing
    }
  }
}

/**
 * backup_label's text from a base archive on its way elsewhere (`out`, or
 * nowhere). PostgreSQL sends backup_label first, so the tar is parsed only
 * until then; the rest passes through untouched.
 */
class LabelScan implements DirectArchive {
  readonly #out: DirectArchive | null;
  readonly #state: SinkState;
  #parser: TarParser | null = new TarParser();
  #inLabel: Buffer[] | null = null;

  constructor(out: DirectArchive | null, state: SinkState) {
    this.#out = out;
    this.#state = state;
  }

  writeNow(chunk: Buffer): void {
    this.#out?.writeNow(chunk);
    if (this.#parser) this.#scan(chunk);
  }

  whenReady(): Promise<void> | null {
    return this.#out?.whenReady?.() ?? null;
  }

  #scan(chunk: Buffer): void {
    for (const ev of this.#parser!.feed(chunk)) {
      if (ev.kind === 'member') {
        if (ev.member.name.replace(/^\.\//, '') === 'backup_label') this.#inLabel = [];
        if (ev.member.size === 0 && this.#inLabel) this.#done();
      } else if (ev.kind === 'data') {
        this.#inLabel?.push(Buffer.from(ev.data));
      } else if (ev.kind === 'pad' && this.#inLabel) {
        this.#done();
      }
      if (!this.#parser) return;
    }
  }

  #done(): void {
    this.#state.backupLabel = Buffer.concat(this.#inLabel!).toString('utf8');
    this.#inLabel = null;
    this.#parser = null;
  }

  close(): void | Promise<void> {
    return this.#out?.close();
  }

  abort(): void {
    this.#out?.abort();
  }
}

/** A DirectArchive behind a Writable, for data that comes out of a (de)compressor. */
function asWritable(d: DirectArchive): Writable {
  return new Writable({
    highWaterMark: HWM,
    write(chunk: Buffer, _enc, cb) {
      try {
        d.writeNow(chunk);
      } catch (e) {
        cb(e as Error);
        return;
      }
      const ready = d.whenReady?.();
      if (ready) ready.then(() => cb(), cb);
      else cb();
    },
    final(cb) {
      Promise.resolve()
        .then(() => d.close())
        .then(() => cb(), cb);
    },
    destroy(err, cb) {
      d.abort();
      cb(err);
    },
  });
}


/** A Writable feeding `head`, whose output flows into `tail`; finishes when `tail` has. */
function chain(head: NodeJS.ReadWriteStream & Writable, tail: Writable): Writable {
  const entry = new PassThrough({ highWaterMark: HWM });
  let wrapper: Writable;
  // A failure anywhere in the chain (ENOSPC in the file, bad input to a
  // decompressor) must reach the writer at once, not leave it waiting for a
  // drain that will never come.
  const done = new Promise<void>((resolve, reject) =>
    pipeline(entry, head, tail, (err) => {
      if (err) {
        wrapper.destroy(err);
        reject(err);
      } else resolve();
    }),
  );
  done.catch(() => undefined);
  wrapper = new Writable({
    highWaterMark: HWM,
    write(chunk, _enc, cb) {
      if (entry.write(chunk)) cb();
      else entry.once('drain', () => cb());
    },
    final(cb) {
      entry.end();
      done.then(() => cb(), cb);
    },
    destroy(err, cb) {
      entry.destroy(err ?? undefined);
      cb(err);
    },
  });
  return wrapper;
}

/** Writes every chunk to both; back-pressure from either slows the source, and an error in either fails it. */
function tee(a: Writable, b: Writable): Writable {
  const ended = (w: Writable) => new Promise<void>((resolve, reject) => {
    w.once('error', reject);
    w.once('finish', resolve);
    w.once('close', resolve);
  });
  const wait = (w: Writable, ok: boolean) => (ok ? Promise.resolve() : new Promise<void>((r) => w.once('drain', () => r())));
  const wrapper = new Writable({
    highWaterMark: HWM,
    write(chunk, _enc, cb) {
      Promise.all([wait(a, a.write(chunk)), wait(b, b.write(chunk))]).then(() => cb(), cb);
    },
    final(cb) {
      const done = Promise.all([ended(a), ended(b)]);
      a.end();
      b.end();
      done.then(() => cb(), cb);
    },
    destroy(err, cb) {
      a.destroy(err ?? undefined);
      b.destroy(err ?? undefined);
      cb(err);
    },
  });
  for (const w of [a, b]) w.on('error', (e) => wrapper.destroy(e));
  return wrapper;
}
