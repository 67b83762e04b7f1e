// The upload side of cloud-backup: each tar archive PostgreSQL sends becomes
// one or more objects (data.tar.gz, data_0001.tar.gz, ..., 16385.tar.gz),
// streamed as it arrives through [compress] -> [encrypt] -> [throttle] into a
// multipart upload. Nothing touches the local disk, unlike barman-cloud (which
// spools each part to $TMPDIR).
//
// Memory is bounded: one object is uploaded at a time (UploadGate), with at
// most `jobs` parts in flight plus the one being filled, so about
// (jobs + 1) x part size, and every stage passes back-pressure up to the
// replication socket.
import { PassThrough, Transform, type TransformCallback, Writable, pipeline, type Duplex } from 'node:stream';
import type { ObjectStore, PutOptions } from '../storage/object-store.ts';
import { createEncryptor, encryptedSize, type EncryptionKey } from '../storage/encryption.ts';
import { createCompressor } from '../wal/compression.ts';
import { backupTarName } from './layout.ts';
import { BLOCK, END_OF_ARCHIVE, TarParser, type TarMember } from './backup-tar.ts';

export type BackupCompression = 'gzip' | 'bzip2' | 'zstd' | 'lz4';

// Levels: gzip 6 and bzip2 9 as the usual tools default, zstd 3 (pg_basebackup's
// default), lz4's fast mode: a backup streams through one core per archive.
const LEVELS: Record<BackupCompression, number> = { gzip: 6, bzip2: 9, zstd: 3, lz4: 1 };

/** Serialises object uploads: one object's parts in flight at a time. FIFO. */
export class UploadGate {
  #busy = false;
  #waiting: (() => void)[] = [];

  async acquire(): Promise<() => void> {
    if (this.#busy) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#busy = true;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      if (next) next();
      else this.#busy = false;
    };
  }
}

export interface UploadSettings {
  store: ObjectStore;
  /** Store-relative prefix of the backup's objects, ending in '/': `<server>/base/<id>/`. */
  keyPrefix: string;
  compression: BackupCompression | null;
  encryptionKey: EncryptionKey | null;
  /** -S/--max-archive-size: a new part starts before a member that would take an object past it. */
  maxArchiveSize: number;
  /** SSE, tags, part size, concurrency (-J), abort signal. */
  put: PutOptions;
  /** --max-bandwidth in bytes per second over all uploads; 0: none. */
  maxBandwidth: number;
  gate: UploadGate;
  verbose?: (line: string) => void;
}

export interface UploadedObject {
  key: string;
  /** Bytes stored (after compression and encryption). */
  size: number;
  /** Tar bytes before compression. */
  rawSize: number;
}

/** A shared token bucket: --max-bandwidth applies to the whole backup, not per object. */
export class BandwidthLimit {
  readonly bytesPerSecond: number;
  #start = 0;
  #sent = 0;

  constructor(bytesPerSecond: number) {
    this.bytesPerSecond = bytesPerSecond;
  }

  /** A pass-through that delays chunks so the total rate stays under the limit. */
  transform(): Transform {
    return new Transform({
      transform: (chunk: Buffer, _enc, cb: TransformCallback) => {
        if (this.#start === 0) this.#start = Date.now();
        this.#sent += chunk.length;
        const due = this.#start + (this.#sent / this.bytesPerSecond) * 1000;
        const wait = due - Date.now();
        if (wait > 1) setTimeout(() => cb(null, chunk), wait);
        else cb(null, chunk);
      },
    });
  }
}

/** Counts bytes flowing to the store. */
class Counter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

const HWM = 1 << 20;

/** One object being uploaded: tar bytes in, a stored object out. */
class PartUpload {
  readonly key: string;
  readonly entry = new PassThrough({ highWaterMark: HWM });
  readonly counter = new Counter();
  rawBytes = 0;
  readonly done: Promise<UploadedObject>;
  #error: Error | null = null;

  readonly #tar: boolean;

