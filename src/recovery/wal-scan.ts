// Where a point-in-time recovery will stop, found by reading archived WAL the way
// the startup process does, so that `recover --target-*` can hand the new cluster
// only the segments replay will read instead of the whole archive.
//
// The stop rules are recoveryStopsBefore()/recoveryStopsAfter() of xlogrecovery.c
// (xlog.c before PostgreSQL 15), the reading rules those of xlogreader.c: page
// headers are checked, records are reassembled across pages and segments and
// must pass their CRC-32C. Whatever xlogreader would reject is the end of valid
// WAL (a recycled segment, a torn or truncated tail): the scan then answers null,
// which the caller must take as "copy everything", never as an error.
//
// Memory stays at one page plus the record being matched: records of no interest
// (the vast majority, full-page images included) only pass through the CRC.
import type { Readable } from 'node:stream';
import { CRC32C_INIT, crc32cFinal, crc32cUpdate } from '../backup/verify/crc32c.ts';
import { formatLsn, parseLsn, parseWalFileName } from '../postgres/lsn.ts';

export type ScanTarget =
  /**
   * `micros`: microseconds since the Unix epoch (UTC). `inclusive` (default true,
   * like recovery_target_inclusive) decides which record ends replay: the first
   * commit/abort whose time is > micros when inclusive, >= micros when not.
   */
  | { kind: 'time'; micros: bigint; inclusive?: boolean }
  /**
   * A 32-bit TransactionId: the commit or abort of that transaction, whatever
   * recovery_target_inclusive says (it only decides whether that record is replayed).
   */
  | { kind: 'xid'; xid: number }
  /** The first restore point (pg_create_restore_point) of that name. */
  | { kind: 'name'; name: string };

export interface ScanSegment {
  /** 24 hexadecimal digits, no suffix. */
  name: string;
  /** The uncompressed segment bytes; the stream is destroyed once no longer needed. */
  open(): Promise<Readable>;
}

/**
 * The record that ends replay. Recovery reads it in every case; it replays it
 * for a restore point and an inclusive xid target, not for a time target or an
 * exclusive xid target.
 */
export interface StopPoint {
  /**
   * The segment holding the record's last byte: the last one replay must read.
   * It differs from the segment of `lsn` only when the record crosses a segment
   * boundary.
   */
  segment: string;
  /** Start of the record, 'X/Y' as PostgreSQL prints it. */
  lsn: string;
  kind: 'commit' | 'abort' | 'restore-point';
  /** xact_time of a commit/abort, rp_time of a restore point, as Unix microseconds. */
  micros: bigint | null;
  /** The transaction that ended (for *_PREPARED the prepared one); null for restore points. */
  xid: number | null;
}

export interface ScanOptions {
  /** wal_segment_size in bytes. */
  segmentSize: number;
  /** The backup's start (its checkpoint redo point): earlier records are never a stop point. */
  startLsn?: string;
  /**
   * server_version_num of the server that wrote the WAL, for the layouts that
   * differ between releases. The page magic of a release already tells them, so
   * this only matters for a development build's WAL: the page flag bits (master,
   * the future 19, renumbered XLP_FIRST_IS_OVERWRITE_CONTRECORD), full-page image
   * flags (one per wal_compression method since 15) and the size of a
   * dropped-statistics entry (12 bytes in 15-17, 16 from 18), which comes before
   * the prepared xid in COMMIT PREPARED / ROLLBACK PREPARED records.
   */
  pgVersion?: number;
  signal?: AbortSignal;
}

/**
 * Scans `segments` (consecutive, one timeline, in order) for the record at which
 * a recovery to `target` stops. Null when the segments run out, have a gap, or
 * the WAL stops being valid before such a record: the caller then cannot
 * shorten the WAL it restores. Throws only on bad arguments, a failing
 * `open()`/stream, or abort.
 *
 * The WAL up to the backup's end is needed whatever this says: PostgreSQL
 * refuses a stop point before the backup is consistent, which this does not judge.
 */
