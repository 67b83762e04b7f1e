import { afterEach, describe, expect, it } from 'vitest';
import type { BackupStatus } from '../../src/catalog/backup-info.ts';
import type { KeepTarget } from '../../src/catalog/catalog.ts';
import { parseRetentionPolicy } from '../../src/config/retention-policy.ts';
import { pointOfRecoverability, type RetentionCandidate, retentionReport, retentionStatusOf } from '../../src/backup/retention.ts';

// Retention reports computed by hand from Barman's algorithms (retention_policies.py):
// newest to oldest, only DONE backups rated, kept backups counted, incremental
// chains following their root.

interface Spec {
  status?: BackupStatus;
  /** End time as an ISO string; defaults to one hour after the ID's time (UTC). */
  end?: string;
  keep?: KeepTarget;
  parent?: string;
  children?: string[];
}

function backups(specs: Record<string, Spec>): RetentionCandidate[] {
  return Object.entries(specs).map(([id, s]) => ({
    backupId: id,
    status: s.status ?? 'DONE',
    endTime: new Date(s.end ?? `${id.slice(0, 4)}-${id.slice(4, 6)}-${id.slice(6, 8)}T${id.slice(9, 11)}:${id.slice(11, 13)}:00Z`),
    parentBackupId: s.parent ?? null,
    childrenBackupIds: s.children ?? null,
    keep: s.keep ?? null,
  }));
}

function report(policy: string, specs: Record<string, Spec>, opts: { min?: number; now?: string } = {}): Record<string, string> {
  const r = retentionReport(parseRetentionPolicy(policy), backups(specs), { minimumRedundancy: opts.min ?? 0, now: new Date(opts.now ?? '2024-06-30T12:00:00Z') });
  return Object.fromEntries(Object.keys(specs).map((id) => [id, retentionStatusOf(r, id)]));
}

describe('REDUNDANCY', () => {
  it('keeps the newest n DONE backups VALID, older ones OBSOLETE', () => {
    expect(report('REDUNDANCY 2', { '20240101T0400': {}, '20240102T0400': {}, '20240103T0400': {}, '20240104T0400': {} })).toEqual({
      '20240101T0400': 'OBSOLETE',
      '20240102T0400': 'OBSOLETE',
      '20240103T0400': 'VALID',
      '20240104T0400': 'VALID',
    });
  });

  it('rates only DONE backups: others are "-" and take no place', () => {
    expect(
      report('REDUNDANCY 2', {
        '20240101T0400': {},
        '20240102T0400': { status: 'FAILED' },
        '20240103T0400': {},
        '20240104T0400': { status: 'WAITING_FOR_WALS' },
        '20240105T0400': {},
        '20240106T0400': { status: 'STARTED' },
      }),
    ).toEqual({
      '20240101T0400': 'OBSOLETE',
      '20240102T0400': '-',
      '20240103T0400': 'VALID',
      '20240104T0400': '-',
      '20240105T0400': 'VALID',
      '20240106T0400': '-',
    });
  });

  it('kept backups take a redundancy place and are reported by their keep target', () => {
    // Newest first: 04 VALID (1), 03 KEEP:FULL (2), 02 is third -> OBSOLETE, 01 KEEP:STANDALONE.
    expect(
      report('REDUNDANCY 2', {
        '20240101T0400': { keep: 'standalone' },
        '20240102T0400': {},
        '20240103T0400': { keep: 'full' },
        '20240104T0400': {},
      }),
    ).toEqual({ '20240101T0400': 'KEEP:STANDALONE', '20240102T0400': 'OBSOLETE', '20240103T0400': 'KEEP:FULL', '20240104T0400': 'VALID' });
  });

  it('minimum_redundancy above the policy wins', () => {
    expect(report('REDUNDANCY 1', { '20240101T0400': {}, '20240102T0400': {}, '20240103T0400': {}, '20240104T0400': {} }, { min: 3 })).toEqual({
      '20240101T0400': 'OBSOLETE',
      '20240102T0400': 'VALID',
      '20240103T0400': 'VALID',
      '20240104T0400': 'VALID',
    });
  });

  it('EMPTY backups are not rated at all', () => {
    const r = retentionReport(parseRetentionPolicy('REDUNDANCY 1'), backups({ '20240101T0400': {}, '20240102T0400': { status: 'EMPTY' } }), { minimumRedundancy: 0, now: new Date() });
    expect(r.has('20240102T0400')).toBe(false);
    expect(retentionStatusOf(r, '20240102T0400')).toBe('-');
    expect(r.get('20240101T0400')).toBe('VALID');
  });

  it('incremental backups take no place and inherit their root status, down the whole chain', () => {
    const chain = {
      '20240101T0400': { children: ['20240101T1000'] },
      '20240101T1000': { parent: '20240101T0400', children: ['20240101T1600'] },
      '20240101T1600': { parent: '20240101T1000' },
      '20240102T0400': { children: ['20240102T1000'] },
      '20240102T1000': { parent: '20240102T0400' },
      '20240103T0400': {},
    };
    expect(report('REDUNDANCY 2', chain)).toEqual({
      '20240101T0400': 'OBSOLETE',
      '20240101T1000': 'OBSOLETE',
      '20240101T1600': 'OBSOLETE',
      '20240102T0400': 'VALID',
      '20240102T1000': 'VALID',
      '20240103T0400': 'VALID',
    });
  });

  it('chains of kept roots: KEEP:FULL gives VALID children; KEEP:STANDALONE VALID inside the policy, OBSOLETE outside', () => {
    const specs = {
      '20240101T0400': { keep: 'standalone' as const, children: ['20240101T1000'] },
      '20240101T1000': { parent: '20240101T0400' },
      '20240102T0400': { keep: 'full' as const, children: ['20240102T1000'] },
      '20240102T1000': { parent: '20240102T0400' },
      '20240103T0400': { keep: 'standalone' as const, children: ['20240103T1000'] },
      '20240103T1000': { parent: '20240103T0400' },
    };
    // Places: 03 is 1st (inside REDUNDANCY 2), 02 2nd, 01 3rd (outside).
    expect(report('REDUNDANCY 2', specs)).toEqual({
      '20240101T0400': 'KEEP:STANDALONE',
      '20240101T1000': 'OBSOLETE',
      '20240102T0400': 'KEEP:FULL',
      '20240102T1000': 'VALID',
      '20240103T0400': 'KEEP:STANDALONE',
      '20240103T1000': 'VALID',
    });
  });
});

