// cloud-backup-delete on crafted bucket catalogs: retention deletes exactly the
// backups the local catalog's retention would, oldest first, with the WAL only they
// needed; keep annotations, minimum redundancy, unreadable backup.info objects and
// --dry-run hold it back. Where barman-cloud 3.4 is installed, the same catalog
// under another prefix is handed to barman-cloud-backup-delete and both buckets must
// end up holding the same objects.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseBackupTime } from '../../src/catalog/backup-info.ts';
import { retentionReport } from '../../src/backup/retention.ts';
import { parseRetentionPolicy } from '../../src/config/retention-policy.ts';
import type { ObjectStore } from '../../src/storage/object-store.ts';
import { type S3Server, startS3Server } from '../support/s3-server.ts';
import {
  BARMAN_CLOUD_INSTALLED,
  barkeepCloud,
  barmanCloud,
  type CraftedBackup,
  craftInfo,
  daysAgo,
  keysUnder,
  openStore,
  putBackup,
  putWals,
  walName,
} from './catalog-support.ts';

let s3: S3Server;
let seq = 0;

beforeAll(async () => {
  s3 = await startS3Server({ name: 'cloud-delete' });
});

afterAll(async () => {
  await s3?.stop();
});

interface Crafted {
  url: string;
  /** The URL's key prefix, as the commands print keys. */
  prefix: string;
  store: ObjectStore;
  ids: string[];
}

const label = (segment: number) => `${walName(1, segment)}.00000028.backup`;

/**
 * The catalog under a fresh prefix: the backups, WAL segments 1..lastSegment of timeline 1
 * (odd ones gzipped), each backup's .backup label file, a history file and a stray object.
 */
async function craft(backups: readonly CraftedBackup[], lastSegment: number): Promise<Crafted> {
  const prefix = `del-${++seq}/`;
  const url = `s3://${s3.bucket}/${prefix.slice(0, -1)}`;
  const store = await openStore(s3, `${url}/`);
  const ids: string[] = [];
  for (const b of backups) ids.push(await putBackup(store, 'pg', b));
  const segments = Array.from({ length: lastSegment }, (_, i) => i + 1);
  await putWals(store, 'pg', segments.filter((n) => n % 2 === 1).map((n) => walName(1, n)), '.gz');
  await putWals(store, 'pg', segments.filter((n) => n % 2 === 0).map((n) => walName(1, n)));
  await putWals(store, 'pg', [...backups.map((b) => label(b.beginSegment)), '00000002.history']);
  await store.put('pg/wals/README', 'not a WAL file');
  return { url, prefix, store, ids };
}

/** WAL names left in the bucket (suffixes dropped), and the backups left. */
async function contents(store: ObjectStore): Promise<{ backups: string[]; wals: string[] }> {
  const keys = await keysUnder(store, 'pg/');
  const backups = [...new Set(keys.filter((k) => k.startsWith('pg/base/')).map((k) => k.split('/')[2]!))];
  const wals = keys.filter((k) => k.startsWith('pg/wals/')).map((k) => k.slice(k.lastIndexOf('/') + 1).replace(/\.gz$/, ''));
  return { backups, wals: wals.sort() };
}

function segmentRange(from: number, to: number): string[] {
  return Array.from({ length: to - from + 1 }, (_, i) => walName(1, from + i));
}

/** Runs barman-cloud-backup-delete on a copy of the catalog; returns the keys it leaves, relative to the prefix. */
async function barmanLeaves(backups: readonly CraftedBackup[], lastSegment: number, args: string[]): Promise<string[]> {
  const copy = await craft(backups, lastSegment);
  const r = await barmanCloud('delete', s3, [...args, copy.url, 'pg']);
  expect(r.code, r.stderr).toBe(0);
  const keys = await keysUnder(copy.store, 'pg/');
  copy.store.close();
  return keys;
}

