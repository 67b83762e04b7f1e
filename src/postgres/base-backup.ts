import type { Writable } from 'node:stream';
import type pg from 'pg';
import { interceptCopyData } from './copy-data-intercept.ts';
import { parseLsn, type Lsn } from './lsn.ts';

// BASE_BACKUP over a physical replication connection. PostgreSQL 15+ sends
// one CopyOut for the whole backup, with sub-messages: 'n' a new archive
// (name, tablespace path), 'd' data, 'p' progress, 'm' the manifest starts.
// The CopyData messages are taken off the socket before pg parses them
// (copy-data-intercept.ts). A sink that writes synchronously (DirectArchive)
// is handed slices of the socket's buffers; a stream sink may be full, and
// then the socket is paused until it drains, so memory stays bounded
// whatever the backup size.

export interface BaseBackupOptions {
  label: string;
  fastCheckpoint: boolean;
  /** kB/s; 0 or undefined: no limit. */
  maxRate?: number;
  manifestChecksums: 'SHA256' | 'CRC32C' | 'NONE';
  /** Server-side compression (PostgreSQL 15+ built with it). */
  compression?: { method: 'gzip' | 'lz4' | 'zstd'; level?: number; workers?: number };
  /**
   * Let the server wait until the backup's last WAL segment is archived (WAIT true):
   * for clients that do not stream the WAL themselves. Default false.
   */
  wait?: boolean;
  /**
   * TABLESPACE_MAP (default true): a tablespace_map file instead of the pg_tblspc/<oid>
   * symbolic links in the base archive.
   */
  tablespaceMap?: boolean;
}

export interface TablespaceEntry {
  oid: number | null;
  location: string | null;
  /** Estimated size in bytes (the server reports kB). */
  size: number;
}

/**
 * A consumer that is done with each chunk when writeNow returns (it writes
 * synchronously): chunks are handed over as views of the socket's read buffer, with no
 * copy and no queue. Errors are thrown.
 */
export interface DirectArchive {
  writeNow(chunk: Buffer): void;
  /** A promise when the consumer has work queued (compression) and the socket should wait for it. */
  whenReady?(): Promise<void> | null;
  /** The archive is complete: throws (or rejects) if it is not what it should be. */
  close(): void | Promise<void>;
  /** The backup failed: release what is open. */
  abort(): void;
}

export type ArchiveTarget = Writable | DirectArchive;

export interface BaseBackupSink {
  /** A new archive: `name` as the server names it (base.tar, 16384.tar.lz4, ...). */
  openArchive(name: string, tablespacePath: string): ArchiveTarget;
  openManifest(): ArchiveTarget;
  onProgress?(bytesDone: number): void;
}

export interface BaseBackupResult {
  startLsn: Lsn;
  startTimeline: number;
  endLsn: Lsn;
  endTimeline: number;
  tablespaces: TablespaceEntry[];
}

interface PgConnection {
  on(event: 'copyData', fn: (msg: { chunk: Buffer }) => void): void;
  removeListener(event: string, fn: (...args: never[]) => void): void;
  stream: { pause(): void; resume(): void; destroy(err?: Error): void } & Parameters<typeof interceptCopyData>[0];
}

export class BaseBackupError extends Error {}

