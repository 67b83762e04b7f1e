import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { ServerHooks } from '../../src/hooks/server-hooks.ts';
import { makeTempDir } from '../support/tmp.ts';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listBackups, loadBackup, writeKeepAnnotation } from '../../src/catalog/catalog.ts';
import { newBackupInfo } from '../../src/catalog/backup-info.ts';
import { metaBackupInfoPath } from '../../src/catalog/layout.ts';
import { serverLockPath, tryAcquireLock } from '../../src/catalog/locks.ts';
import { loadConfigFile, type ServerConfig } from '../../src/config/load.ts';
import {
  type ArchiveStepReport,
  type CheckStepReport,
  type MaintenanceEvent,
  type MaintenanceReport,
  maintenancePass,
  type RetentionStepReport,
} from '../../src/daemon/maintenance.ts';
import { addBackup, addWals, backupInfo, makeCatalog, seg, walFilesOnDisk, xlogDbNames } from '../backup/catalog-support.ts';
import { barkeepServer, completeSegments, waitFor, type BarkeepServer, type ReceiverProcess } from '../support/barkeep-server.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';

// One maintenance pass (what `barkeep cron` and the daemon run): archiving, the
// WAITING_FOR_WALS -> DONE transition and retention, against a real server and
// against crafted catalogs with an injected clock; failing steps do not stop the
// later ones.

/** A pino logger whose entries the test can read. */
function memoryLogger() {
  const entries: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void entries.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, entries };
}

const archiveStep = (r: MaintenanceReport) => r.steps.find((s) => s.step === 'archive-wal') as ArchiveStepReport;
const checkStep = (r: MaintenanceReport) => r.steps.find((s) => s.step === 'check-backup') as CheckStepReport;
const retentionStep = (r: MaintenanceReport) => r.steps.find((s) => s.step === 'retention') as RetentionStepReport;
const texts = (r: MaintenanceReport) => r.messages.map((m) => m.text);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => seg(from + i));