  /** `tar`: a backup archive (compressed, ended with end-of-archive blocks); otherwise stored as is (encrypted if asked). */
  constructor(s: UploadSettings, name: string, limit: BandwidthLimit | null, release: () => void, tar = true) {
    this.key = `${s.keyPrefix}${name}`;
    this.#tar = tar;
    const filters: Duplex[] = [];
    if (s.compression && tar) {
      filters.push(createCompressor(s.compression, { level: LEVELS[s.compression] }));
    }
    if (s.encryptionKey) filters.push(createEncryptor(s.encryptionKey));
    const stages: (NodeJS.ReadableStream | NodeJS.ReadWriteStream)[] = [this.entry, ...filters, this.counter];
    if (limit) stages.push(limit.transform());
    const body = stages[stages.length - 1] as Transform;
    // Errors of a stage (the lz4 tool failing, say) end up in the body, hence in put().
    (pipeline as (...args: unknown[]) => unknown)(...stages, (err: Error | null) => {
      if (err) this.#fail(err);
    });
    this.done = s.store
      .put(this.key, body, s.put)
      .then((r) => ({ key: this.key, size: r.size, rawSize: this.rawBytes }))
      .catch((err: unknown) => {
        this.#fail(err as Error);
        throw err;
      })
      .finally(release);
    this.done.catch(() => undefined);
  }

  #fail(err: Error): void {
    this.#error ??= err;
    this.entry.destroy(err);
  }