export async function findStopPoint(
  segments: AsyncIterable<ScanSegment> | Iterable<ScanSegment>,
  target: ScanTarget,
  opts: ScanOptions,
): Promise<StopPoint | null> {
  const { segmentSize, signal } = opts;
  if (!Number.isInteger(segmentSize) || segmentSize < 1 << 20 || segmentSize > 1 << 30 || (segmentSize & (segmentSize - 1)) !== 0) {
    throw new RangeError(`segmentSize ${segmentSize} is not a power of two between 1 MiB and 1 GiB`);
  }
  const matcher = makeMatcher(target);
  const start = opts.startLsn === undefined ? null : parseLsn(opts.startLsn);
  const startSegNo = start === null ? -1n : start / BigInt(segmentSize);
  const scanner = new WalScanner(segmentSize, matcher, start, opts.pgVersion);
  signal?.throwIfAborted();

  let expected: { timeline: number; segNo: bigint } | null = null;
  for await (const seg of segments) {
    signal?.throwIfAborted();
    const parsed = parseWalFileName(seg.name, segmentSize);
    if (parsed === null) throw new Error(`'${seg.name}' is not a WAL segment name for ${segmentSize}-byte segments`);
    if (expected !== null && (parsed.timeline !== expected.timeline || parsed.segNo !== expected.segNo)) return null;
    expected = { timeline: parsed.timeline, segNo: parsed.segNo + 1n };
    // Wholly before the backup: replay never reads it, so it is not even opened.
    if (parsed.segNo < startSegNo) continue;
    const outcome = await scanner.scanSegment(seg.name, parsed.segNo, await seg.open(), signal);
    if (outcome === END) return null;
    if (scanner.found !== null) return scanner.found;
  }
  return null;
}

// --- formats ------------------------------------------------------------------

const SIZE_OF_XLOG_RECORD = 24;
const XL_CRC_OFFSET = 20;
const SIZE_OF_SHORT_PHD = 24;
const SIZE_OF_LONG_PHD = 40;
const XLP_FIRST_IS_CONTRECORD = 0x0001;
const XLP_LONG_HEADER = 0x0002;
// MaxAllocSize: xlogreader cannot even allocate a longer record.
const MAX_RECORD_LENGTH = 0x3fffffff;

const RM_XLOG_ID = 0;
const RM_XACT_ID = 1;
const XLOG_SWITCH = 0x40;
const XLOG_RESTORE_POINT = 0x70;
const XLOG_XACT_COMMIT = 0x00;
const XLOG_XACT_ABORT = 0x20;
const XLOG_XACT_COMMIT_PREPARED = 0x30;
const XLOG_XACT_ABORT_PREPARED = 0x40;
const XLOG_XACT_OPMASK = 0x70;
const XLOG_XACT_HAS_INFO = 0x80;
const XACT_XINFO_HAS_DBINFO = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS = 1 << 1;
const XACT_XINFO_HAS_RELFILELOCATORS = 1 << 2;
const XACT_XINFO_HAS_INVALS = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE = 1 << 4;
const XACT_XINFO_HAS_DROPPED_STATS = 1 << 8;
const SIZEOF_RELFILELOCATOR = 12;
const SIZEOF_SHARED_INVAL_MESSAGE = 16;

const XLR_MAX_BLOCK_ID = 32;
const XLR_BLOCK_ID_DATA_SHORT = 255;
const XLR_BLOCK_ID_DATA_LONG = 254;
const XLR_BLOCK_ID_ORIGIN = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID = 252;
const BKPBLOCK_HAS_IMAGE = 0x10;
const BKPBLOCK_HAS_DATA = 0x20;
const BKPBLOCK_SAME_REL = 0x80;
const BKPIMAGE_HAS_HOLE = 0x01;
// bimg_info compression bits: one flag up to 14, one per method (pglz, lz4, zstd) since 15.
const BKPIMAGE_COMPRESSED_LEGACY = 0x02;
const BKPIMAGE_COMPRESSED_15 = 0x04 | 0x08 | 0x10;

const MAXFNAMELEN = 64;
// TimestampTz counts from 2000-01-01 00:00:00 UTC.
const PG_EPOCH_UNIX_MICROS = 946_684_800_000_000n;

// XLOG_PAGE_MAGIC of each release; it changes whenever the WAL format does.
const RELEASE_MAGICS = new Map<number, number>([
  [0xd106, 13],
  [0xd10d, 14],
  [0xd110, 15],
  [0xd113, 16],
  [0xd116, 17],
  [0xd118, 18],
]);
// The record format read here is unchanged since 10 (0xD097); anything outside
// this family of magics is not PostgreSQL WAL this code understands.
const MIN_MAGIC = 0xd097;
const MAX_MAGIC = 0xd1ff;

