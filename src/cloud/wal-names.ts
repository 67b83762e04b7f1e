// WAL file names as the cloud WAL commands meet them: which kinds exist
// (segments, .partial, .backup labels, .history), which timeline they belong
// to, and which segments follow one (for restore's prefetch). Names follow
// Barman's xlog._xlog_re (src/catalog/layout.ts isWalFileName).
import { isWalFileName } from '../catalog/layout.ts';

export { isWalFileName };

const SEGMENT_RE = /^([0-9A-Fa-f]{8})([0-9A-Fa-f]{8})([0-9A-Fa-f]{8})$/;

/** PostgreSQL's default wal_segment_size, assumed until a segment's size says otherwise. */
export const DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024;

/** A plain segment name (no .partial, .backup or .history). */
export function isSegmentName(name: string): boolean {
  return SEGMENT_RE.test(name);
}

export function isHistoryName(name: string): boolean {
  return isWalFileName(name) && name.endsWith('.history');
}

/** The timeline every WAL file name starts with. */
export function timelineOf(name: string): number {
  return parseInt(name.slice(0, 8), 16);
}

/** Whether `bytes` can be the size of a whole segment (a power of two from 1 MiB to 1 GiB). */
export function isSegmentSize(bytes: number): boolean {
  return bytes >= 1024 * 1024 && bytes <= 1024 ** 3 && (bytes & (bytes - 1)) === 0;
}

/**
 * The `count` segment names after `name` on the same timeline, for segments of
 * `segmentSize` bytes (the last part of a name counts segments within one 4 GiB
 * "log"). Empty for anything that is not a plain segment name.
 */
export function nextSegmentNames(name: string, count: number, segmentSize: number): string[] {
  const m = SEGMENT_RE.exec(name);
  if (!m || count <= 0 || !isSegmentSize(segmentSize)) return [];
  const perLog = 0x100000000 / segmentSize;
  let log = parseInt(m[2]!, 16);
  let seg = parseInt(m[3]!, 16);
  if (seg >= perLog) return [];
  const tli = m[1]!.toUpperCase();
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    seg++;
    if (seg >= perLog) {
      seg = 0;
      log++;
      if (log > 0xffffffff) break;
    }
    out.push(tli + hex8(log) + hex8(seg));
  }
  return out;
}

/** Compares segment names of one timeline by position (names are fixed-width hex). */
export function compareWalNames(a: string, b: string): number {
  const x = a.toUpperCase();
  const y = b.toUpperCase();
  return x < y ? -1 : x > y ? 1 : 0;
}

function hex8(n: number): string {
  return n.toString(16).toUpperCase().padStart(8, '0');
}