describe('a pass against PostgreSQL 15', () => {
  let cluster: PgCluster;
  let server: BarkeepServer;
  let receiver: ReceiverProcess;
  const config = (): ServerConfig => loadConfigFile(server.conf).servers.get('pg')!;
  const ids: string[] = [];

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    server = barkeepServer(cluster, { immediate_checkpoint: 'true', compression: 'gzip', retention_policy: 'REDUNDANCY 1' });
    receiver = server.startReceiver();
    await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
  });
  afterAll(async () => {
    await receiver?.stop();
    await cluster?.destroy();
  });

  it('archives the WAL waiting in streaming/ and turns a WAITING_FOR_WALS backup DONE', async () => {
    const paths = config().paths;
    // While archive-wal is held, the backup cannot archive its own WAL: it stays waiting.
    const hold = await tryAcquireLock(serverLockPath(paths.lockDirectory, 'pg', 'archive-wal'));
    expect(hold.busy).toBe(false);
    let backup;
    try {
      backup = await server.run(['backup', 'pg']);
    } finally {
      if (!hold.busy) await hold.release();
    }
    expect(backup.code, backup.stdout + backup.stderr).toBe(0);
    const id = readdirSync(paths.basebackupsDirectory).sort().at(-1)!;
    ids.push(id);
    const info = (await loadBackup(paths, id))!.info;
    expect(info.status).toBe('WAITING_FOR_WALS');
    await waitFor(`${info.end_wal} in streaming/`, () => completeSegments(server.streamingDir).includes(info.end_wal!));

    const events: MaintenanceEvent[] = [];
    const report = await maintenancePass(config(), { logger: memoryLogger().logger, onEvent: (e) => events.push(e) });
    expect(report.outcome, JSON.stringify(report)).toBe('ok');
    expect(archiveStep(report).queues[0]!.archived).toContain(info.end_wal);
    expect(completeSegments(server.streamingDir)).not.toContain(info.end_wal);
    expect(checkStep(report).backups).toEqual([{ backupId: id, previous: 'WAITING_FOR_WALS', status: 'DONE', error: null }]);
    expect((await loadBackup(paths, id))!.info.status).toBe('DONE');
    // Barman's cron lines, then those of the archive-wal and check-backup it would spawn.
    const lines = texts(report);
    expect(lines.slice(0, 2)).toEqual(['Starting WAL archiving for server pg', 'Processing xlog segments from streaming for pg']);
    expect(lines).toContain(`\t${info.end_wal}`);
    expect(lines.at(-1)).toBe(`Starting check-backup for backup ${id} of server pg`);
    // One message event per line, and one step event per step, in order.
    expect(events.filter((e) => e.type === 'message').map((e) => (e.type === 'message' ? e.text : ''))).toEqual(lines);
    expect(events.filter((e) => e.type === 'step').map((e) => (e.type === 'step' ? `${e.report.step}:${e.report.outcome}` : ''))).toEqual([
      'archive-wal:ok',
      'check-backup:ok',
      'retention:ok',
    ]);
  });

  it('REDUNDANCY 1: minimum_redundancy and keep protect the older backup; then it goes with the WAL only it needed', async () => {
    const second = await server.run(['backup', '--wait', 'pg']);
    expect(second.code, second.stdout + second.stderr).toBe(0);
    const paths = config().paths;
    const [first, newer] = (await listBackups(paths)).backups;
    expect(first!.backupId).toBe(ids[0]);
    expect(newer!.info.status).toBe('DONE');

    // minimum_redundancy = 2 raises the redundancy to 2: both are VALID.
    const strict = { ...config(), settings: { ...config().settings, minimum_redundancy: 2 } };
    const kept = await maintenancePass(strict, { logger: memoryLogger().logger });
    expect(retentionStep(kept)).toMatchObject({ outcome: 'ok', policy: 'REDUNDANCY 1', deleted: [] });
    expect((await listBackups(paths)).backups).toHaveLength(2);

    // A keep annotation, written by the keep command.
    expect((await server.run(['keep', '--target', 'full', 'pg', first!.backupId])).code).toBe(0);
    const annotated = await maintenancePass(config(), { logger: memoryLogger().logger });
    expect(retentionStep(annotated).deleted).toEqual([]);
    expect((await listBackups(paths)).backups).toHaveLength(2);

    expect((await server.run(['keep', '--release', 'pg', first!.backupId])).code).toBe(0);
    const before = xlogDbNames(config());
    const needed = before.filter((n) => !n.endsWith('.history') && n < newer!.info.begin_wal!);
    expect(needed).toContain(first!.info.begin_wal);
    const { logger, entries } = memoryLogger();
    const report = await maintenancePass(config(), { logger });
    expect(report.outcome, JSON.stringify(report)).toBe('ok');
    const [deleted] = retentionStep(report).deleted;
    expect(deleted).toMatchObject({ backupId: first!.backupId, reason: 'OBSOLETE under REDUNDANCY 1', walRemoved: needed });
    expect(deleted!.backupBytes).toBeGreaterThan(1_000_000);
    expect(deleted!.walBytes).toBeGreaterThan(0);
    expect((await listBackups(paths)).backups.map((b) => b.backupId)).toEqual([newer!.backupId]);
    expect(existsSync(join(paths.basebackupsDirectory, first!.backupId))).toBe(false);
    // What the newer backup needs, and everything after it, is still there (the receiver
    // may have added segments since, at the end).
    const survivors = before.filter((n) => !needed.includes(n));
    expect(xlogDbNames(config()).slice(0, survivors.length)).toEqual(survivors);
    const lines = texts(report);
    const at = lines.indexOf(`Enforcing retention policy: removing backup ${first!.backupId} for server pg`);
    expect(at).toBeGreaterThan(-1);
    expect(lines.slice(at + 1, at + 3)).toEqual([`Deleting backup ${first!.backupId} for server pg`, 'Delete associated WAL segments:']);
    expect(lines.at(-1)).toMatch(new RegExp(`^Deleted backup ${first!.backupId} \\(start time: .+, elapsed time: .+\\)$`));
    // The log says what went, why, and how much it freed.
    const entry = entries.find((e) => typeof e['msg'] === 'string' && (e['msg'] as string).startsWith(`retention: deleted backup ${first!.backupId}`));
    expect(entry).toMatchObject({ server: 'pg', backup: first!.backupId, reason: 'OBSOLETE under REDUNDANCY 1', walFilesRemoved: needed.length, firstWal: needed[0] });
    expect(entry!['msg']).toMatch(/\(OBSOLETE under REDUNDANCY 1\): freed [\d.]+ MiB, \d+ WAL files removed$/);
    expect(entry!['freedBytes']).toBe(deleted!.backupBytes + deleted!.walBytes);
  });
});