interface Layout {
  /** XLP_FIRST_IS_OVERWRITE_CONTRECORD and XLP_ALL_FLAGS. */
  overwriteFlag: number;
  allPageFlags: number;
  imageCompressedMask: number;
  statsItemSize: number;
}

function layoutFor(magic: number, pgVersion: number | undefined): Layout {
  const release = RELEASE_MAGICS.get(magic);
  // An unknown magic is a development build: pgVersion tells, else its place
  // between the releases' magics is the best guess.
  let major = release ?? 0;
  if (major === 0 && pgVersion !== undefined) major = Math.floor(pgVersion / 10000);
  else if (major === 0) major = magic <= 0xd10d ? 14 : magic < 0xd118 ? 17 : 19;
  return {
    // Up to 18, 0x0004 is XLP_BKP_REMOVABLE; master (19) dropped it and renumbered.
    overwriteFlag: major >= 19 ? 0x0004 : 0x0008,
    allPageFlags: major >= 19 ? 0x0007 : 0x000f,
    imageCompressedMask: major >= 15 ? BKPIMAGE_COMPRESSED_15 : BKPIMAGE_COMPRESSED_LEGACY,
    // {int kind; Oid dboid; Oid objoid} until 17, objid split in two uint32 since 18.
    statsItemSize: major >= 18 ? 16 : 12,
  };
}

// --- matching -----------------------------------------------------------------

interface Matcher {
  /** From the record header: whether the record body must be kept and looked at. */
  wants(rmid: number, info: number, xid: number): boolean;
  /** The stop point this record makes, null if none, END if its data is malformed. */
  check(rmid: number, info: number, xid: number, main: Buffer, layout: Layout): Omit<StopPoint, 'segment' | 'lsn'> | null | typeof END;
}

function isXactEnd(rmid: number, info: number): boolean {
  if (rmid !== RM_XACT_ID) return false;
  const op = info & XLOG_XACT_OPMASK;
  return op === XLOG_XACT_COMMIT || op === XLOG_XACT_ABORT || op === XLOG_XACT_COMMIT_PREPARED || op === XLOG_XACT_ABORT_PREPARED;
}

interface XactEnd {
  kind: 'commit' | 'abort';
  micros: bigint;
  xid: number;
}

/** xact_time and the ending transaction of a commit/abort record (ParseCommitRecord/ParseAbortRecord). */
function parseXactEnd(info: number, headerXid: number, main: Buffer, layout: Layout): XactEnd | null {
  if (main.length < 8) return null;
  const op = info & XLOG_XACT_OPMASK;
  const isCommit = op === XLOG_XACT_COMMIT || op === XLOG_XACT_COMMIT_PREPARED;
  const kind = isCommit ? 'commit' : 'abort';
  const micros = main.readBigInt64LE(0) + PG_EPOCH_UNIX_MICROS;
  // The header carries the xid of the session that ran COMMIT/ROLLBACK PREPARED,
  // not of the prepared transaction.
  if (op !== XLOG_XACT_COMMIT_PREPARED && op !== XLOG_XACT_ABORT_PREPARED) return { kind, micros, xid: headerXid };

  let p = 8;
  let xinfo = 0;
  const counted = (itemSize: number): boolean => {
    if (p + 4 > main.length) return false;
    const n = main.readInt32LE(p);
    if (n < 0) return false;
    p += 4 + n * itemSize;
    return p <= main.length;
  };
  if (info & XLOG_XACT_HAS_INFO) {
    if (p + 4 > main.length) return null;
    xinfo = main.readUInt32LE(p);
    p += 4;
  }
  if (xinfo & XACT_XINFO_HAS_DBINFO) p += 8;
  if (xinfo & XACT_XINFO_HAS_SUBXACTS && !counted(4)) return null;
  if (xinfo & XACT_XINFO_HAS_RELFILELOCATORS && !counted(SIZEOF_RELFILELOCATOR)) return null;
  if (xinfo & XACT_XINFO_HAS_DROPPED_STATS && !counted(layout.statsItemSize)) return null;
  // Abort records carry no invalidation messages.
  if (isCommit && xinfo & XACT_XINFO_HAS_INVALS && !counted(SIZEOF_SHARED_INVAL_MESSAGE)) return null;
  if (!(xinfo & XACT_XINFO_HAS_TWOPHASE)) return { kind, micros, xid: 0 };
  if (p + 4 > main.length) return null;
  return { kind, micros, xid: main.readUInt32LE(p) };
}