describe('cloud-backup-delete -r "RECOVERY WINDOW OF 7 DAYS"', () => {
  const now = new Date();
  // Days ago, oldest first; the one 15 days ago failed. Segments 2, 12, 22, ... begin them.
  const ages = [30, 20, 15, 10, 8, 5, 1];
  const backups: CraftedBackup[] = ages.map((age, i) => ({
    begin: daysAgo(now, age),
    beginSegment: 10 * i + 2,
    endSegment: 10 * i + 3,
    ...(age === 15 ? { status: 'FAILED' as const, extra: { error: 'failure during backup' } } : {}),
  }));
  const LAST = 64;
  let c: Crafted;

  beforeAll(async () => {
    c = await craft(backups, LAST);
  });
  afterAll(() => c?.store.close());

  it('--dry-run names what would go and deletes nothing', async () => {
    const before = await keysUnder(c.store);
    const r = await barkeepCloud('delete', s3, ['--dry-run', '-r', 'RECOVERY WINDOW OF 7 DAYS', c.url, 'pg']);
    expect(r.code, r.stderr).toBe(0);
    expect(await keysUnder(c.store)).toEqual(before);
    const skipped = r.stdout.split('\n').filter((l) => l.startsWith('Skipping deletion of objects'));
    expect(skipped[0]).toBe(`Skipping deletion of objects ['${c.prefix}pg/base/${c.ids[0]}/data.tar', '${c.prefix}pg/base/${c.ids[0]}/backup.info'] due to --dry-run option`);
    expect(skipped).toHaveLength(6);
    if (BARMAN_CLOUD_INSTALLED) {
      const theirs = await barmanCloud('delete', s3, ['--dry-run', '-r', 'RECOVERY WINDOW OF 7 DAYS', c.url, 'pg']);
      expect(theirs.code, theirs.stderr).toBe(0);
      expect(skipped).toEqual(theirs.stdout.split('\n').filter((l) => l.startsWith('Skipping deletion of objects')));
      expect(await keysUnder(c.store)).toEqual(before);
    }
  });

  it('deletes what the local retention policy would, oldest first, and the WAL before the oldest backup left', async () => {
    // The local catalog's verdict on the same backups.
    const policy = parseRetentionPolicy('RECOVERY WINDOW OF 7 DAYS');
    const report = retentionReport(
      policy,
      backups.map((b, i) => {
        const info = craftInfo(b);
        return { backupId: c.ids[i]!, status: info.status, endTime: parseBackupTime(info.end_time!), parentBackupId: null, childrenBackupIds: null, keep: null };
      }),
      { minimumRedundancy: 0, now: new Date() },
    );
    const obsolete = c.ids.filter((id) => report.get(id) === 'OBSOLETE');
    // Worked by hand: 1, 5 and 8 days ago stay (8 is the base of the window's first
    // instant), the failed one is not rated, the other three go.
    expect(obsolete).toEqual([c.ids[0], c.ids[1], c.ids[3]]);

    const r = await barkeepCloud('delete', s3, ['-r', 'RECOVERY WINDOW OF 7 DAYS', c.url, 'pg']);
    expect(r.code, r.stderr).toBe(0);
    const order = [...r.stdout.matchAll(/^Deleting backup (\S+) of server pg \(OBSOLETE under RECOVERY WINDOW OF 7 DAYS\)$/gm)].map((m) => m[1]);
    expect(order).toEqual(obsolete);
    expect(r.stdout).toContain(`\t${walName(1, 1)}\n`);

    const left = await contents(c.store);
    expect(left.backups).toEqual(c.ids.filter((id) => !obsolete.includes(id)));
    // Everything before the 8-days-old backup's begin WAL (segment 42) went, its label
    // files included; the history file and the stray object stay.
    expect(left.wals).toEqual(['00000002.history', ...segmentRange(42, LAST), label(42), label(52), label(62), 'README'].sort());

    if (BARMAN_CLOUD_INSTALLED) {
      const theirs = await barmanLeaves(backups, LAST, ['-r', 'RECOVERY WINDOW OF 7 DAYS']);
      expect(await keysUnder(c.store, 'pg/')).toEqual(theirs);
    }
  });
});