describe('retention on crafted catalogs (no PostgreSQL)', () => {
  const NOW = new Date('2024-03-01T12:00:00Z');
  /** Daily-ish backups that ended 20, 15, 10, 8, 3 and 1 days before NOW, two segments each. */
  const SCHEDULE: [string, string, number][] = [
    ['20240210T000000', '2024-02-10 00:10:00+00:00', 2],
    ['20240215T000000', '2024-02-15 00:10:00+00:00', 6],
    ['20240220T000000', '2024-02-20 00:10:00+00:00', 10],
    ['20240222T000000', '2024-02-22 00:10:00+00:00', 14],
    ['20240227T000000', '2024-02-27 00:10:00+00:00', 18],
    ['20240229T000000', '2024-02-29 00:10:00+00:00', 22],
  ];

  async function windowCatalog(settings: Record<string, string>) {
    const cat = await makeCatalog({ retention_policy: 'RECOVERY WINDOW OF 1 WEEKS', ...settings });
    for (const [id, end, first] of SCHEDULE) await addBackup(cat.server, id, backupInfo({ begin_wal: seg(first), end_wal: seg(first + 1), end_time: end }));
    addWals(cat.server, range(1, 24));
    return cat;
  }

  it('RECOVERY WINDOW OF 1 WEEKS: deletes what ended before the base backup of the window, oldest first', async () => {
    const { server } = await windowCatalog({});
    const report = await maintenancePass(server, { logger: memoryLogger().logger, now: NOW });
    expect(report.outcome, JSON.stringify(report)).toBe('ok');
    const retention = retentionStep(report);
    expect(retention.policy).toBe('RECOVERY WINDOW OF 1 WEEKS');
    // 20240222 ended 8 days ago: the base for recovering to the window's start, kept.
    expect(retention.deleted.map((d) => [d.backupId, d.walRemoved])).toEqual([
      ['20240210T000000', range(1, 5)],
      ['20240215T000000', range(6, 9)],
      ['20240220T000000', range(10, 13)],
    ]);
    expect(retention.deleted.every((d) => d.reason === 'OBSOLETE under RECOVERY WINDOW OF 1 WEEKS')).toBe(true);
    expect(texts(report).filter((t) => t.startsWith('Enforcing'))).toEqual([
      'Enforcing retention policy: removing backup 20240210T000000 for server pg',
      'Enforcing retention policy: removing backup 20240215T000000 for server pg',
      'Enforcing retention policy: removing backup 20240220T000000 for server pg',
    ]);
    expect((await listBackups(server.paths)).backups.map((b) => b.backupId)).toEqual(['20240222T000000', '20240227T000000', '20240229T000000']);
    expect(xlogDbNames(server)).toEqual(range(14, 24));
    expect(walFilesOnDisk(server)).toEqual(range(14, 24));

    // A week later the newest backup is the base of the window: the two before it go.
    const later = await maintenancePass(server, { logger: memoryLogger().logger, now: new Date('2024-03-08T12:00:00Z') });
    expect(retentionStep(later).deleted.map((d) => d.backupId)).toEqual(['20240222T000000', '20240227T000000']);
    expect(xlogDbNames(server)).toEqual(range(22, 24));
  });

  it('minimum_redundancy keeps OBSOLETE* backups; a keep annotation keeps its backup', async () => {
    const { server } = await windowCatalog({ minimum_redundancy: '5' });
    const report = await maintenancePass(server, { logger: memoryLogger().logger, now: NOW });
    // 20240220 and 20240215 are OBSOLETE* (only there for minimum_redundancy): not deleted.
    expect(retentionStep(report).deleted.map((d) => d.backupId)).toEqual(['20240210T000000']);

    const kept = await windowCatalog({});
    await writeKeepAnnotation(kept.server.paths, '20240215T000000', 'standalone');
    const r2 = await maintenancePass(kept.server, { logger: memoryLogger().logger, now: NOW });
    expect(retentionStep(r2).deleted.map((d) => d.backupId)).toEqual(['20240210T000000', '20240220T000000']);
    // The archival backup keeps the WAL of its own range, nothing more (Barman's retention cleanup).
    expect(xlogDbNames(kept.server)).toEqual([...range(6, 7), ...range(14, 24)]);
  });

  it('resumes an interrupted deletion (delete_this annotation) and warns about orphan backups', async () => {
    const { server } = await windowCatalog({});
    writeFileSync(join(server.paths.backupDirectory, 'meta', '20240227T000000-delete_this'), 'delete');
    rmSync(join(server.paths.basebackupsDirectory, '20240220T000000'), { recursive: true });
    const report = await maintenancePass(server, { logger: memoryLogger().logger, now: NOW });
    const retention = retentionStep(report);
    expect(retention.deleted.map((d) => [d.backupId, d.reason])).toEqual([
      ['20240210T000000', 'OBSOLETE under RECOVERY WINDOW OF 1 WEEKS'],
      ['20240215T000000', 'OBSOLETE under RECOVERY WINDOW OF 1 WEEKS'],
      ['20240227T000000', 'an interrupted deletion (delete_this annotation) is resumed'],
    ]);
    expect(retention.notDeleted).toEqual([{ backupId: '20240220T000000', reason: 'orphan backup (its data directory is gone)' }]);
    expect(report.messages).toContainEqual({
      level: 'warning',
      text: expect.stringMatching(/^Backup '20240220T000000' is an orphan backup, this is possibly the result of an incomplete delete operation\. Please manually delete/),
    });
  });

  it('leaves retention to the next pass while a backup runs, archiving while archive-wal runs, and the server while its pass runs', async () => {
    const { server } = await windowCatalog({});
    const backupLock = await tryAcquireLock(serverLockPath(server.paths.lockDirectory, 'pg', 'backup'));
    try {
      const report = await maintenancePass(server, { logger: memoryLogger().logger, now: NOW });
      expect(retentionStep(report)).toMatchObject({ outcome: 'skipped', message: expect.stringMatching(/^a backup is running \(PID \d+\)/) });
      expect((await listBackups(server.paths)).backups).toHaveLength(6);
    } finally {
      if (!backupLock.busy) await backupLock.release();
    }
    const archiveLock = await tryAcquireLock(serverLockPath(server.paths.lockDirectory, 'pg', 'archive-wal'));
    try {
      const report = await maintenancePass(server, { logger: memoryLogger().logger, now: NOW });
      expect(archiveStep(report)).toMatchObject({ outcome: 'skipped', message: expect.stringMatching(/^archive-wal is running \(PID \d+\)$/) });
      expect(texts(report)[0]).toBe('Another archive-wal process is already running on server pg. Skipping to the next server');
      expect(retentionStep(report).deleted).toHaveLength(3);
    } finally {
      if (!archiveLock.busy) await archiveLock.release();
    }
    const cronLock = await tryAcquireLock(serverLockPath(server.paths.lockDirectory, 'pg', 'cron'));
    try {
      const report = await maintenancePass(server, { logger: memoryLogger().logger, now: NOW });
      expect(report).toMatchObject({ outcome: 'skipped', steps: [] });
      expect(texts(report)).toEqual(['Another cron process is already running on server pg. Skipping to the next server']);
    } finally {
      if (!cronLock.busy) await cronLock.release();
    }
  });
});