function makeMatcher(target: ScanTarget): Matcher {
  switch (target.kind) {
    case 'time': {
      if (typeof target.micros !== 'bigint') throw new TypeError('time target: micros must be a bigint');
      const { micros } = target;
      const inclusive = target.inclusive ?? true;
      return {
        wants: isXactEnd,
        check(_rmid, info, xid, main, layout) {
          const x = parseXactEnd(info, xid, main, layout);
          if (x === null) return END;
          // Transactions sharing the target time are replayed when inclusive.
          return (inclusive ? x.micros > micros : x.micros >= micros) ? x : null;
        },
      };
    }
    case 'xid': {
      const wanted = target.xid;
      if (!Number.isInteger(wanted) || wanted < 0 || wanted > 0xffffffff) {
        throw new RangeError(`xid target ${wanted} is not a 32-bit transaction id`);
      }
      return {
        wants(rmid, info, xid) {
          if (!isXactEnd(rmid, info)) return false;
          const op = info & XLOG_XACT_OPMASK;
          return xid === wanted || op === XLOG_XACT_COMMIT_PREPARED || op === XLOG_XACT_ABORT_PREPARED;
        },
        check(_rmid, info, xid, main, layout) {
          const x = parseXactEnd(info, xid, main, layout);
          if (x === null) return END;
          return x.xid === wanted ? x : null;
        },
      };
    }
    case 'name': {
      const name = Buffer.from(target.name, 'utf8');
      // recovery_target_name refuses such names, so no restore point can match them.
      if (name.length >= MAXFNAMELEN || name.includes(0)) {
        throw new RangeError(`restore point name '${target.name}' is not shorter than ${MAXFNAMELEN} bytes without NUL`);
      }
      return {
        wants: (rmid, info) => rmid === RM_XLOG_ID && (info & 0xf0) === XLOG_RESTORE_POINT,
        check(_rmid, _info, _xid, main) {
          if (main.length < 8 + MAXFNAMELEN) return END;
          let end = 8;
          while (end < 8 + MAXFNAMELEN && main[end] !== 0) end++;
          if (!main.subarray(8, end).equals(name)) return null;
          return { kind: 'restore-point', micros: main.readBigInt64LE(0) + PG_EPOCH_UNIX_MICROS, xid: null };
        },
      };
    }
    default:
      throw new TypeError(`unknown target kind '${(target as { kind: unknown }).kind}'`);
  }
}

/**
 * The main data of a record body (everything after the 24-byte header), found
 * through the block reference headers as DecodeXLogRecord does; null where it
 * would report the record invalid. The checks that need BLCKSZ are left out:
 * the data block size is not recorded in WAL.
 */
function mainData(body: Buffer, layout: Layout): Buffer | null {
  const n = body.length;
  let p = 0;
  let dataTotal = 0;
  let mainLength = 0;
  let maxBlockId = -1;
  let haveRel = false;
  while (n - p > dataTotal) {
    const id = body[p++]!;
    if (id === XLR_BLOCK_ID_DATA_SHORT) {
      if (n - p < 1) return null;
      mainLength = body[p++]!;
      dataTotal += mainLength;
      break; // by convention the main data header is the last one
    } else if (id === XLR_BLOCK_ID_DATA_LONG) {
      if (n - p < 4) return null;
      mainLength = body.readUInt32LE(p);
      p += 4;
      dataTotal += mainLength;
      break;
    } else if (id === XLR_BLOCK_ID_ORIGIN) {
      p += 2;
    } else if (id === XLR_BLOCK_ID_TOPLEVEL_XID) {
      p += 4;
    } else if (id <= XLR_MAX_BLOCK_ID) {
      if (id <= maxBlockId) return null;
      maxBlockId = id;
      if (n - p < 3) return null;
      const forkFlags = body[p]!;
      const dataLength = body.readUInt16LE(p + 1);
      p += 3;
      if (((forkFlags & BKPBLOCK_HAS_DATA) !== 0) !== (dataLength > 0)) return null;
      dataTotal += dataLength;
      if (forkFlags & BKPBLOCK_HAS_IMAGE) {
        if (n - p < 5) return null;
        const imageLength = body.readUInt16LE(p);
        const holeOffset = body.readUInt16LE(p + 2);
        const imageInfo = body[p + 4]!;
        p += 5;
        const hasHole = (imageInfo & BKPIMAGE_HAS_HOLE) !== 0;
        if ((imageInfo & layout.imageCompressedMask) !== 0) {
          if (hasHole) {
            if (n - p < 2) return null;
            const holeLength = body.readUInt16LE(p);
            p += 2;
            if (holeOffset === 0 || holeLength === 0) return null;
          }
        } else if (hasHole && holeOffset === 0) {
          return null;
        }
        if (!hasHole && holeOffset !== 0) return null;
        dataTotal += imageLength;
      }
      if (!(forkFlags & BKPBLOCK_SAME_REL)) {
        p += SIZEOF_RELFILELOCATOR;
        haveRel = true;
      } else if (!haveRel) {
        return null;
      }
      p += 4; // BlockNumber
    } else {
      return null;
    }
    if (p > n) return null;
  }
  if (p > n || n - p !== dataTotal) return null;
  return body.subarray(n - mainLength);
}

