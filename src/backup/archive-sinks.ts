import { closeSync, mkdirSync, openSync, symlinkSync, utimesSync, writeSync } from 'node:fs';
import { dirname, join, normalize, sep } from 'node:path';
import { PassThrough, Writable, pipeline } from 'node:stream';
import tarStream from 'tar-stream';
import type { BaseBackupSink } from '../postgres/base-backup.ts';
import { createCompressor, createDecompressor } from '../wal/compression.ts';

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
}

export function plainSink(backupDir: string, state: SinkState): BaseBackupSink {
  return {
    openArchive(name) {
      // Server-side compression saves network: decompress, then extract.
      const m = /^(base|\d+)\.tar(?:\.(gz|lz4|zst))?$/.exec(name);
      if (!m) throw new Error(`unexpected archive '${name}' from the server`);
      const [, which, compressed] = m;
      const target = extractTo(which === 'base' ? join(backupDir, 'data') : join(backupDir, which!), which === 'base' ? state : null);
      if (!compressed) return target;
      return chain(createDecompressor(({ gz: 'gzip', lz4: 'lz4', zst: 'zstd' } as const)[compressed as 'gz']), target);
    },
    openManifest() {
      return fileWriter(join(backupDir, 'data', 'backup_manifest'));
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
      const out = fileWriter(join(backupDir, file));
      const stored = serverCompressed || clientCompression === null ? out : chain(createCompressor(clientCompression, { ...(level === undefined ? {} : { level }), ...(parallel ? { parallel } : {}) }), out);
      if (!name.startsWith('base.tar')) return stored;
      // Read backup_label out of the base archive on the way through.
      const label = labelReader(state);
      const labelIn = serverCompressed ? chain(createDecompressor(({ gz: 'gzip', lz4: 'lz4', zst: 'zstd' } as const)[serverCompressed as 'gz']), label) : label;
      return tee(stored, labelIn);
    },
    openManifest() {
      state.files.push(join('data', 'backup_manifest'));
      return fileWriter(join(backupDir, 'data', 'backup_manifest'));
    },
  };
}

// Chunks move through the sink chain in up to 1 MiB batches: Node's 16 KiB
// default paused the replication socket on almost every 32 KiB message.
const HWM = 1 << 20;

/**
 * A file written with synchronous writes from the caller's turn: no thread
 * pool round trip per chunk (which cost twice pg_basebackup's CPU), and a
 * slow disk blocks the event loop, which is back-pressure on the socket.
 */
function fileWriter(path: string): Writable {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const fd = openSync(path, 'w', 0o600);
  let closed = false;
  const close = () => {
    if (!closed) closeSync(fd);
    closed = true;
  };
  return new Writable({
    highWaterMark: HWM,
    write(chunk: Buffer, _enc, cb) {
      try {
        writeAll(fd, chunk);
        cb();
      } catch (e) {
        close();
        cb(e as Error);
      }
    },
    final(cb) {
      try {
        close();
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
    destroy(err, cb) {
      try {
        close();
      } catch {
        // already failing
      }
      cb(err);
    },
  });
}

function writeAll(fd: number, chunk: Buffer): void {
  let done = 0;
  while (done < chunk.length) done += writeSync(fd, chunk, done, chunk.length - done);
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

interface StreamxWritable {
  write(chunk: Buffer): boolean;
  end(): void;
  destroy(err?: Error): void;
  once(event: string, fn: (...args: unknown[]) => void): void;
}

/** tar-stream 3 is built on streamx: give its writable side Node's interface, back-pressure and errors included. */
function asNodeWritable(x: StreamxWritable): Writable {
  const wrapper = new Writable({
    highWaterMark: HWM,
    write(chunk: Buffer, _enc, cb) {
      if (x.write(chunk)) cb();
      else x.once('drain', () => cb());
    },
    final(cb) {
      x.once('finish', () => cb());
      x.end();
    },
    destroy(err, cb) {
      x.destroy(err ?? undefined);
      cb(err);
    },
  });
  // An extraction failure (ENOSPC writing a member, a bad member name)
  // fails the writer at once, pending writes included.
  x.once('error', (e) => wrapper.destroy(e as Error));
  return wrapper;
}

function labelReader(state: SinkState): Writable {
  const extract = tarStream.extract();
  extract.on('entry', (header, stream, next) => {
    if (header.name === 'backup_label') {
      const parts: Buffer[] = [];
      stream.on('data', (d: unknown) => parts.push(d as Buffer));
      stream.on('end', () => {
        state.backupLabel = Buffer.concat(parts).toString('utf8');
        next();
      });
    } else {
      stream.on('end', () => next());
      stream.resume();
    }
  });
  return asNodeWritable(extract as unknown as StreamxWritable);
}

/** A Writable that extracts a tar stream under `root`, refusing paths that would leave it. */
function extractTo(root: string, state: SinkState | null): Writable {
  mkdirSync(root, { recursive: true, mode: 0o700 });
  const extract = tarStream.extract();
  extract.on('entry', (header, stream, next) => {
    const rel = normalize(header.name).replace(/\/+$/, '');
    const target = join(root, rel);
    if (rel.startsWith('..') || rel.startsWith(sep) || !target.startsWith(root)) {
      extract.destroy(new Error(`refusing archive member '${header.name}' outside the backup directory`));
      return;
    }
    const mtime = header.mtime ?? new Date();
    try {
      if (header.type === 'directory') {
        mkdirSync(target, { recursive: true, mode: (header.mode ?? 0o700) & 0o7777 });
        stream.on('end', () => next());
        stream.resume();
      } else if (header.type === 'symlink') {
        mkdirSync(dirname(target), { recursive: true, mode: 0o700 });
        symlinkSync(header.linkname ?? '', target);
        stream.on('end', () => next());
        stream.resume();
      } else if (header.type === 'file' || header.type === 'contiguous-file') {
        mkdirSync(dirname(target), { recursive: true, mode: 0o700 });
        const capture = state !== null && rel === 'backup_label' ? ([] as Buffer[]) : null;
        const fd = openSync(target, 'w', (header.mode ?? 0o600) & 0o7777);
        let failed = false;
        stream.on('data', (d: unknown) => {
          if (failed) return;
          try {
            writeAll(fd, d as Buffer);
            capture?.push(d as Buffer);
          } catch (e) {
            failed = true;
            closeSync(fd);
            extract.destroy(e as Error);
          }
        });
        stream.on('error', (e: unknown) => extract.destroy(e as Error));
        stream.on('end', () => {
          if (failed) return;
          try {
            closeSync(fd);
            if (capture && state) state.backupLabel = Buffer.concat(capture).toString('utf8');
            utimesSync(target, mtime, mtime);
          } catch (e) {
            extract.destroy(e as Error);
            return;
          }
          next();
        });
      } else {
        stream.on('end', () => next());
        stream.resume();
      }
    } catch (e) {
      extract.destroy(e as Error);
    }
  });
  return asNodeWritable(extract as unknown as StreamxWritable);
}