function quote(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

export function baseBackupCommand(opts: BaseBackupOptions): string {
  const parts = [
    `LABEL ${quote(opts.label)}`,
    'PROGRESS',
    `CHECKPOINT ${opts.fastCheckpoint ? "'fast'" : "'spread'"}`,
    // `barkeep backup` streams the WAL itself, so by default the server does not wait for archiving.
    `WAIT ${opts.wait ? 'true' : 'false'}`,
    "MANIFEST 'yes'",
    `MANIFEST_CHECKSUMS ${quote(opts.manifestChecksums)}`,
  ];
  if (opts.tablespaceMap !== false) parts.push('TABLESPACE_MAP');
  if (opts.maxRate && opts.maxRate > 0) parts.push(`MAX_RATE ${Math.max(32, opts.maxRate)}`);
  if (opts.compression) {
    parts.push(`COMPRESSION ${quote(opts.compression.method)}`);
    const detail: string[] = [];
    if (opts.compression.level !== undefined) detail.push(`level=${opts.compression.level}`);
    if (opts.compression.workers) detail.push(`workers=${opts.compression.workers}`);
    if (detail.length) parts.push(`COMPRESSION_DETAIL ${quote(detail.join(','))}`);
  }
  return `BASE_BACKUP ( ${parts.join(', ')} )`;
}

/** PostgreSQL 14 and older: unparenthesised options, no WAIT false (NOWAIT), no compression. */
export function legacyBaseBackupCommand(opts: BaseBackupOptions): string {
  if (opts.compression) throw new BaseBackupError('server-side compression needs PostgreSQL 15 or later: use backup_compression_location = client');
  const parts = [`LABEL ${quote(opts.label)}`, 'PROGRESS'];
  if (opts.fastCheckpoint) parts.push('FAST');
  if (!opts.wait) parts.push('NOWAIT');
  parts.push(`MANIFEST 'yes'`, `MANIFEST_CHECKSUMS ${quote(opts.manifestChecksums)}`);
  if (opts.tablespaceMap !== false) parts.push('TABLESPACE_MAP');
  if (opts.maxRate && opts.maxRate > 0) parts.push(`MAX_RATE ${Math.max(32, opts.maxRate)}`);
  return `BASE_BACKUP ${parts.join(' ')}`;
}

export async function runBaseBackup(client: pg.Client, opts: BaseBackupOptions, sink: BaseBackupSink, serverVersion = 150000): Promise<BaseBackupResult> {
  const conn = (client as unknown as { connection: PgConnection }).connection;
  const legacy = serverVersion < 150000;
  // Before 15 each archive is its own CopyOut of raw tar data, in the order
  // of the tablespace result set, and the manifest is one more CopyOut.
  let resultSets = 0;
  const legacyTablespaces: { oid: string | null; location: string | null }[] = [];
  let copies = 0;
  // What arrived, checked at the end: a backup must never "succeed" with nothing in it.
  let archivesOpened = 0;
  let manifestOpened = false;
  const onRowDescription = () => void resultSets++;
  const onDataRow = (msg: { fields: (string | null)[] }) => {
    if (resultSets === 2) legacyTablespaces.push({ oid: msg.fields[0] ?? null, location: msg.fields[1] ?? null });
  };
  const onCopyOut = () => {
    if (failure) return;
    try {
      close();
      const i = copies++;
      if (i < legacyTablespaces.length) {
        const t = legacyTablespaces[i]!;
        open(sink.openArchive(t.oid === null ? 'base.tar' : `${t.oid}.tar`, t.location ?? ''));
      } else {
        manifestOpened = true;
        open(sink.openManifest());
      }
    } catch (e) {
      fail(e as Error);
    }
  };
  let current: ArchiveTarget | null = null;
  const slab = new CopySlab();
  const finishing: Promise<void>[] = [];
  let failure: Error | null = null;
  let pausedFor: Writable | null = null;
  let pausedForDirect = false;

  const open = (target: ArchiveTarget) => {
    archivesOpened++;
    current = target;
    if (!isDirect(target)) target.on('error', fail);
  };
  const close = () => {
    if (!current) return;
    const w = current;
    current = null;
    if (isDirect(w)) {
      const closing = w.close();
      if (closing) {
        closing.catch(() => undefined);
        finishing.push(closing);
      }
      return;
    }
    finishing.push(
      new Promise<void>((resolve, reject) => {
        w.once('error', reject);
        w.end(() => resolve());
      }),
    );
  };
  const fail = (e: Error) => {
    if (failure) return;
    failure = e;
    if (current && isDirect(current)) current.abort();
    conn.stream.destroy(e);
  };
  /** Archive bytes for the current archive. `owned`: the caller's buffer is not reused (no copy needed to queue it). */
  const archiveData = (payload: Buffer, owned: boolean) => {
    if (!current) throw new BaseBackupError('archive data before any archive was announced');
    if (isDirect(current)) {
      current.writeNow(payload);
      const ready = current.whenReady?.();
      if (ready && !pausedForDirect) {
        pausedForDirect = true;
        conn.stream.pause();
        void ready.then(() => {
          pausedForDirect = false;
          conn.stream.resume();
        });
      }
      return;
    }
    const ok = current.write(owned ? payload : slab.copy(payload));
    if (!ok && !pausedFor) {
      // Messages already read are still dispatched while the socket is
      // paused, and one of them may end this writable (next archive): an
      // ended writable never drains, so finishing resumes too.
      const w: Writable = current;
      pausedFor = w;
      conn.stream.pause();
      const resume = () => {
        for (const ev of ['drain', 'finish', 'close', 'error']) w.removeListener(ev, resume);
        pausedFor = null;
        conn.stream.resume();
      };
      for (const ev of ['drain', 'finish', 'close', 'error']) w.once(ev, resume);
    }
  };
  /** A whole message other than archive data (15+: 'n', 'm', 'p'). */
  const control = (chunk: Buffer) => {
    const type = chunk[0];
    if (type === 0x6e /* n */) {
      close();
      const end = chunk.indexOf(0, 1);
      const name = chunk.toString('utf8', 1, end);
      const path = chunk.toString('utf8', end + 1, chunk.indexOf(0, end + 1));
      if (!/^[A-Za-z0-9_.]+$/.test(name) || name.includes('..')) throw new BaseBackupError(`the server announced an unexpected archive name '${name}'`);
      open(sink.openArchive(name, path));
    } else if (type === 0x6d /* m */) {
      close();
      manifestOpened = true;
      open(sink.openManifest());
    } else if (type === 0x70 /* p */) {
      sink.onProgress?.(Number(chunk.readBigInt64BE(1)));
    } else {
      throw new BaseBackupError(`unexpected BASE_BACKUP message type 0x${(type ?? 0).toString(16)}`);
    }
  };
  // Through pg's events (when the socket could not be intercepted): whole messages in pg's reused buffer.
  const onData = (msg: { chunk: Buffer }) => {
    if (failure) return;
    try {
      const chunk = msg.chunk;
      if (legacy) archiveData(chunk, false);
      else if (chunk[0] === 0x64 /* d */) archiveData(chunk.subarray(1), false);
      else control(chunk);
    } catch (e) {
      fail(e as Error);
    }
  };
  // Straight off the socket: pieces of messages (in buffers that are not reused when tap.stable).
  let pieceType = 0;
  let pieces: Buffer[] = [];
  const onPiece = (piece: Buffer, offset: number, length: number) => {
    if (failure) return;
    try {
      if (legacy) {
        if (piece.length > 0) archiveData(piece, tap!.stable);
        return;
      }
      let body = piece;
      if (offset === 0) {
        if (length === 0) throw new BaseBackupError('empty BASE_BACKUP message');
        pieceType = piece[0]!;
        if (pieceType === 0x64) body = piece.subarray(1);
      }
      if (pieceType === 0x64) {
        if (body.length > 0) archiveData(body, tap!.stable);
        return;
      }
      pieces.push(tap!.stable ? piece : Buffer.from(piece));
      if (offset + piece.length === length) {
        const whole = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
        pieces = [];
        control(whole);
      }
    } catch (e) {
      fail(e as Error);
    }
  };

  const events = conn as unknown as { on(e: string, fn: (...a: never[]) => void): void; removeListener(e: string, fn: (...a: never[]) => void): void };
  const tap = interceptCopyData(conn.stream, onPiece);
  if (!tap) conn.on('copyData', onData);
  if (legacy) {
    events.on('rowDescription', onRowDescription);
    events.on('dataRow', onDataRow);
    events.on('copyOutResponse', onCopyOut);
  }
  let results: pg.QueryResult[];
  try {
    const r = (await client.query(legacy ? legacyBaseBackupCommand(opts) : baseBackupCommand(opts))) as unknown;
    results = Array.isArray(r) ? (r as pg.QueryResult[]) : [r as pg.QueryResult];
  } catch (e) {
    // (Assigned in the callbacks above, which TypeScript does not follow.)
    const open = current as ArchiveTarget | null;
    if (open && isDirect(open)) open.abort();
    throw failure ?? e;
  } finally {
    tap?.release();
    conn.removeListener('copyData', onData);
    events.removeListener('rowDescription', onRowDescription);
    events.removeListener('dataRow', onDataRow);
    events.removeListener('copyOutResponse', onCopyOut);
  }
  if (failure) throw failure;
  try {
    close();
  } catch (e) {
    await Promise.allSettled(finishing);
    throw e;
  }
  await Promise.all(finishing);

  // Result sets: start position, tablespaces, end position; then BASE_BACKUP's own completion.
  const selects = results.filter((r) => r.command === 'SELECT');
  const start = selects[0]?.rows[0] as { recptr: string; tli: string | number } | undefined;
  const end = selects[2]?.rows[0] as { recptr: string; tli: string | number } | undefined;
  const tbs = (selects[1]?.rows ?? []) as { spcoid: number | null; spclocation: string | null; size: string | null }[];
  if (!start || !end) throw new BaseBackupError('BASE_BACKUP ended without its start and end positions');
  if (archivesOpened - (manifestOpened ? 1 : 0) < 1) throw new BaseBackupError('BASE_BACKUP ended without sending any archive');
  if (!manifestOpened) throw new BaseBackupError('BASE_BACKUP ended without sending the backup manifest');
  return {
    startLsn: parseLsn(start.recptr),
    startTimeline: Number(start.tli),
    endLsn: parseLsn(end.recptr),
    endTimeline: Number(end.tli),
    tablespaces: tbs.map((t) => ({ oid: t.spcoid === null ? null : Number(t.spcoid), location: t.spclocation, size: Number(t.size ?? 0) * 1024 })),
  };
}

function isDirect(t: ArchiveTarget): t is DirectArchive {
  return typeof (t as Partial<DirectArchive>).writeNow === 'function';
}

/**
 * pg reuses its read buffer, so archive data must be copied before it is
 * queued. One allocation per CopyData message (~800 MB of 32 KiB buffers for
 * a 770 MB backup) cost most of a second in allocation and collection; the
 * copies go into 1 MiB slabs instead, a slab living until the last piece cut
 * from it has been written.
 */
class CopySlab {
  static readonly SIZE = 1 << 20;
  #slab = Buffer.allocUnsafeSlow(CopySlab.SIZE);
  #used = 0;

  copy(src: Buffer): Buffer {
    if (src.length > CopySlab.SIZE / 4) return Buffer.from(src);
    if (this.#used + src.length > CopySlab.SIZE) {
      this.#slab = Buffer.allocUnsafeSlow(CopySlab.SIZE);
      this.#used = 0;
    }
    const out = this.#slab.subarray(this.#used, this.#used + src.length);
    // TypedArray#set is a plain memcpy; Buffer#copy goes through slower JS checks.
    out.set(src);
    this.#used += src.length;
    return out;
  }
}