// --- reading --------------------------------------------------------------------

// Outcomes of a page or record; END: the WAL is no longer valid here.
const CONTINUE = 0;
const END = 1;
const FOUND = 2;
const SWITCH = 3;
type Outcome = typeof CONTINUE | typeof END | typeof FOUND | typeof SWITCH;

// Reading position relative to records: before the first record boundary (the
// first page may open with the tail of an earlier record), expecting a record
// header, or inside a record body.
const SEEK = 0;
const HEADER = 1;
const BODY = 2;

const align8 = (n: number): number => (n + 7) & ~7;

class WalScanner {
  found: StopPoint | null = null;

  private readonly segmentSize: number;
  private readonly matcher: Matcher;
  private readonly startHi: number;
  private readonly startLo: number;
  private readonly pgVersion: number | undefined;

  // Learnt from the first page and then required of every page.
  private pageSize = 0;
  private magic = -1;
  private sysid = -1n;
  private layout: Layout = layoutFor(0, undefined);
  private lastTli = 0;

  // The segment being read; LSNs are kept as two uint32 halves, and a segment
  // never crosses a 4 GiB boundary, so its high half is constant.
  private segName = '';
  private segHi = 0;
  private segLo = 0;
  private pageOff = 0;
  private readonly carry = Buffer.alloc(65536); // XLOG_BLCKSZ is at most 64 KiB
  private carryLen = 0;

  private state = SEEK;
  private recHi = 0;
  private recLo = 0;
  private prevHi = -1;
  private prevLo = 0;
  private readonly header = Buffer.alloc(SIZE_OF_XLOG_RECORD);
  private headerGot = 0;
  private totLen = 0;
  private gotLen = 0;
  private crc = 0;
  // The body of a record the matcher wants, when it spans pages: copied piece by
  // piece as it arrives, so a bogus xl_tot_len (its CRC is not checked yet) costs
  // no more memory than the bytes actually read before the next page rejects it.
  private bodyParts: Buffer[] | null = null;
  private wanted = false;

  constructor(segmentSize: number, matcher: Matcher, start: bigint | null, pgVersion: number | undefined) {
    this.segmentSize = segmentSize;
    this.matcher = matcher;
    this.startHi = start === null ? 0 : Number(start >> 32n);
    this.startLo = start === null ? 0 : Number(start & 0xffffffffn);
    this.pgVersion = pgVersion;
  }

  /** Reads one segment; END when the WAL stops being valid in it (a truncated file included). */
  async scanSegment(name: string, segNo: bigint, stream: Readable, signal: AbortSignal | undefined): Promise<Outcome> {
    const startLsn = segNo * BigInt(this.segmentSize);
    this.segName = name;
    this.segHi = Number(startLsn >> 32n);
    this.segLo = Number(startLsn & 0xffffffffn);
    this.pageOff = 0;
    this.carryLen = 0;
    try {
      for await (const raw of stream) {
        signal?.throwIfAborted();
        if (typeof raw === 'string') throw new TypeError(`segment ${name}: the stream yields strings, not bytes`);
        const bytes = raw as Uint8Array;
        const chunk = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        let i = 0;
        while (i < chunk.length) {
          let r: Outcome;
          if (this.pageSize === 0) {
            // Page size and format come from the first long page header.
            const n = Math.min(SIZE_OF_LONG_PHD - this.carryLen, chunk.length - i);
            chunk.copy(this.carry, this.carryLen, i, i + n);
            this.carryLen += n;
            i += n;
            if (this.carryLen < SIZE_OF_LONG_PHD) continue;
            if (!this.learnFormat(this.carry)) return END;
            continue;
          }
          const size = this.pageSize;
          if (this.carryLen > 0 || chunk.length - i < size) {
            const n = Math.min(size - this.carryLen, chunk.length - i);
            chunk.copy(this.carry, this.carryLen, i, i + n);
            this.carryLen += n;
            i += n;
            if (this.carryLen < size) continue;
            this.carryLen = 0;
            r = this.page(this.carry, 0);
          } else {
            r = this.page(chunk, i);
            i += size;
          }
          if (r === SWITCH) return CONTINUE; // the rest of the segment is unused
          if (r !== CONTINUE) return r;
          this.pageOff += size;
          if (this.pageOff === this.segmentSize) return CONTINUE;
        }
      }
    } finally {
      stream.destroy();
    }
    return END;
  }

