import { describe, expect, it } from 'vitest';
import { backupCtime, pyFixed } from '../../src/cli/commands/backup-catalog-format.ts';

// The two places where JS and Python formatting differ and Barman's output depends on it.

describe('pyFixed (Python "%.Nf")', () => {
  it('rounds exact binary ties to even, unlike toFixed', () => {
    expect(pyFixed(0.125, 2)).toBe('0.12');
    expect(pyFixed(0.375, 2)).toBe('0.38');
    expect(pyFixed(-0.125, 2)).toBe('-0.12');
    expect(pyFixed(2.5, 0)).toBe('2');
    expect(pyFixed(3.5, 0)).toBe('4');
  });

  it('agrees with toFixed everywhere else', () => {
    expect(pyFixed(1.005, 2)).toBe('1.00'); // 1.00499999999999989...
    expect(pyFixed(99.90176606178284, 2)).toBe('99.90');
    expect(pyFixed(1675.0800399, 2)).toBe('1675.08');
    expect(pyFixed(0, 2)).toBe('0.00');
  });
});

describe('backupCtime (datetime.ctime of a backup.info time)', () => {
  it('prints the wall-clock time as written, whatever the offset or the local zone', () => {
    expect(backupCtime('2026-11-21 16:05:03.135521+00:00')).toBe('Sat Nov 21 16:05:03 2026');
    expect(backupCtime('2024-01-03 00:10:00+05:30')).toBe('Wed Jan  3 00:10:00 2024');
    expect(backupCtime('2024-02-29 23:59:59')).toBe('Thu Feb 29 23:59:59 2024');
    expect(backupCtime(null)).toBe('None');
  });
});
