// LSN and WAL segment arithmetic. LSNs are 64-bit: BigInt everywhere, never
// Number. Segment names are `%08X%08X%08X` of the timeline, the "log" (segment
// number divided by segments per 4 GiB) and the segment within that log.

export type Lsn = bigint;

export class LsnError extends Error {}

export function parseLsn(text: string): Lsn {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text.trim());
  if (!m) throw new LsnError(`'${text}' is not an LSN: expected hexadecimal 'X/Y', e.g. 0/16B3748`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

function segmentsPerLog(segmentSize: number): bigint {
  return 0x100000000n / BigInt(segmentSize);
}

export function segmentNumber(lsn: Lsn, segmentSize: number): bigint {
  return lsn / BigInt(segmentSize);
}

export function segmentStart(lsn: Lsn, segmentSize: number): Lsn {
  return lsn - (lsn % BigInt(segmentSize));
}

export function segmentOffset(lsn: Lsn, segmentSize: number): number {
  return Number(lsn % BigInt(segmentSize));
}

export function walFileName(timeline: number, segNo: bigint, segmentSize: number): string {
  const per = segmentsPerLog(segmentSize);
  return hex8(BigInt(timeline)) + hex8(segNo / per) + hex8(segNo % per);
}

export function walFileNameForLsn(timeline: number, lsn: Lsn, segmentSize: number): string {
  return walFileName(timeline, segmentNumber(lsn, segmentSize), segmentSize);
}

export interface WalSegment {
  timeline: number;
  segNo: bigint;
}

const SEGMENT_RE = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;

/** Parses a bare segment name (no suffix); null when it is not one. */
export function parseWalFileName(name: string, segmentSize: number): WalSegment | null {
  const m = SEGMENT_RE.exec(name);
  if (!m) return null;
  const per = segmentsPerLog(segmentSize);
  const seg = BigInt(`0x${m[3]}`);
  if (seg >= per) return null;
  return { timeline: parseInt(m[1]!, 16), segNo: BigInt(`0x${m[2]}`) * per + seg };
}

export function segmentStartLsn(segNo: bigint, segmentSize: number): Lsn {
  return segNo * BigInt(segmentSize);
}

export function historyFileName(timeline: number): string {
  return `${hex8(BigInt(timeline))}.history`;
}

/** `wal_segment_size` as SHOW prints it ("16MB", "1GB", "64kB"), in bytes. */
export function parseSegmentSize(text: string): number {
  const m = /^(\d+)\s*(B|kB|MB|GB)?$/.exec(text.trim());
  if (!m) throw new LsnError(`unexpected wal_segment_size '${text}'`);
  const bytes = Number(m[1]) * ({ B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[(m[2] ?? 'B') as 'B' | 'kB' | 'MB' | 'GB']);
  if (bytes < 1024 * 1024 || bytes > 1024 ** 3 || (bytes & (bytes - 1)) !== 0) {
    throw new LsnError(`wal_segment_size '${text}' is not a power of two between 1MB and 1GB`);
  }
  return bytes;
}

function hex8(n: bigint): string {
  return n.toString(16).toUpperCase().padStart(8, '0');
}