  private learnFormat(buf: Buffer): boolean {
    const magic = buf.readUInt16LE(0);
    const info = buf.readUInt16LE(2);
    const blcksz = buf.readUInt32LE(36);
    if (magic < MIN_MAGIC || magic > MAX_MAGIC || !(info & XLP_LONG_HEADER)) return false;
    if (blcksz < 1024 || blcksz > 65536 || (blcksz & (blcksz - 1)) !== 0 || this.segmentSize % blcksz !== 0) return false;
    this.pageSize = blcksz;
    this.magic = magic;
    this.layout = layoutFor(magic, this.pgVersion);
    return true;
  }

  /** One page at buf[base, base + pageSize) (XLogReaderValidatePageHeader, then the records on it). */
  private page(buf: Buffer, base: number): Outcome {
    const size = this.pageSize;
    const info = buf.readUInt16LE(base + 2);
    const tli = buf.readUInt32LE(base + 4);
    if (buf.readUInt16LE(base) !== this.magic || info & ~this.layout.allPageFlags) return END;
    // A recycled segment still holds the pages of its former life.
    if (buf.readUInt32LE(base + 8) !== ((this.segLo + this.pageOff) >>> 0) || buf.readUInt32LE(base + 12) !== this.segHi) return END;
    if (tli < this.lastTli) return END;
    this.lastTli = tli;
    let pos = base + SIZE_OF_SHORT_PHD;
    if (info & XLP_LONG_HEADER) {
      const sysid = buf.readBigUInt64LE(base + 24);
      if (this.sysid === -1n) this.sysid = sysid;
      if (sysid !== this.sysid || buf.readUInt32LE(base + 32) !== this.segmentSize || buf.readUInt32LE(base + 36) !== size) return END;
      pos = base + SIZE_OF_LONG_PHD;
    } else if (this.pageOff === 0) {
      return END;
    }
    const remLen = buf.readUInt32LE(base + 16);
    const end = base + size;

    if (this.state === SEEK) {
      // XLogFindNextRecord: step over the tail of a record begun before our first page.
      if (info & XLP_FIRST_IS_CONTRECORD) {
        if (align8(remLen) >= end - pos) return CONTINUE;
        pos += align8(remLen);
      }
      this.state = HEADER;
      this.headerGot = 0;
    } else if (this.state === HEADER && this.headerGot === 0) {
      if (info & XLP_FIRST_IS_CONTRECORD) return END;
    } else if (info & this.layout.overwriteFlag) {
      // The server crashed before finishing the record and later wrote new WAL
      // where its continuation should have been: the partial record never existed.
      this.state = HEADER;
      this.headerGot = 0;
      this.bodyParts = null;
    } else {
      const got = this.state === BODY ? this.gotLen : this.headerGot;
      if (!(info & XLP_FIRST_IS_CONTRECORD) || remLen === 0 || remLen !== this.totLen - got) return END;
    }

    while (pos < end) {
      if (this.state === HEADER) {
        if (this.headerGot === 0) {
          this.recHi = this.segHi;
          this.recLo = (this.segLo + this.pageOff + (pos - base)) >>> 0;
          const avail = end - pos;
          const totLen = buf.readUInt32LE(pos);
          if (totLen < SIZE_OF_XLOG_RECORD || totLen > MAX_RECORD_LENGTH) return END;
          this.totLen = totLen;
          if (avail < SIZE_OF_XLOG_RECORD) {
            // Only xl_tot_len is sure to be on this page; the rest follows on the next.
            buf.copy(this.header, 0, pos, end);
            this.headerGot = avail;
            return CONTINUE;
          }
          if (!this.validHeader(buf, pos)) return END;
          const rmid = buf[pos + 17]!;
          const rinfo = buf[pos + 16]!;
          const xid = buf.readUInt32LE(pos + 4);
          this.wanted = this.matcher.wants(rmid, rinfo, xid) && this.atOrAfterStart();
          if (totLen <= avail) {
            // The common case: the whole record on this page, checked in place.
            const recEnd = pos + totLen;
            let crc = CRC32C_INIT;
            if (totLen > SIZE_OF_XLOG_RECORD) crc = crc32cUpdate(crc, buf.subarray(pos + SIZE_OF_XLOG_RECORD, recEnd));
            crc = crc32cUpdate(crc, buf.subarray(pos, pos + XL_CRC_OFFSET));
            if (crc32cFinal(crc) !== buf.readUInt32LE(pos + XL_CRC_OFFSET)) return END;
            const r = this.record(rmid, rinfo, xid, this.wanted ? buf.subarray(pos + SIZE_OF_XLOG_RECORD, recEnd) : null);
            if (r !== CONTINUE) return r;
            pos = base + align8(recEnd - base);
            continue;
          }
          buf.copy(this.header, 0, pos, pos + SIZE_OF_XLOG_RECORD);
          pos += SIZE_OF_XLOG_RECORD;
        } else {
          const need = SIZE_OF_XLOG_RECORD - this.headerGot;
          buf.copy(this.header, this.headerGot, pos, pos + need);
          pos += need;
          if (!this.validHeader(this.header, 0)) return END;
          this.wanted = this.matcher.wants(this.header[17]!, this.header[16]!, this.header.readUInt32LE(4)) && this.atOrAfterStart();
        }
        this.headerGot = SIZE_OF_XLOG_RECORD;
        this.gotLen = SIZE_OF_XLOG_RECORD;
        this.crc = CRC32C_INIT;
        this.bodyParts = this.wanted ? [] : null;
        this.state = BODY;
      }

      const take = Math.min(this.totLen - this.gotLen, end - pos);
      if (take > 0) {
        this.crc = crc32cUpdate(this.crc, buf.subarray(pos, pos + take));
        if (this.bodyParts !== null) this.bodyParts.push(Buffer.from(buf.subarray(pos, pos + take)));
        this.gotLen += take;
        pos += take;
      }
      if (this.gotLen < this.totLen) return CONTINUE;
      const h = this.header;
      const crc = crc32cFinal(crc32cUpdate(this.crc, h.subarray(0, XL_CRC_OFFSET)));
      if (crc !== h.readUInt32LE(XL_CRC_OFFSET)) return END;
      const body = this.bodyParts === null ? null : Buffer.concat(this.bodyParts, this.totLen - SIZE_OF_XLOG_RECORD);
      this.bodyParts = null;
      this.state = HEADER;
      this.headerGot = 0;
      const r = this.record(h[17]!, h[16]!, h.readUInt32LE(4), body);
      if (r !== CONTINUE) return r;
      pos = base + align8(pos - base);
    }
    return CONTINUE;
  }