  /** Writes tar bytes; resolves once there is room for more, rejects if the upload failed. */
  async write(buf: Buffer): Promise<void> {
    if (this.#error) throw this.#error;
    this.rawBytes += buf.length;
    if (this.entry.write(buf)) return;
    await new Promise<void>((resolve, reject) => {
      const cleanup = () => {
        this.entry.off('drain', onDrain);
        this.entry.off('close', onClose);
      };
      const onDrain = () => {
        cleanup();
        resolve();
      };
      const onClose = () => {
        cleanup();
        // A destroyed entry never drains: the upload failed (done says why).
        this.done.then(() => reject(new Error('upload stream closed')), reject);
      };
      this.entry.on('drain', onDrain);
      this.entry.on('close', onClose);
    });
  }

  /** Ends the archive (end-of-archive blocks) and waits for the object to be complete. */
  async end(): Promise<UploadedObject> {
    if (this.#tar) await this.write(END_OF_ARCHIVE);
    this.entry.end();
    return this.done;
  }

  abort(err: Error): void {
    this.#fail(err);
  }
}

/**
 * A Writable receiving one archive from BASE_BACKUP and uploading it as `base`
 * (`data` or a tablespace OID) in as many parts as -S requires.
 */
export class ArchiveUpload {
  readonly base: string;
  readonly objects: UploadedObject[] = [];
  /** backup_label's text, when this archive holds it. */
  backupLabel: string | null = null;
  readonly #s: UploadSettings;
  readonly #keep: (m: TarMember) => boolean;
  readonly #limit: BandwidthLimit | null;
  readonly #parser = new TarParser();
  #part: PartUpload | null = null;
  #partNumber = 0;
  #keeping = false;
  #label: Buffer[] | null = null;
  dropped: string[] = [];

  readonly #endMarkerOptional: boolean;

  /** `endMarkerOptional`: the server (PostgreSQL < 15) does not end its tars; each object gets its end blocks anyway. */
  constructor(s: UploadSettings, base: string, keep: (m: TarMember) => boolean, limit: BandwidthLimit | null, endMarkerOptional = false) {
    this.#s = s;
    this.#endMarkerOptional = endMarkerOptional;
    this.base = base;
    this.#keep = keep;
    this.#limit = limit;
  }

  writable(): Writable {
    return new Writable({
      highWaterMark: HWM,
      write: (chunk: Buffer, _enc, cb) => {
        this.#process(chunk).then(() => cb(), cb);
      },
      final: (cb) => {
        this.#finish().then(() => cb(), cb);
      },
      destroy: (err, cb) => {
        this.#part?.abort(err ?? new Error('archive upload cancelled'));
        cb(err);
      },
    });
  }

  async #process(chunk: Buffer): Promise<void> {
    for (const ev of this.#parser.feed(chunk)) {
      switch (ev.kind) {
        case 'member': {
          this.#keeping = this.#keep(ev.member);
          if (!this.#keeping) {
            this.dropped.push(ev.member.name);
            break;
          }
          this.#label = ev.member.name === 'backup_label' && ev.member.type === 'file' ? [] : null;
          const bytes = ev.raw.reduce((n, b) => n + b.length, 0) + Math.ceil(ev.member.size / BLOCK) * BLOCK;
          if (this.#part && this.#wouldExceed(this.#part, bytes)) await this.#closePart();
          this.#part ??= await this.#openPart();
          for (const b of ev.raw) await this.#part.write(b);
          break;
        }
        case 'data':
          if (!this.#keeping) break;
          this.#label?.push(Buffer.from(ev.data));
          await this.#part!.write(ev.data);
          break;
        case 'pad':
          if (this.#label) {
            this.backupLabel = Buffer.concat(this.#label).toString('utf8');
            this.#label = null;
          }
          if (this.#keeping && ev.data.length > 0) await this.#part!.write(ev.data);
          break;
        case 'end':
          break;
      }
    }
  }

  async #finish(): Promise<void> {
    this.#parser.finish(this.#endMarkerOptional);
    // An archive whose members were all dropped still becomes an (empty) object:
    // restore tools expect one per tablespace.
    this.#part ??= await this.#openPart();
    await this.#closePart();
  }

  /** Whether adding `bytes` of tar would take the current object past -S. */
  #wouldExceed(part: PartUpload, bytes: number): boolean {
    if (part.rawBytes === 0) return false;
    const rawAfter = part.rawBytes + bytes + END_OF_ARCHIVE.length;
    let projected: number;
    if (this.#s.compression) {
      // The compressor's output lags its input: the ratio so far is an estimate.
      const ratio = part.counter.bytes > 0 ? Math.min(1, part.counter.bytes / part.rawBytes) : 1;
      projected = rawAfter * ratio;
    } else {
      projected = this.#s.encryptionKey ? encryptedSize(rawAfter) : rawAfter;
    }
    return projected > this.#s.maxArchiveSize;
  }

  async #openPart(): Promise<PartUpload> {
    const release = await this.#s.gate.acquire();
    const name = backupTarName(this.base, this.#partNumber++, this.#s.compression);
    this.#s.verbose?.(`Uploading ${name}`);
    try {
      return new PartUpload(this.#s, name, this.#limit, release);
    } catch (err) {
      release();
      throw err;
    }
  }

  async #closePart(): Promise<void> {
    const part = this.#part;
    if (!part) return;
    this.#part = null;
    const uploaded = await part.end();
    this.objects.push(uploaded);
    this.#s.verbose?.(`Uploaded ${uploaded.key} (${uploaded.size} bytes)`);
  }
}

/** The backup_manifest as an object of its own (a barkeep extension; barman-cloud ignores it). */
export function manifestUpload(s: UploadSettings, limit: BandwidthLimit | null, onDone: (o: UploadedObject) => void): Writable {
  let part: Promise<PartUpload> | null = null;
  const open = async () => new PartUpload(s, 'backup_manifest', limit, await s.gate.acquire(), false);
  return new Writable({
    highWaterMark: HWM,
    write(chunk: Buffer, _enc, cb) {
      part ??= open();
      part.then((p) => p.write(chunk)).then(() => cb(), cb);
    },
    final(cb) {
      part ??= open();
      part
        .then((p) => p.end())
        .then((o) => {
          onDone(o);
          cb();
        }, cb);
    },
    destroy(err, cb) {
      void part?.then((p) => p.abort(err ?? new Error('manifest upload cancelled')));
      cb(err);
    },
  });
}
