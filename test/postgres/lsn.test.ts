import { describe, expect, it } from 'vitest';
import { formatLsn, parseLsn, parseSegmentSize, parseWalFileName, segmentOffset, walFileName, walFileNameForLsn } from '../../src/postgres/lsn.ts';

const MB16 = 16 * 1024 * 1024;

describe('LSN arithmetic', () => {
  it('round-trips LSN text beyond 2^53', () => {
    for (const t of ['0/0', '0/16B3748', '2/B749A718', 'FFFFFFFF/FFFFFFFF']) expect(formatLsn(parseLsn(t))).toBe(t);
    expect(parseLsn('FFFFFFFF/FFFFFFFF')).toBe(2n ** 64n - 1n);
    expect(() => parseLsn('2-B7')).toThrow(/not an LSN/);
  });

  it('names segments as PostgreSQL does, for 16 MB and 1 GB segments', () => {
    // Values as pg_walfile_name() prints them on timeline 1.
    expect(walFileNameForLsn(1, parseLsn('0/4000028'), MB16)).toBe('000000010000000000000004');
    expect(walFileNameForLsn(2, parseLsn('2/B749A718'), MB16)).toBe('0000000200000002000000B7');
    expect(walFileNameForLsn(1, parseLsn('5/40000000'), 1024 ** 3)).toBe('000000010000000500000001');
    expect(segmentOffset(parseLsn('0/4000028'), MB16)).toBe(0x28);
  });

  it('parses segment names back, refusing impossible ones', () => {
    const seg = parseWalFileName('0000000200000002000000B7', MB16)!;
    expect(seg.timeline).toBe(2);
    expect(walFileName(seg.timeline, seg.segNo, MB16)).toBe('0000000200000002000000B7');
    expect(parseWalFileName('000000010000000000000100', MB16)).toBeNull();
    expect(parseWalFileName('00000001.history', MB16)).toBeNull();
  });

  it('reads wal_segment_size with its unit', () => {
    expect(parseSegmentSize('16MB')).toBe(MB16);
    expect(parseSegmentSize('1GB')).toBe(1024 ** 3);
    expect(() => parseSegmentSize('3MB')).toThrow(/power of two/);
  });
});