  /** ValidXLogRecordHeader, less the rmgr id check (the CRC covers it). */
  private validHeader(buf: Buffer, at: number): boolean {
    if (this.prevHi === -1) return true;
    return buf.readUInt32LE(at + 8) === this.prevLo && buf.readUInt32LE(at + 12) === this.prevHi;
  }

  private atOrAfterStart(): boolean {
    return this.recHi > this.startHi || (this.recHi === this.startHi && this.recLo >= this.startLo);
  }

  /** A complete record that passed its CRC; `body` only when the matcher wants it. */
  private record(rmid: number, info: number, xid: number, body: Buffer | null): Outcome {
    this.prevHi = this.recHi;
    this.prevLo = this.recLo;
    if (body !== null) {
      const main = mainData(body, this.layout);
      if (main === null) return END;
      const hit = this.matcher.check(rmid, info, xid, main, this.layout);
      if (hit === END) return END;
      if (hit !== null) {
        this.found = {
          segment: this.segName,
          lsn: formatLsn((BigInt(this.recHi) << 32n) | BigInt(this.recLo)),
          kind: hit.kind,
          micros: hit.micros,
          xid: hit.xid,
        };
        return FOUND;
      }
    }
    if (rmid === RM_XLOG_ID && (info & 0xf0) === XLOG_SWITCH) return SWITCH;
    return CONTINUE;
  }
}
