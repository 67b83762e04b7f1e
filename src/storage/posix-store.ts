// ObjectStore in a local directory: the same contract as the S3 store, for tests
// and for a repository on a mounted filesystem. A key `a/b/c` is the file
// ROOT/a/b/c. Writes are durable and atomic (temporary file, fsync, rename or
// link, fsync of the directory), so a crash leaves the old object or the new one.
// Object metadata and tags live in a hidden sidecar `.NAME.meta.json`; every name
// starting with '.' (sidecars, temporary files) is invisible to listings, and keys
// may not use such names. Server-side encryption options do not apply and are ignored.
import { createReadStream, type ReadStream } from 'node:fs';
import { link, open, readdir, readFile, rename, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { ensureDir, fsyncDir, isDirectory, isErrno, tempPathFor, writeFileDurable } from '../util/durable-fs.ts';
import { StorageError } from './errors.ts';
import type { GetOptions, ListOptions, ObjectHead, ObjectInfo, ObjectStore, PutOptions, PutResult } from './object-store.ts';

interface Sidecar {
  metadata?: Record<string, string>;
  tags?: Record<string, string>;
  contentType?: string;
}

export class PosixObjectStore implements ObjectStore {
  readonly location: string;
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
    this.location = this.root;
  }

  async put(key: string, body: Readable | Buffer | Uint8Array | string, opts: PutOptions = {}): Promise<PutResult> {
    const path = this.pathOf(key);
    try {
      await this.requireRoot('upload');
      await ensureDir(dirname(path));
      const tmp = tempPathFor(path);
      let size = 0;
      let placed = false;
      try {
        const fh = await open(tmp, 'wx', 0o644);
        try {
          if (body instanceof Readable) {
            for await (const chunk of body) {
              if (opts.signal?.aborted) throw abortError();
              const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
              size += buf.length;
              if (opts.contentLength !== undefined && size > opts.contentLength) {
                throw new StorageError('failed', `cannot upload ${path}: the data is longer than the announced ${opts.contentLength} bytes`);
              }
              await fh.write(buf);
            }
          } else {
            const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
            size = buf.byteLength;
            await fh.writeFile(buf);
          }
          if (opts.contentLength !== undefined && size !== opts.contentLength) {
            throw new StorageError('failed', `cannot upload ${path}: the data ended after ${size} of the announced ${opts.contentLength} bytes`);
          }
          if (opts.signal?.aborted) throw abortError();
          await fh.sync();
        } finally {
          await fh.close();
        }
        const sidecar: Sidecar = {
          ...(opts.metadata && Object.keys(opts.metadata).length > 0 ? { metadata: lowerKeys(opts.metadata) } : {}),
          ...(opts.tags && Object.keys(opts.tags).length > 0 ? { tags: opts.tags } : {}),
          ...(opts.contentType ? { contentType: opts.contentType } : {}),
        };
        // A conditional put must not touch the metadata of an object that is already
        // there; the check is repeated atomically by link() below. (Two conditional puts
        // racing for one key may leave the loser's metadata: a local store's limitation.)
        if (opts.ifNoneMatch && (await stat(path).then(() => true, () => false))) {
          throw new StorageError('exists', `${path} already exists`);
        }
        // The sidecar goes first: an object never appears without its metadata.
        if (Object.keys(sidecar).length > 0) await writeFileDurable(this.sidecarOf(path), JSON.stringify(sidecar));
        else await unlink(this.sidecarOf(path)).catch(() => undefined);
        if (opts.ifNoneMatch) {
          // link() never replaces an existing name, unlike rename().
          try {
            await link(tmp, path);
          } catch (err) {
            if (isErrno(err, 'EEXIST')) throw new StorageError('exists', `${path} already exists`, { cause: err });
            throw err;
          }
          placed = true;
          await unlink(tmp);
        } else {
          await rename(tmp, path);
          placed = true;
        }
        await fsyncDir(dirname(path));
      } finally {
        if (!placed) await unlink(tmp).catch(() => undefined);
      }
      const st = await stat(path);
      return { etag: etagOf(st), size };
    } catch (err) {
      if (body instanceof Readable && !body.destroyed) body.destroy();
      throw mapFsError(err, 'upload', path);
    }
  }

  async get(key: string, opts: GetOptions = {}): Promise<Readable> {
    const path = this.pathOf(key);
    let stream: ReadStream;
    try {
      const st = await stat(path);
      if (!st.isFile()) throw Object.assign(new Error('not a file'), { code: 'ENOENT' });
      stream = createReadStream(path, {
        ...(opts.range ? { start: opts.range.start, ...(opts.range.end !== undefined ? { end: opts.range.end } : {}) } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) {
        await this.requireRoot('download');
        throw new StorageError('not-found', `${path} does not exist`, { cause: err });
      }
      throw mapFsError(err, 'download', path);
    }
    return stream;
  }

  async head(key: string): Promise<ObjectHead | null> {
    const path = this.pathOf(key);
    try {
      const st = await stat(path);
      if (!st.isFile()) return null;
      const sidecar = await this.readSidecar(path);
      return { size: st.size, etag: etagOf(st), lastModified: st.mtime, metadata: sidecar.metadata ?? {} };
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return null;
      throw mapFsError(err, 'head', path);
    }
  }

  async *list(prefix: string, opts: ListOptions = {}): AsyncIterable<ObjectInfo> {
    if (opts.delimiter !== undefined && opts.delimiter !== '/') {
      throw new StorageError('failed', `the directory store lists with delimiter '/' only, not '${opts.delimiter}'`);
    }
    await this.requireRoot('list');
    const { dir, start } = splitPrefix(prefix);
    yield* this.walk(dir, start, opts.delimiter === '/');
  }

  async *listPrefixes(prefix: string): AsyncIterable<string> {
    await this.requireRoot('list');
    const { dir, start } = splitPrefix(prefix);
    for (const e of await this.entries(dir)) {
      if (!e.dir || !e.name.startsWith(start)) continue;
      // A directory left empty (e.g. by an interrupted delete) is not a prefix of any object.
      for await (const _ of this.walk(`${dir}${e.name}/`, '', false)) {
        yield `${dir}${e.name}/`;
        break;
      }
    }
  }

  async delete(keys: readonly string[]): Promise<void> {
    const dirs = new Set<string>();
    for (const key of keys) {
      const path = this.pathOf(key);
      try {
        await unlink(path);
        dirs.add(dirname(path));
      } catch (err) {
        if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw mapFsError(err, 'delete', path);
      }
      await unlink(this.sidecarOf(path)).catch(() => undefined);
    }
    for (const d of dirs) {
      await fsyncDir(d).catch(() => undefined);
      await this.pruneEmpty(d);
    }
  }

  async bucketExists(): Promise<boolean> {
    return isDirectory(this.root);
  }

  async createBucket(): Promise<void> {
    try {
      await ensureDir(this.root);
    } catch (err) {
      throw mapFsError(err, 'create bucket', this.root);
    }
  }

  close(): void {}

  /** The file of a key; refuses keys that would leave the root or hide among internal files. */
  pathOf(key: string): string {
    const segments = key.split('/');
    if (key === '' || segments.some((s) => s === '' || s.startsWith('.') || s.includes('\0'))) {
      throw new StorageError('failed', `invalid object key '${key}' for the directory store ${this.root}: empty segments and names starting with '.' are not allowed`);
    }
    return join(this.root, ...segments);
  }

  private sidecarOf(path: string): string {
    return join(dirname(path), `.${path.slice(dirname(path).length + 1)}.meta.json`);
  }

  private async readSidecar(path: string): Promise<Sidecar> {
    try {
      return JSON.parse(await readFile(this.sidecarOf(path), 'utf8')) as Sidecar;
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return {};
      throw new StorageError('failed', `unreadable metadata for ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  private async requireRoot(op: string): Promise<void> {
    if (!(await isDirectory(this.root))) throw new StorageError('bucket-not-found', `directory ${this.root} does not exist (${op})`);
  }

  /** A directory's visible entries in S3 key order ("a-b" before "a/" because '-' < '/'). */
  private async entries(dirKey: string): Promise<{ name: string; dir: boolean }[]> {
    let list;
    try {
      list = await readdir(join(this.root, dirKey), { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return [];
      throw mapFsError(err, 'list', join(this.root, dirKey));
    }
    return list
      .filter((e) => !e.name.startsWith('.') && (e.isDirectory() || e.isFile()))
      .map((e) => ({ name: e.name, dir: e.isDirectory(), sortKey: e.isDirectory() ? `${e.name}/` : e.name }))
      .sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
  }

  private async *walk(dirKey: string, start: string, oneLevel: boolean): AsyncGenerator<ObjectInfo> {
    for (const e of await this.entries(dirKey)) {
      if (!e.name.startsWith(start)) continue;
      const key = `${dirKey}${e.name}`;
      if (e.dir) {
        if (!oneLevel) yield* this.walk(`${key}/`, '', false);
        continue;
      }
      try {
        const st = await stat(join(this.root, key));
        yield { key, size: st.size, lastModified: st.mtime };
      } catch (err) {
        // Deleted while listing: S3 listings are not snapshots either.
        if (!isErrno(err, 'ENOENT')) throw mapFsError(err, 'list', join(this.root, key));
      }
    }
  }

  private async pruneEmpty(dir: string): Promise<void> {
    for (let d = dir; d.startsWith(`${this.root}/`); d = dirname(d)) {
      try {
        await rmdir(d);
        await fsyncDir(dirname(d));
      } catch {
        return;
      }
    }
  }
}

function splitPrefix(prefix: string): { dir: string; start: string } {
  const cut = prefix.lastIndexOf('/') + 1;
  return { dir: prefix.slice(0, cut), start: prefix.slice(cut) };
}

function etagOf(st: { size: number; mtimeMs: number; ino: number }): string {
  return `${st.ino.toString(16)}-${st.size.toString(16)}-${Math.round(st.mtimeMs * 1000).toString(16)}`;
}

function lowerKeys(m: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k.toLowerCase(), v]));
}

function abortError(): Error {
  return Object.assign(new Error('Upload aborted.'), { name: 'AbortError' });
}

function mapFsError(err: unknown, op: string, path: string): unknown {
  if (err instanceof StorageError || (err as { name?: string })?.name === 'AbortError') return err;
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'EACCES' || code === 'EPERM') return new StorageError('access-denied', `permission denied to ${op} ${path}`, { cause: err });
  if (code === 'ENOSPC' || code === 'EDQUOT') return new StorageError('failed', `cannot ${op} ${path}: no space left on the device`, { cause: err });
  if (code) return new StorageError('failed', `cannot ${op} ${path}: ${code}`, { cause: err });
  return err;
}
