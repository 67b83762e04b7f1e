import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { segmentNumber, segmentOffset, segmentStartLsn, walFileName, type Lsn } from '../postgres/lsn.ts';

// Writes streamed WAL into streaming/ the way pg_receivewal names it: the
// segment being filled is `<name>.partial`, written with pwrite at its offset,
// and takes its final name only once complete and fsynced (then the directory
// is fsynced). Everything is synchronous on purpose: the receiver calls it
// from pg's message handler, so while the disk is busy no more data is read
// from the socket and TCP flow control slows the server down.
//
// `flushedLsn` only moves after an fsync: it is what the receiver may report
// to PostgreSQL as flushed, and so what lets the slot release WAL.

export interface SegmentWriterEvents {
  onSegmentComplete?: (name: string) => void;
}

export class GapError extends Error {}

export class SegmentWriter {
  private readonly dir: string;
  private readonly segmentSize: number;
  private readonly events: SegmentWriterEvents;
  private timeline: number;
  private fd: number | null = null;
  private segNo = -1n;
  private partialName = '';
  private dirty = false;
  /** End of the data written so far (last byte + 1). */
  writtenLsn: Lsn;
  /** End of the data known to be on disk. */
  flushedLsn: Lsn;

  constructor(dir: string, segmentSize: number, timeline: number, startLsn: Lsn, events: SegmentWriterEvents = {}) {
    if (startLsn % BigInt(segmentSize) !== 0n) throw new Error('a segment writer must start at a segment boundary');
    this.dir = dir;
    this.segmentSize = segmentSize;
    this.timeline = timeline;
    this.events = events;
    this.writtenLsn = startLsn;
    this.flushedLsn = startLsn;
  }

  get currentTimeline(): number {
    return this.timeline;
  }

  /** Writes `data` that starts at `lsn`, which must be exactly where the last write ended. */
  write(lsn: Lsn, data: Buffer): void {
    if (lsn !== this.writtenLsn) {
      throw new GapError(`WAL data starts at ${lsn.toString(16)} but ${this.writtenLsn.toString(16)} was expected: refusing to leave a gap`);
    }
    let offset = 0;
    while (offset < data.length) {
      const pos = this.writtenLsn;
      this.ensureSegment(pos);
      const inSegment = segmentOffset(pos, this.segmentSize);
      const n = Math.min(data.length - offset, this.segmentSize - inSegment);
      let done = 0;
      while (done < n) done += writeSync(this.fd!, data, offset + done, n - done, inSegment + done);
      offset += n;
      this.writtenLsn = pos + BigInt(n);
      this.dirty = true;
      if (inSegment + n === this.segmentSize) this.completeSegment();
    }
  }

  /** fsync what was written; afterwards flushedLsn === writtenLsn. */
  flush(): void {
    if (this.fd !== null && this.dirty) fsyncSync(this.fd);
    this.dirty = false;
    this.flushedLsn = this.writtenLsn;
  }

  /**
   * Ends the current file without completing it: it stays `.partial` (a
   * timeline switch, a stop, a lost connection). The next write may only
   * continue where this one ended.
   */
  closePartial(): void {
    this.flush();
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    this.segNo = -1n;
  }

  /** Continue on another timeline from a segment boundary (after closePartial). */
  switchTimeline(timeline: number, startLsn: Lsn): void {
    this.closePartial();
    if (startLsn % BigInt(this.segmentSize) !== 0n) throw new Error('a new timeline must start at a segment boundary');
    this.timeline = timeline;
    this.writtenLsn = startLsn;
    this.flushedLsn = startLsn;
  }

  private ensureSegment(lsn: Lsn): void {
    const segNo = segmentNumber(lsn, this.segmentSize);
    if (this.fd !== null && segNo === this.segNo) return;
    const name = walFileName(this.timeline, segNo, this.segmentSize);
    this.partialName = `${name}.partial`;
    const fd = openSync(join(this.dir, this.partialName), constants.O_RDWR | constants.O_CREAT, 0o600);
    // Full size from the start, as pg_receivewal leaves it: a .partial is
    // always 0 or segment-size bytes, which is how Barman tells a sane one.
    if (fstatSync(fd).size !== this.segmentSize) ftruncateSync(fd, this.segmentSize);
    this.fd = fd;
    this.segNo = segNo;
  }

  private completeSegment(): void {
    this.flush();
    closeSync(this.fd!);
    this.fd = null;
    const final = this.partialName.slice(0, -'.partial'.length);
    renameSync(join(this.dir, this.partialName), join(this.dir, final));
    fsyncDirSync(this.dir);
    this.segNo = -1n;
    this.events.onSegmentComplete?.(final);
  }
}

export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function segmentEnd(lsn: Lsn, segmentSize: number): Lsn {
  return segmentStartLsn(segmentNumber(lsn, segmentSize) + 1n, segmentSize);
}