describe('cloud-backup-delete with REDUNDANCY and -m', () => {
  const now = new Date();
  const backups: CraftedBackup[] = [6, 5, 4, 3, 2, 1].map((age, i) => ({
    begin: daysAgo(now, age),
    beginSegment: 10 * i + 2,
    // The oldest one also has a manifest and a split archive: all of it goes.
    ...(i === 0 ? { files: ['data.tar.zst', 'data_0001.tar.zst', 'backup_manifest'] } : {}),
  }));
  let c: Crafted;

  beforeAll(async () => {
    c = await craft(backups, 55);
  });
  afterAll(() => c?.store.close());

  it('-m raises the redundancy, then -b honours it', async () => {
    const raised = await barkeepCloud('delete', s3, ['-r', 'REDUNDANCY 2', '-m', '4', c.url, 'pg']);
    expect(raised.code, raised.stderr).toBe(0);
    expect(raised.stderr).toContain('Retention policy redundancy (2) is lower than the required minimum redundancy (4). Enforce 4.');
    let left = await contents(c.store);
    expect(left.backups).toEqual(c.ids.slice(2));
    expect(left.wals.filter((w) => w.startsWith('0000000100')).at(0)).toBe(walName(1, 22));

    const plain = await barkeepCloud('delete', s3, ['-r', 'REDUNDANCY 2', c.url, 'pg']);
    expect(plain.code, plain.stderr).toBe(0);
    left = await contents(c.store);
    expect(left.backups).toEqual(c.ids.slice(4));
    expect(left.wals.filter((w) => w.startsWith('0000000100')).at(0)).toBe(walName(1, 42));

    const refused = await barkeepCloud('delete', s3, ['-b', c.ids[4]!, '-m', '2', c.url, 'pg']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(
      `Skipping delete of backup ${c.ids[4]} for server pg due to minimum redundancy requirements (minimum redundancy = 2, current redundancy = 2)`,
    );
    expect((await contents(c.store)).backups).toEqual(c.ids.slice(4));

    const allowed = await barkeepCloud('delete', s3, ['-b', 'oldest', '-m', '1', c.url, 'pg']);
    expect(allowed.code, allowed.stderr).toBe(0);
    left = await contents(c.store);
    expect(left.backups).toEqual([c.ids[5]]);
    expect(left.wals.filter((w) => w.startsWith('0000000100')).at(0)).toBe(walName(1, 52));
  });

  it('refuses a policy it cannot read', async () => {
    const r = await barkeepCloud('delete', s3, ['-r', 'KEEP EVERYTHING', c.url, 'pg']);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain("Could not create retention policy KEEP EVERYTHING: 'KEEP EVERYTHING' is not a retention policy");
  });
});

describe('cloud-backup-delete and keep annotations', () => {
  const now = new Date();
  // A (standalone) B C (full) D E, oldest first.
  const backups: CraftedBackup[] = [
    { begin: daysAgo(now, 5), beginSegment: 2, endSegment: 4, keep: 'standalone' },
    { begin: daysAgo(now, 4), beginSegment: 12 },
    { begin: daysAgo(now, 3), beginSegment: 22, keep: 'full' },
    { begin: daysAgo(now, 2), beginSegment: 32 },
    { begin: daysAgo(now, 1), beginSegment: 42 },
  ];
  let c: Crafted;

  beforeAll(async () => {
    c = await craft(backups, 45);
  });
  afterAll(() => c?.store.close());

  it('-b refuses a kept backup', async () => {
    const before = await keysUnder(c.store);
    const r = await barkeepCloud('delete', s3, ['-b', c.ids[2]!, c.url, 'pg']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`Skipping delete of backup ${c.ids[2]} for server pg as it has a current keep request.`);
    expect(await keysUnder(c.store)).toEqual(before);
  });

  it('retention keeps the kept backups, the standalone WAL range, and all WAL after a keep:full backup', async () => {
    const r = await barkeepCloud('delete', s3, ['-r', 'REDUNDANCY 1', c.url, 'pg']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`No WAL removed for backup ${c.ids[3]}: the older backup ${c.ids[2]} needs it for point-in-time recovery`);
    const left = await contents(c.store);
    expect(left.backups).toEqual([c.ids[0], c.ids[2], c.ids[4]]);
    // Deleting B removed WAL up to C's begin (22) except A's range 2..4 (with its label);
    // deleting D removed none: C (keep:full) needs all WAL from its start.
    expect(left.wals).toEqual(['00000002.history', ...segmentRange(2, 4), label(2), ...segmentRange(22, 45), label(22), label(32), label(42), 'README'].sort());
    if (BARMAN_CLOUD_INSTALLED) {
      const theirs = await barmanLeaves(backups, 45, ['-r', 'REDUNDANCY 1']);
      expect(await keysUnder(c.store, 'pg/')).toEqual(theirs);
    }
  });
});

describe('cloud-backup-delete with an unreadable backup.info', () => {
  it('deletes nothing and names the backup', async () => {
    const now = new Date();
    const c = await craft(
      [
        { begin: daysAgo(now, 3), beginSegment: 2 },
        { begin: daysAgo(now, 2), beginSegment: 12 },
      ],
      14,
    );
    await c.store.put('pg/base/20200101T000000/data.tar', 'x');
    await c.store.put('pg/base/20200101T000000/backup.info', 'status DONE\n');
    const before = await keysUnder(c.store);
    for (const args of [['-r', 'REDUNDANCY 1'], ['-b', c.ids[0]!]]) {
      const r = await barkeepCloud('delete', s3, [...args, c.url, 'pg']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("ERROR: Cannot read the following backups: ['20200101T000000']\nUnsafe to proceed with deletion due to failure reading backup catalog");
      expect(r.stderr).toMatch(/WARNING: Unable to open backup\.info file for 20200101T000000: .*backup\.info:1: expected key=value/);
    }
    expect(await keysUnder(c.store)).toEqual(before);
    c.store.close();
  });
});

describe('cloud-backup-delete after an interrupted delete', () => {
  it('finishes a backup whose archives are gone but whose backup.info is still there', async () => {
    const now = new Date();
    const c = await craft(
      [
        { begin: daysAgo(now, 3), beginSegment: 2, files: ['data.tar', '16385.tar'] },
        { begin: daysAgo(now, 2), beginSegment: 12 },
      ],
      14,
    );
    // An earlier run deleted the archives, then stopped before backup.info.
    await c.store.delete([`pg/base/${c.ids[0]}/data.tar`, `pg/base/${c.ids[0]}/16385.tar`]);
    const r = await barkeepCloud('delete', s3, ['-r', 'REDUNDANCY 1', c.url, 'pg']);
    expect(r.code, r.stderr).toBe(0);
    const left = await contents(c.store);
    expect(left.backups).toEqual([c.ids[1]]);
    expect(left.wals).toEqual(['00000002.history', ...segmentRange(12, 14), label(12), 'README'].sort());
    c.store.close();
  });
});
