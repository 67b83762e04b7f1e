// The WAL a backup needs: every segment covering the manifest's WAL-Ranges must be
// in the archive, decompress to exactly wal_segment_size bytes, and carry valid
// page headers (XLogPageHeaderData, src/include/access/xlog_internal.h) up to the
// end of the range. Segments are streamed; only page headers are looked at.
//
// This does not decode WAL records (pg_waldump's job). What it proves is that the
// right files are there, whole, from this cluster and at the right addresses, which
// is what goes wrong in an archive: lost, truncated, misnamed or foreign segments.
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { formatLsn, segmentStartLsn, walFileName, type Lsn } from '../../postgres/lsn.ts';
import { createDecompressor, detectCompressionFromBytes, MAGIC_MAX_LENGTH } from '../../wal/compression.ts';
import type { ManifestWalRange } from '../manifest.ts';
import type { VerifyLedger } from './ledger.ts';
import { runLimited } from './limit.ts';

export type WalLookup = (segmentName: string) => Promise<Readable | null>;

export interface WalOptions {
  lookup: WalLookup;
  segmentSize: number;
  /** Every segment's long header must carry it, when known. */
  systemIdentifier: string | null;
  /** Server major, to know the exact XLOG_PAGE_MAGIC; unknown majors accept any plausible one. */
  pgMajor: number | null;
  concurrency: number;
  pathPrefix?: string | null;
}

// XLOG_PAGE_MAGIC by major version.
const PAGE_MAGIC: Record<number, number> = { 13: 0xd106, 14: 0xd10d, 15: 0xd110, 16: 0xd113, 17: 0xd116, 18: 0xd118 };

const SHORT_HEADER = 24; // SizeOfXLogShortPHD: magic u16, info u16, tli u32, pageaddr u64, rem_len u32, padding
const LONG_HEADER = 40; // + sysid u64, seg_size u32, xlog_blcksz u32
const XLP_LONG_HEADER = 0x0002;
const XLP_ALL_FLAGS = 0x0007;

export interface RequiredSegment {
  name: string;
  timeline: number;
  segNo: bigint;
  /** Offset in the segment up to which pages must hold WAL (the range's end, or the whole segment). */
  checkUntil: number;
  range: ManifestWalRange;
}

/** The segments covering the ranges; the one holding End-LSN only up to that point. */
export function requiredSegments(ranges: readonly ManifestWalRange[], segmentSize: number): RequiredSegment[] {
  const size = BigInt(segmentSize);
  const byName = new Map<string, RequiredSegment>();
  for (const range of ranges) {
    const first = range.startLsn / size;
    // XLByteToPrevSeg: an End-LSN on a segment boundary needs nothing of the next one.
    const last = range.endLsn > range.startLsn ? (range.endLsn - 1n) / size : first;
    for (let segNo = first; segNo <= last; segNo++) {
      const name = walFileName(range.timeline, segNo, segmentSize);
      const checkUntil = segNo === last ? Number(range.endLsn - segNo * size) : segmentSize;
      const known = byName.get(name);
      if (known === undefined) byName.set(name, { name, timeline: range.timeline, segNo, checkUntil, range });
      else known.checkUntil = Math.max(known.checkUntil, checkUntil);
    }
  }
  return [...byName.values()];
}

/** Checks every required segment; counts them and those that passed. */
export async function verifyWal(ledger: VerifyLedger, opts: WalOptions): Promise<{ required: number; verified: number }> {
  let good = 0;
  const segments = requiredSegments(ledger.manifest.walRanges, opts.segmentSize);
  await runLimited(segments, opts.concurrency, async (segment) => {
    const problem = await checkSegment(segment, opts);
    if (problem === null) good++;
    else ledger.problem(segment.name, problem);
  });
  return { required: segments.length, verified: good };
}

async function checkSegment(segment: RequiredSegment, opts: WalOptions): Promise<string | null> {
  const needed = `needed for timeline ${segment.timeline} from ${formatLsn(segment.range.startLsn)} to ${formatLsn(segment.range.endLsn)}`;
  let source: Readable | null;
  try {
    source = await opts.lookup(segment.name);
  } catch (err) {
    return `WAL segment ${segment.name} could not be read: ${(err as Error).message}`;
  }
  if (source === null) return `WAL segment ${segment.name} is missing from the archive (${needed})`;
  const checker = new SegmentChecker(segment, opts);
  try {
    const { head, stream } = await peekStream(source, MAGIC_MAX_LENGTH);
    const format = detectCompressionFromBytes(head);
    await pipeline(stream, createDecompressor(format, { pathPrefix: opts.pathPrefix ?? null }), checker);
  } catch (err) {
    if (checker.problem !== null) return `WAL segment ${segment.name}: ${checker.problem}`;
    return `WAL segment ${segment.name} could not be read: ${(err as Error).message}`;
  } finally {
    source.destroy();
  }
  if (checker.problem !== null) return `WAL segment ${segment.name}: ${checker.problem}`;
  if (checker.bytes !== opts.segmentSize) return `WAL segment ${segment.name} has ${checker.bytes} bytes, expected ${opts.segmentSize} (truncated or not a complete segment)`;
  return null;
}

/**
 * Follows the page headers as the bytes stream by: only the first 24 (40 on the
 * first page) bytes of each page are copied aside.
 */
class SegmentChecker extends Writable {
  bytes = 0;
  problem: string | null = null;
  readonly #segment: RequiredSegment;
  readonly #opts: WalOptions;
  readonly #segStart: Lsn;
  readonly #header = Buffer.alloc(LONG_HEADER);
  #need = LONG_HEADER;
  #fill = 0;
  #pageStart = 0;
  #pageSize = 8192;
  #magic: number | null;
  #lastTli = 0;
  #zeroFrom: number | null = null;