describe('RECOVERY WINDOW', () => {
  // Daily backups at 04:00 ending 05:00 UTC, from June 24th to June 30th.
  const daily = (first = 24, last = 30): Record<string, Spec> =>
    Object.fromEntries(
      Array.from({ length: last - first + 1 }, (_, i) => {
        const day = String(first + i).padStart(2, '0');
        return [`202406${day}T0400`, { end: `2024-06-${day}T05:00:00Z` }];
      }),
    );

  it("OF 3 DAYS with daily backups keeps 4 of them: the newest one that ended before the window start stays VALID (Barman's documented case)", () => {
    // now June 30 12:00 -> window starts June 27 12:00. 30, 29, 28 are inside; 27 ended at 05:00,
    // before the start: it is the base for recovering to June 27 12:00, so VALID too.
    expect(report('RECOVERY WINDOW OF 3 DAYS', daily(), { now: '2024-06-30T12:00:00Z' })).toEqual({
      '20240624T0400': 'OBSOLETE',
      '20240625T0400': 'OBSOLETE',
      '20240626T0400': 'OBSOLETE',
      '20240627T0400': 'VALID',
      '20240628T0400': 'VALID',
      '20240629T0400': 'VALID',
      '20240630T0400': 'VALID',
    });
  });

  it('OF 3 DAYS just before the daily backup ends: 4 DONE backups VALID plus the running one', () => {
    // now June 30 04:30 -> start June 27 04:30: 27 (05:00) is inside, 26 is the base.
    const specs = { ...daily(24, 29), '20240630T0400': { status: 'STARTED' as const } };
    expect(report('RECOVERY WINDOW OF 3 DAYS', specs, { now: '2024-06-30T04:30:00Z' })).toEqual({
      '20240624T0400': 'OBSOLETE',
      '20240625T0400': 'OBSOLETE',
      '20240626T0400': 'VALID',
      '20240627T0400': 'VALID',
      '20240628T0400': 'VALID',
      '20240629T0400': 'VALID',
      '20240630T0400': '-',
    });
  });

  it('no backup ended before the window start: all VALID', () => {
    expect(report('RECOVERY WINDOW OF 1 WEEKS', daily(28, 30), { now: '2024-06-30T12:00:00Z' })).toEqual({
      '20240628T0400': 'VALID',
      '20240629T0400': 'VALID',
      '20240630T0400': 'VALID',
    });
  });

  it('minimum_redundancy keeps older backups as OBSOLETE* (potentially obsolete), then OBSOLETE', () => {
    // Weekly backups; window of 1 day: June 28 is the base (VALID, 1 valid), June 21 and 14 are
    // needed for minimum_redundancy 3 (OBSOLETE*), June 7 is OBSOLETE.
    const weekly = {
      '20240607T0400': { end: '2024-06-07T05:00:00Z' },
      '20240614T0400': { end: '2024-06-14T05:00:00Z' },
      '20240621T0400': { end: '2024-06-21T05:00:00Z' },
      '20240628T0400': { end: '2024-06-28T05:00:00Z' },
    };
    expect(report('RECOVERY WINDOW OF 1 DAYS', weekly, { now: '2024-06-30T12:00:00Z', min: 3 })).toEqual({
      '20240607T0400': 'OBSOLETE',
      '20240614T0400': 'OBSOLETE*',
      '20240621T0400': 'OBSOLETE*',
      '20240628T0400': 'VALID',
    });
  });

  it('keep annotations override every window status; a kept backup still counts for minimum_redundancy', () => {
    const weekly = {
      '20240607T0400': { end: '2024-06-07T05:00:00Z', keep: 'standalone' as const },
      '20240614T0400': { end: '2024-06-14T05:00:00Z' },
      '20240621T0400': { end: '2024-06-21T05:00:00Z', keep: 'full' as const },
      '20240628T0400': { end: '2024-06-28T05:00:00Z' },
      '20240630T0400': { end: '2024-06-30T05:00:00Z', keep: 'full' as const },
    };
    // 30 inside (kept, 1 valid); 28 crosses the start (VALID, 2); 21 kept and valid < 2? no, 2 >= 2:
    // reported KEEP:FULL without counting; 14 OBSOLETE; 07 KEEP:STANDALONE.
    expect(report('RECOVERY WINDOW OF 1 DAYS', weekly, { now: '2024-06-30T12:00:00Z', min: 2 })).toEqual({
      '20240607T0400': 'KEEP:STANDALONE',
      '20240614T0400': 'OBSOLETE',
      '20240621T0400': 'KEEP:FULL',
      '20240628T0400': 'VALID',
      '20240630T0400': 'KEEP:FULL',
    });
    // With minimum_redundancy 3 the kept 21 fills the third place: 14 is OBSOLETE, not OBSOLETE*.
    expect(report('RECOVERY WINDOW OF 1 DAYS', weekly, { now: '2024-06-30T12:00:00Z', min: 3 })['20240614T0400']).toBe('OBSOLETE');
    expect(report('RECOVERY WINDOW OF 1 DAYS', weekly, { now: '2024-06-30T12:00:00Z', min: 4 })['20240614T0400']).toBe('OBSOLETE*');
  });

  it('MONTHS are 31 days', () => {
    const specs = { '20240529T0400': { end: '2024-05-29T05:00:00Z' }, '20240530T0400': { end: '2024-05-30T13:00:00Z' }, '20240630T0400': {} };
    // now June 30 12:00 - 31 days = May 30 12:00: May 30 ended after it (inside), May 29 is the base.
    expect(report('RECOVERY WINDOW OF 1 MONTHS', specs, { now: '2024-06-30T12:00:00Z' })).toEqual({
      '20240529T0400': 'VALID',
      '20240530T0400': 'VALID',
      '20240630T0400': 'VALID',
    });
  });

  it('incremental chains follow their root; a KEEP:STANDALONE root crossing the window start obsoletes its chain', () => {
    const specs = {
      '20240626T0400': { end: '2024-06-26T05:00:00Z', children: ['20240626T1000'] },
      '20240626T1000': { parent: '20240626T0400', end: '2024-06-26T11:00:00Z' },
      '20240627T0400': { end: '2024-06-27T05:00:00Z', keep: 'standalone' as const, children: ['20240627T1000'] },
      '20240627T1000': { parent: '20240627T0400', end: '2024-06-27T11:00:00Z' },
      '20240629T0400': { end: '2024-06-29T05:00:00Z', children: ['20240629T1000'] },
      '20240629T1000': { parent: '20240629T0400', end: '2024-06-29T11:00:00Z' },
    };
    expect(report('RECOVERY WINDOW OF 3 DAYS', specs, { now: '2024-06-30T12:00:00Z' })).toEqual({
      '20240626T0400': 'OBSOLETE',
      '20240626T1000': 'OBSOLETE',
      '20240627T0400': 'KEEP:STANDALONE',
      '20240627T1000': 'OBSOLETE',
      '20240629T0400': 'VALID',
      '20240629T1000': 'VALID',
    });
  });

  describe('window start across a DST change', () => {
    const saved = process.env['TZ'];
    afterEach(() => {
      if (saved === undefined) delete process.env['TZ'];
      else process.env['TZ'] = saved;
    });

    it('is the same local wall-clock time n days earlier, as Python computes it', () => {
      process.env['TZ'] = 'Europe/Paris';
      // Sunday March 31 2024 12:00 CEST (10:00Z); three days earlier is March 28 12:00 CET = 11:00Z.
      expect(pointOfRecoverability(new Date('2024-03-31T10:00:00Z'), 3).toISOString()).toBe('2024-03-28T11:00:00.000Z');
      process.env['TZ'] = 'UTC';
      expect(pointOfRecoverability(new Date('2024-03-31T10:00:00Z'), 3).toISOString()).toBe('2024-03-28T10:00:00.000Z');
    });
  });
});
