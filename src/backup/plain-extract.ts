import { constants, mkdirSync, symlinkSync } from 'node:fs';
import { displayName, memberPath, TarFormatError, TarParser } from '../cloud/backup-tar.ts';
import { ExtractionRoot } from '../cloud/restore-extract.ts';
import { DirectWriter, type FileWriter } from './direct-io.ts';
import type { DirectArchive } from '../postgres/base-backup.ts';

// A plain backup's archive (base.tar, <oid>.tar) extracted as its bytes arrive:
// each chunk is parsed and written with synchronous writes before the call
// returns, straight from the replication connection's buffer. A stream chain
// (copy, queue, tar-stream's entry streams) here cost about twice
// pg_basebackup's client CPU; writing synchronously also makes a slow disk
// block the reading of the socket, which is the back-pressure the server sees.
// Large files are written with O_DIRECT from the thread pool (direct-io.ts);
// whenReady() pauses the socket while its buffers are all on their way.

const OPEN_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
export interface PlainExtractOptions {
  /** The archive's name, for messages. */
  archive: string;
  /** Called with backup_label's text when the archive holds it. */
  onBackupLabel?: (text: string) => void;
  /** PostgreSQL 14 and older end an archive without the end-of-archive blocks. */
  endMarkerOptional?: boolean;
  /** Counts the bytes of the files written. */
  tally?: { bytes: number };
}

export class PlainExtractor implements DirectArchive {
  readonly #parser = new TarParser();
  readonly #root: ExtractionRoot;
  readonly #o: PlainExtractOptions;
  /** The file being written. */
  #file: FileWriter | null = null;
  #mtime = 0;
  #label: Buffer[] | null = null;
  readonly #direct: DirectWriter;

  constructor(root: string, o: PlainExtractOptions) {
    mkdirSync(root, { recursive: true, mode: 0o700 });
    this.#root = new ExtractionRoot(root);
    this.#direct = new DirectWriter(root);
    this.#o = o;
  }

  writeNow(chunk: Buffer): void {
    try {
      this.#feed(chunk);
    } catch (e) {
      this.abort();
      throw describe(e, this.#o.archive);
    }
  }

  whenReady(): Promise<void> | null {
    return this.#direct.whenReady();
  }

  async close(): Promise<void> {
    try {
      this.#parser.finish(this.#o.endMarkerOptional ?? false);
      this.#root.finish();
      await this.#direct.drain();
    } catch (e) {
      this.abort();
      throw describe(e, this.#o.archive);
    }
  }

  abort(): void {
    this.#file?.abort();
    this.#file = null;
  }

  #feed(chunk: Buffer): void {
    for (const ev of this.#parser.feed(chunk)) {
      if (ev.kind === 'data') {
        if (!this.#file) continue;
        this.#file.write(ev.data);
        if (this.#o.tally) this.#o.tally.bytes += ev.data.length;
        // The socket's read buffer is reused: keep a copy.
        this.#label?.push(Buffer.from(ev.data));
      } else if (ev.kind === 'pad') {
        if (this.#file) this.#endFile();
      } else if (ev.kind === 'member') {
        const m = ev.member;
        const rel = memberPath(m.name);
        if (rel === null) {
          if (m.type === 'directory') this.#root.directoryMode('', m.mode);
          continue;
        }
        this.#root.checkPath(rel);
        const slash = rel.lastIndexOf('/');
        const parent = slash < 0 ? '' : rel.slice(0, slash);
        if (m.type === 'directory') {
          this.#root.ensureDir(rel);
          this.#root.directoryMode(rel, m.mode);
        } else if (m.type === 'file') {
          this.#root.ensureDir(parent);
          this.#file = this.#direct.open(this.#root.path(rel), OPEN_FLAGS, m.mode & 0o7777 || 0o600, m.size);
          this.#mtime = m.mtime;
          this.#label = rel === 'backup_label' && this.#o.onBackupLabel ? [] : null;
          if (m.size === 0) this.#endFile();
        } else if (m.type === 'symlink') {
          this.#root.ensureDir(parent);
          symlinkSync(/[^\x00-\x7f]/.test(m.linkname) ? Buffer.from(m.linkname, 'latin1') : m.linkname, this.#root.path(rel));
          this.#root.link(rel);
        } else {
          // PostgreSQL writes files, directories and symbolic links only: anything else means the stream is not what we think.
          throw new TarFormatError(`unexpected member '${displayName(m.name)}' (tar type '${m.typeflag}')`);
        }
      }
    }
  }

  #endFile(): void {
    const file = this.#file!;
    this.#file = null;
    file.end(this.#mtime);
    if (this.#label) {
      this.#o.onBackupLabel!(Buffer.concat(this.#label).toString('utf8'));
      this.#label = null;
    }
  }
}


function describe(err: unknown, archive: string): Error {
  if (err instanceof TarFormatError) return new Error(`${archive} from the server is not a valid tar archive: ${err.message}`);
  return err as Error;
}