describe('failing steps (crafted catalogs)', () => {
  async function twoBackups() {
    const cat = await makeCatalog({ retention_policy: 'REDUNDANCY 1' });
    await addBackup(cat.server, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(3) }));
    await addBackup(cat.server, '20240102T000000', backupInfo({ begin_wal: seg(6), end_wal: seg(7) }));
    addWals(cat.server, range(1, 8));
    return cat;
  }

  it('an unusable streaming directory fails WAL archiving; checks and retention still run', async () => {
    const { server } = await twoBackups();
    await addBackup(server, '20240103T000000', backupInfo({ status: 'WAITING_FOR_WALS', begin_wal: seg(8), end_wal: seg(8) }));
    // Root reads any directory, so make it something that is no directory at all.
    rmSync(server.paths.streamingWalsDirectory, { recursive: true });
    writeFileSync(server.paths.streamingWalsDirectory, 'not a directory\n');
    const report = await maintenancePass(server, { logger: memoryLogger().logger });
    expect(report.outcome).toBe('failed');
    expect(archiveStep(report)).toMatchObject({ outcome: 'failed', message: expect.stringContaining(`ENOTDIR: not a directory, scandir '${server.paths.streamingWalsDirectory}'`) });
    expect(report.messages).toContainEqual({
      level: 'error',
      text: `Maintenance of server pg: WAL archiving failed: ENOTDIR: not a directory, scandir '${server.paths.streamingWalsDirectory}'`,
    });
    expect(checkStep(report)).toMatchObject({ outcome: 'ok', backups: [{ backupId: '20240103T000000', status: 'DONE' }] });
    // REDUNDANCY 1 with the third backup now DONE: both older ones go.
    expect(retentionStep(report)).toMatchObject({ outcome: 'ok' });
    expect(retentionStep(report).deleted.map((d) => d.backupId)).toEqual(['20240101T000000', '20240102T000000']);
  });

  it('a damaged backup.info fails the check step naming the file; retention deletes only what cannot touch that backup', async () => {
    const { server } = await twoBackups();
    const damaged = metaBackupInfoPath(server.paths, '20240103T000000');
    writeFileSync(damaged, 'status=BOGUS\n');
    const report = await maintenancePass(server, { logger: memoryLogger().logger });
    expect(report.outcome).toBe('failed');
    expect(checkStep(report)).toMatchObject({ outcome: 'failed', message: expect.stringContaining(damaged) });
    expect(report.messages).toContainEqual({ level: 'error', text: expect.stringMatching(/^Maintenance of server pg: checking WAITING_FOR_WALS backups failed: unreadable backup\.info: /) });
    // The damaged backup is newer than the next backup of 20240101: its WAL is not at stake.
    expect(retentionStep(report)).toMatchObject({ outcome: 'ok' });
    expect(retentionStep(report).deleted.map((d) => d.backupId)).toEqual(['20240101T000000']);

    // Between an OBSOLETE backup and the next one, it protects the OBSOLETE one.
    const { server: other } = await twoBackups();
    await addBackup(other, '20240103T000000', backupInfo({ begin_wal: seg(8), end_wal: seg(8) }));
    writeFileSync(metaBackupInfoPath(other.paths, '20240101T120000'), 'status=BOGUS\n');
    const r2 = await maintenancePass(other, { logger: memoryLogger().logger });
    expect(retentionStep(r2).deleted).toEqual([]);
    expect(retentionStep(r2).notDeleted.map((n) => n.backupId)).toEqual(['20240101T000000', '20240102T000000']);
    expect(retentionStep(r2).notDeleted[0]!.reason).toContain(metaBackupInfoPath(other.paths, '20240101T120000'));
    expect(xlogDbNames(other)).toEqual(range(1, 8));
  });
});