  constructor(segment: RequiredSegment, opts: WalOptions) {
    super({ highWaterMark: 1 << 17 });
    this.#segment = segment;
    this.#opts = opts;
    this.#segStart = segmentStartLsn(segment.segNo, opts.segmentSize);
    this.#magic = opts.pgMajor !== null ? (PAGE_MAGIC[opts.pgMajor] ?? null) : null;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#consume(chunk);
    this.bytes += chunk.length;
    // A wrong file (not WAL, another segment size) need not be read to its end.
    if (this.bytes > this.#opts.segmentSize) return callback(new Error(`more than ${this.#opts.segmentSize} bytes: not a WAL segment of this cluster`));
    if (this.problem !== null) return callback(new Error(this.problem));
    callback();
  }

  #consume(chunk: Buffer): void {
    const limit = Math.max(this.#segment.checkUntil, 1); // the first page always
    let pos = 0;
    while (pos < chunk.length && this.problem === null && this.#pageStart < limit) {
      const abs = this.bytes + pos;
      if (abs < this.#pageStart) {
        pos += Math.min(chunk.length - pos, this.#pageStart - abs);
        continue;
      }
      const take = Math.min(this.#need - this.#fill, chunk.length - pos);
      chunk.copy(this.#header, this.#fill, pos, pos + take);
      this.#fill += take;
      pos += take;
      if (this.#fill === this.#need) {
        this.#checkPage(this.#header.subarray(0, this.#need), this.#pageStart);
        this.#pageStart += this.#pageSize;
        this.#fill = 0;
        this.#need = SHORT_HEADER;
      }
    }
  }

  #checkPage(h: Buffer, offset: number): void {
    const at = `page at offset ${offset}`;
    const fail = (message: string): void => {
      this.problem ??= `${at}: ${message}`;
    };
    if (isZero(h.subarray(0, SHORT_HEADER))) {
      // After an XLOG_SWITCH the rest of the segment is zero pages (CopyXLogRecordToWAL).
      if (offset === 0) fail('the segment starts with an empty page (zeros), not a WAL page header');
      this.#zeroFrom ??= offset;
      return;
    }
    if (this.#zeroFrom !== null) return fail(`WAL page after the empty pages that start at offset ${this.#zeroFrom} (only a WAL switch leaves empty pages, and they run to the end of the segment)`);
    const magic = h.readUInt16LE(0);
    const info = h.readUInt16LE(2);
    const tli = h.readUInt32LE(4);
    const pageaddr = h.readBigUInt64LE(8);
    if (this.#magic === null) {
      if (magic < 0xd000 || magic > 0xd1ff) return fail(`invalid magic number 0x${hex4(magic)}: not a WAL segment (or an unknown compression/encryption)`);
      this.#magic = magic;
    } else if (magic !== this.#magic) {
      return fail(`invalid magic number 0x${hex4(magic)}, expected 0x${hex4(this.#magic)}${this.#opts.pgMajor !== null ? ` (PostgreSQL ${this.#opts.pgMajor})` : ''}`);
    }
    if ((info & ~XLP_ALL_FLAGS) !== 0) return fail(`invalid info bits 0x${hex4(info)}`);
    const expectedAddr = this.#segStart + BigInt(offset);
    if (pageaddr !== expectedAddr) return fail(`page address ${formatLsn(pageaddr)}, expected ${formatLsn(expectedAddr)} (the file holds another segment)`);
    if (tli === 0 || tli > this.#segment.timeline) return fail(`timeline ${tli} in the page header, but the segment belongs to timeline ${this.#segment.timeline}`);
    if (tli < this.#lastTli) return fail(`timeline ${tli} after timeline ${this.#lastTli} in an earlier page`);
    this.#lastTli = tli;
    if (offset === 0) {
      if ((info & XLP_LONG_HEADER) === 0) return fail('the first page has no long header');
      const sysid = h.readBigUInt64LE(24).toString();
      const segSize = h.readUInt32LE(32);
      const blcksz = h.readUInt32LE(36);
      if (this.#opts.systemIdentifier !== null && sysid !== this.#opts.systemIdentifier) return fail(`system identifier ${sysid}, expected ${this.#opts.systemIdentifier} (WAL of another cluster)`);
      if (segSize !== this.#opts.segmentSize) return fail(`segment size ${segSize} in the header, expected ${this.#opts.segmentSize}`);
      if (blcksz < 1024 || blcksz > 65536 || (blcksz & (blcksz - 1)) !== 0) return fail(`invalid WAL block size ${blcksz}`);
      this.#pageSize = blcksz;
    }
  }
}

function isZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

/**
 * Reads the first `n` bytes of a stream (fewer if it is shorter) and gives back a
 * stream that still yields everything, those bytes included.
 */
export function peekStream(stream: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const cleanup = (): void => {
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('error', onError);
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while (length < n && (chunk = stream.read() as Buffer | null) !== null) {
        chunks.push(chunk);
        length += chunk.length;
      }
      if (length >= n) {
        cleanup();
        const head = Buffer.concat(chunks);
        stream.unshift(head);
        resolve({ head, stream });
      }
    };
    const onEnd = (): void => {
      cleanup();
      // Too late to unshift onto an ended stream: hand back what was read.
      const head = Buffer.concat(chunks);
      resolve({ head, stream: Readable.from(head.length > 0 ? [head] : []) });
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    stream.on('readable', onReadable);
    stream.on('end', onEnd);
    stream.on('error', onError);
  });
}