describe('interrupted backups (crafted catalogs)', () => {
  it('a STARTED or EMPTY backup whose process is gone becomes FAILED; one whose process still holds the backup lock is left alone', async () => {
    const cat = await makeCatalog({});
    await addBackup(cat.server, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(3) }));
    await addBackup(cat.server, '20240102T000000', newBackupInfo({ status: 'STARTED', server_name: 'pg', begin_time: '2024-01-02 00:00:00+00:00' }));
    // EMPTY: killed while its pre-backup hook scripts ran.
    await addBackup(cat.server, '20240103T000000', newBackupInfo({ status: 'EMPTY', server_name: 'pg', begin_time: '2024-01-03 00:00:00+00:00' }));
    addWals(cat.server, range(1, 4));

    // A live `barkeep backup` holds the backup lock: its STARTED backup is in progress.
    const backupLock = await tryAcquireLock(serverLockPath(cat.server.paths.lockDirectory, 'pg', 'backup'));
    try {
      const report = await maintenancePass(cat.server, { logger: memoryLogger().logger });
      expect(checkStep(report).backups).toEqual([]);
      expect((await loadBackup(cat.server.paths, '20240102T000000'))!.info.status).toBe('STARTED');
      expect((await loadBackup(cat.server.paths, '20240103T000000'))!.info.status).toBe('EMPTY');
    } finally {
      if (!backupLock.busy) await backupLock.release();
    }

    // The lock is left behind by a dead process (a daemon killed with its backup): the backup failed.
    writeFileSync(serverLockPath(cat.server.paths.lockDirectory, 'pg', 'backup'), '2147483646\n1\n');
    const { logger, entries } = memoryLogger();
    const report = await maintenancePass(cat.server, { logger });
    expect(checkStep(report)).toMatchObject({
      outcome: 'ok',
      backups: [
        { backupId: '20240102T000000', previous: 'STARTED', status: 'FAILED' },
        { backupId: '20240103T000000', previous: 'EMPTY', status: 'FAILED' },
      ],
    });
    const info = (await loadBackup(cat.server.paths, '20240102T000000'))!.info;
    expect(info).toMatchObject({ status: 'FAILED', error: 'failure: interrupted, the backup process is gone (killed or crashed)' });
    expect(info.end_time).not.toBeNull();
    expect(report.messages).toContainEqual({ level: 'error', text: `Backup 20240102T000000 of server pg has been marked as FAILED: ${info.error}` });
    expect(entries.some((e) => e['msg'] === 'backup 20240102T000000 is now FAILED')).toBe(true);
    const list = (await cat.run(['list-backup', 'pg'])).stdout;
    expect(list).toContain('pg 20240102T000000 - FAILED');
    expect(list).toContain('pg 20240103T000000 - FAILED');
  });

  it("runs post_backup_script for it, as its own process would have: BARMAN_STATUS=FAILED with the error", async () => {
    const dir = makeTempDir('post-backup-hook');
    const script = join(dir, 'post.sh');
    writeFileSync(script, `#!/bin/sh\nenv | grep '^BARMAN_' | sort > ${dir}/$BARMAN_BACKUP_ID.env\n`, { mode: 0o755 });
    const cat = await makeCatalog({ post_backup_script: script });
    await addBackup(cat.server, '20240102T000000', newBackupInfo({ status: 'STARTED', server_name: 'pg', begin_time: '2024-01-02 00:00:00+00:00' }));
    writeFileSync(serverLockPath(cat.server.paths.lockDirectory, 'pg', 'backup'), '2147483646\n1\n');
    const { logger } = memoryLogger();
    const hooks = ServerHooks.forServer(cat.server, { configFile: cat.conf, logger });
    expect(hooks).not.toBeNull();
    await maintenancePass(cat.server, { logger, hooks });
    const env = readFileSync(join(dir, '20240102T000000.env'), 'utf8');
    expect(env).toContain('BARMAN_PHASE=post\n');
    expect(env).toContain('BARMAN_HOOK=backup_script\n');
    expect(env).toContain('BARMAN_STATUS=FAILED\n');
    expect(env).toContain('BARMAN_ERROR=failure: interrupted, the backup process is gone (killed or crashed)\n');
  });
});
