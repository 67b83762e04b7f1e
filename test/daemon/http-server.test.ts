import { appendFileSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { newBackupInfo, writeBackupInfo, type BackupInfo } from '../../src/catalog/backup-info.ts';
import { createServerLayout, currentXlogDbPath, metaBackupInfoPath } from '../../src/catalog/layout.ts';
import { formatXlogDbLine, type WalFileInfo } from '../../src/catalog/xlog-db.ts';
import type { CheckResult, ServerCheckReport } from '../../src/checks/server-checks.ts';
import { loadConfigFile, type ServerConfig } from '../../src/config/load.ts';
import type { ServerTaskState } from '../../src/daemon/daemon-state.ts';
import { parseListen, startHttpServer, type HttpDeps, type HttpServerHandle } from '../../src/daemon/http-server.ts';
import { estimateDaysUntilFull, GrowthTracker, GROWTH_SAMPLE_INTERVAL_MS, WalCatalogScanner } from '../../src/daemon/metrics.ts';
import { receiverStatePath, writeReceiverState, type ReceiverState } from '../../src/wal/receiver-state.ts';
import { makeTempDir } from '../support/tmp.ts';

// The daemon's /metrics and /health against crafted catalogs (real configuration,
// backup.info and xlog.db files) with a fake check runner and fake task state: no
// PostgreSQL involved.

const SECRET = 'sekrit-pw';
const HOUR = 3_600_000;

let dir: string;
let servers: ServerConfig[];
/** When the oldest WAL pg's receiver has not flushed was announced (ms since the epoch). */
let behindSince: number;
const server = (name: string) => servers.find((s) => s.name === name)!;

function backup(fields: Partial<BackupInfo>): BackupInfo {
  return newBackupInfo({
    status: 'DONE',
    mode: 'postgres',
    server_name: 'pg',
    timeline: 1,
    begin_wal: '000000010000000000000002',
    end_wal: '000000010000000000000002',
    begin_time: '2024-03-01 04:00:00+00:00',
    end_time: '2024-03-01 04:10:00+00:00',
    size: 1000,
    version: 150000,
    systemid: '1',
    ...fields,
  });
}

const wal = (name: string, size: number, time: number): WalFileInfo => ({ name, size, time, compression: 'gzip', encryption: null });

beforeAll(async () => {
  dir = makeTempDir('http-server');
  const home = join(dir, 'home');
  const conf = join(dir, 'barman.conf');
  const section = (name: string) =>
    `[${name}]\nconninfo = host=127.0.0.1 port=1 user=barman password=${SECRET} dbname=postgres\n` +
    `streaming_conninfo = host=127.0.0.1 port=1 user=barman password=${SECRET}\nstreaming_archiver = on\nslot_name = barman\n`;
  writeFileSync(conf, `[barman]\nbarman_home = ${home}\nlog_file = ${dir}/barkeep.log\n\n${section('pg')}\n${section('other')}`);
  const config = loadConfigFile(conf);
  servers = [...config.servers.values()].filter((s) => !s.disabled);
  expect(servers.map((s) => s.name).sort()).toEqual(['other', 'pg']);
  for (const s of servers) await createServerLayout(s.paths);

  const pg = server('pg').paths;
  await writeBackupInfo(metaBackupInfoPath(pg, '20240301T040000'), backup({ size: 1000 }));
  await writeBackupInfo(metaBackupInfoPath(pg, '20240302T040000'), backup({ end_time: '2024-03-02 04:05:06.250000+00:00', size: 2500, deduplicated_size: 1500 }));
  await writeBackupInfo(metaBackupInfoPath(pg, '20240303T040000'), backup({ status: 'FAILED', end_time: null, size: null, error: 'failure' }));
  writeFileSync(
    currentXlogDbPath(pg),
    [wal('000000010000000000000001', 100, 1709251200), wal('000000010000000000000002', 200, 1709337600.5), wal('00000002.history', 42, 1709337700)].map(formatXlogDbLine).join(''),
  );
  behindSince = Date.now() - 7_000;
  await writeReceiverState(pg, {
    pid: 1,
    state: 'streaming',
    updatedAt: new Date().toISOString(),
    timeline: 1,
    writtenLsn: '0/3000100',
    flushedLsn: '0/3000000',
    lastError: null,
    gap: null,
    events: [],
    primaryWalEnd: '0/3000500',
    behindSince: new Date(behindSince).toISOString(),
  });

  // `other`: an xlog.db that cannot be read (a directory in its place) and one backup.
  const other = server('other').paths;
  mkdirSync(currentXlogDbPath(other));
  await writeBackupInfo(metaBackupInfoPath(other, '20240301T040000'), backup({ server_name: 'other', status: 'WAITING_FOR_WALS' }));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

afterEach(() => {
  vi.useRealTimers();
});

function taskState(name: string, patch: Partial<ServerTaskState['receiver']> = {}): ServerTaskState {
  return {
    server: name,
    receiver: { phase: 'streaming', lastError: null, restarts: 3, lastSegmentAt: 1_709_400_000_000, lastSegment: '000000010000000000000002', ...patch },
    maintenance: { lastRunAt: 1_709_400_060_000, lastOutcome: 'ok', lastMessage: null },
    schedule: { cron: '0 4 * * *', lastStartedAt: 1_709_366_400_000, lastOutcome: 'failed', lastMessage: 'boom', running: true },
    cloud: null,
  };
}

interface Fake {
  deps: HttpDeps;
  calls: Map<string, number>;
  results: Map<string, CheckResult[] | Error>;
  tasks: ServerTaskState[];
}

function fakeDeps(): Fake {
  const calls = new Map<string, number>();
  const results = new Map<string, CheckResult[] | Error>();
  const fake: Fake = {
    calls,
    results,
    tasks: [taskState('pg'), taskState('other', { phase: 'starting', restarts: 0, lastSegmentAt: null })],
    deps: {
      servers: () => servers,
      state: () => fake.tasks,
      check: async (s: ServerConfig): Promise<ServerCheckReport> => {
        calls.set(s.name, (calls.get(s.name) ?? 0) + 1);
        const r = results.get(s.name) ?? [{ name: 'PostgreSQL', ok: true, hint: '' }];
        if (r instanceof Error) throw r;
        return { server: s.name, active: true, disabled: false, checks: r, perf: {} };
      },
      logger: pino({ level: 'silent' }),
    },
  };
  return fake;
}

const handles: HttpServerHandle[] = [];
async function start(fake: Fake, listen = '127.0.0.1:0'): Promise<{ url: (path: string) => string; handle: HttpServerHandle }> {
  const handle = await startHttpServer(listen, fake.deps);
  handles.push(handle);
  return { handle, url: (path) => `http://127.0.0.1:${handle.address.port}${path}` };
}
afterAll(async () => {
  await Promise.all(handles.map((h) => h.close()));
});

/** The value of one series in Prometheus text format, or undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? '').split(',').filter((l) => l !== '').sort();
    if (have.length === want.length && have.every((l, i) => l === want[i])) return m[3] === '+Inf' ? Infinity : Number(m[3]);
  }
  return undefined;
}

async function scrape(url: string): Promise<string> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain; version=0.0.4');
  return res.text();
}

describe('/health', () => {
  it('answers 200 while every check passes, then 503 naming the failing check once the cache expires', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const fake = fakeDeps();
    const { url } = await start(fake);

    const [a, b] = await Promise.all([fetch(url('/health')), fetch(url('/health'))]);
    const c = await fetch(url('/health'));
    for (const res of [a, b, c]) expect(res.status).toBe(200);
    expect(a.headers.get('content-type')).toBe('application/json; charset=utf-8');
    const body = (await c.json()) as { status: string; servers: Record<string, { ok: boolean; failed: unknown[] }>; checked_at: string };
    expect(body).toEqual({ status: 'ok', servers: { pg: { ok: true, failed: [] }, other: { ok: true, failed: [] } }, checked_at: expect.any(String) as string });
    expect(new Date(body.checked_at).toISOString()).toBe(body.checked_at);
    // Three requests, one run of the checks per server.
    expect(Object.fromEntries(fake.calls)).toEqual({ pg: 1, other: 1 });

    fake.results.set('pg', [
      { name: 'PostgreSQL', ok: false, hint: `cannot connect with host=127.0.0.1 port=1 user=barman password=${SECRET} dbname=postgres` },
      { name: 'wal_level', ok: true, hint: '' },
    ]);
    // Still cached.
    expect((await fetch(url('/health'))).status).toBe(200);
    vi.setSystemTime(Date.now() + 6_000);
    const failing = await fetch(url('/health'));
    expect(failing.status).toBe(503);
    const text = await failing.text();
    expect(text).not.toContain(SECRET);
    expect(JSON.parse(text)).toEqual({
      status: 'failing',
      servers: {
        pg: { ok: false, failed: [{ name: 'PostgreSQL', hint: 'cannot connect with host=127.0.0.1 port=1 user=barman password=*** dbname=postgres' }] },
        other: { ok: true, failed: [] },
      },
      checked_at: expect.any(String) as string,
    });
    expect(Object.fromEntries(fake.calls)).toEqual({ pg: 2, other: 2 });

    const head = await fetch(url('/health'), { method: 'HEAD' });
    expect(head.status).toBe(503);
    expect(await head.text()).toBe('');
  });

  it('fails a server whose receiver task keeps retrying, and one whose checks throw', async () => {
    const fake = fakeDeps();
    fake.tasks = [taskState('pg', { phase: 'retrying', lastError: 'connection refused', restarts: 4 }), taskState('other')];
    fake.results.set('other', new Error('no route to host'));
    const { url } = await start(fake);
    const res = await fetch(url('/health'));
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({
      status: 'failing',
      servers: {
        pg: { ok: false, failed: [{ name: 'WAL receiver', hint: 'retrying after: connection refused (4 restarts)' }] },
        other: { ok: false, failed: [{ name: 'checks', hint: 'checks could not run: no route to host' }] },
      },
    });

    // The receiver part is live: no need to wait for the check cache.
    fake.tasks = [taskState('pg'), taskState('other')];
    const again = (await (await fetch(url('/health'))).json()) as { servers: Record<string, { ok: boolean }> };
    expect(again.servers.pg!.ok).toBe(true);
  });
});

describe('/metrics', () => {
  it('exposes the catalog, disk, receiver, task and check series computed at scrape time', async () => {
    const fake = fakeDeps();
    fake.results.set('pg', [
      { name: 'PostgreSQL', ok: true, hint: '' },
      { name: 'replication slot', ok: false, hint: 'slot missing' },
    ]);
    const { url } = await start(fake);
    const text = await scrape(url('/metrics'));
    const pg = { server: 'pg' };

    expect(sample(text, 'barkeep_backups', { server: 'pg', status: 'DONE' })).toBe(2);
    expect(sample(text, 'barkeep_backups', { server: 'pg', status: 'FAILED' })).toBe(1);
    expect(sample(text, 'barkeep_backups', { server: 'pg', status: 'WAITING_FOR_WALS' })).toBe(0);
    expect(sample(text, 'barkeep_last_backup_timestamp_seconds', pg)).toBe(Date.parse('2024-03-02T04:05:06.250Z') / 1000);
    const age = sample(text, 'barkeep_last_backup_age_seconds', pg)!;
    expect(Math.abs(age - (Date.now() - Date.parse('2024-03-02T04:05:06.250Z')) / 1000)).toBeLessThan(60);
    expect(sample(text, 'barkeep_last_backup_size_bytes', pg)).toBe(2500);
    expect(sample(text, 'barkeep_backups_size_bytes', pg)).toBe(1000 + 1500);

    expect(sample(text, 'barkeep_wal_files', pg)).toBe(3);
    expect(sample(text, 'barkeep_wal_size_bytes', pg)).toBe(342);
    expect(sample(text, 'barkeep_last_archived_wal_timestamp_seconds', pg)).toBe(1709337600.5);
    expect(sample(text, 'barkeep_wal_catalog_invalid_lines', pg)).toBe(0);

    const free = sample(text, 'barkeep_disk_free_bytes', pg)!;
    expect(free).toBeGreaterThan(0);
    expect(sample(text, 'barkeep_disk_total_bytes', pg)).toBeGreaterThanOrEqual(free);
    expect(sample(text, 'barkeep_disk_days_until_full', pg)).toBeUndefined();

    expect(sample(text, 'barkeep_receiver_up', pg)).toBe(1);
    expect(sample(text, 'barkeep_receiver_up', { server: 'other' })).toBe(0);
    expect(sample(text, 'barkeep_receiver_phase', { server: 'other', phase: 'starting' })).toBe(1);
    expect(sample(text, 'barkeep_receiver_phase', { server: 'other', phase: 'streaming' })).toBe(0);
    expect(sample(text, 'barkeep_receiver_restarts_total', pg)).toBe(3);
    expect(sample(text, 'barkeep_receiver_last_segment_timestamp_seconds', pg)).toBe(1_709_400_000);
    expect(sample(text, 'barkeep_receiver_last_segment_timestamp_seconds', { server: 'other' })).toBeUndefined();
    expect(sample(text, 'barkeep_receiver_received_lsn', pg)).toBe(0x3000100);
    expect(sample(text, 'barkeep_receiver_flushed_lsn', pg)).toBe(0x3000000);
    expect(sample(text, 'barkeep_receiver_unflushed_bytes', pg)).toBe(0x100);
    expect(sample(text, 'barkeep_receiver_timeline', pg)).toBe(1);
    expect(sample(text, 'barkeep_receiver_wal_gap', pg)).toBe(0);
    expect(sample(text, 'barkeep_receiver_received_lsn', { server: 'other' })).toBeUndefined();
    expect(sample(text, 'barkeep_receiver_primary_lsn', pg)).toBe(0x3000500);
    expect(sample(text, 'barkeep_receiver_lag_bytes', pg)).toBe(0x500);
    const lag = sample(text, 'barkeep_receiver_lag_seconds', pg)!;
    expect(lag).toBeGreaterThanOrEqual(7);
    expect(lag).toBeLessThan(60);
    for (const name of ['barkeep_receiver_primary_lsn', 'barkeep_receiver_lag_bytes', 'barkeep_receiver_lag_seconds']) expect(sample(text, name, { server: 'other' })).toBeUndefined();

    expect(sample(text, 'barkeep_maintenance_last_run_timestamp_seconds', pg)).toBe(1_709_400_060);
    expect(sample(text, 'barkeep_maintenance_last_run_failed', pg)).toBe(0);
    expect(sample(text, 'barkeep_scheduled_backup_running', pg)).toBe(1);
    expect(sample(text, 'barkeep_scheduled_backup_last_start_timestamp_seconds', pg)).toBe(1_709_366_400);
    expect(sample(text, 'barkeep_scheduled_backup_last_failed', pg)).toBe(1);

    expect(sample(text, 'barkeep_check_failed', { server: 'pg', check: 'PostgreSQL' })).toBe(0);
    expect(sample(text, 'barkeep_check_failed', { server: 'pg', check: 'replication slot' })).toBe(1);
    expect(sample(text, 'barkeep_checks_timestamp_seconds', pg)).toBeGreaterThan(Date.now() / 1000 - 60);

    expect(text).toMatch(/^process_cpu_user_seconds_total \d/m);
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain('conninfo');

    // Checks are cached for metrics too: a second scrape runs none.
    await scrape(url('/metrics'));
    expect(Object.fromEntries(fake.calls)).toEqual({ pg: 1, other: 1 });
  });

  it('reports the lag behind the server growing while the receiver stays behind, 0 once caught up, and none while it is not streaming', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const fake = fakeDeps();
    const { url } = await start(fake);
    const pg = { server: 'pg' };
    const paths = server('pg').paths;
    const original = readFileSync(receiverStatePath(paths), 'utf8');
    const rewrite = (patch: Partial<ReceiverState>) => writeFileSync(receiverStatePath(paths), JSON.stringify({ ...JSON.parse(original), ...patch }));
    const next = async () => {
      vi.setSystemTime(Date.now() + 5_000);
      return scrape(url('/metrics'));
    };
    try {
      const first = sample(await next(), 'barkeep_receiver_lag_seconds', pg)!;
      expect(first).toBeCloseTo((Date.now() - behindSince) / 1000, 0);
      // Nothing flushed meanwhile: the same WAL is 5 s older.
      expect(sample(await next(), 'barkeep_receiver_lag_seconds', pg)).toBeCloseTo(first + 5, 3);

      rewrite({ flushedLsn: '0/3000500', writtenLsn: '0/3000500', behindSince: null });
      let text = await next();
      expect(sample(text, 'barkeep_receiver_lag_seconds', pg)).toBe(0);
      expect(sample(text, 'barkeep_receiver_lag_bytes', pg)).toBe(0);

      // Reconnecting: the daemon's task still streams, the receiver does not; the last heard WAL end stays.
      rewrite({ state: 'connecting' });
      text = await next();
      expect(sample(text, 'barkeep_receiver_up', pg)).toBe(0);
      expect(sample(text, 'barkeep_receiver_lag_seconds', pg)).toBeUndefined();
      expect(sample(text, 'barkeep_receiver_lag_bytes', pg)).toBeUndefined();
      expect(sample(text, 'barkeep_receiver_primary_lsn', pg)).toBe(0x3000500);

      // Stopped by the daemon.
      rewrite({});
      fake.tasks = [taskState('pg', { phase: 'retrying' }), taskState('other')];
      text = await next();
      expect(sample(text, 'barkeep_receiver_up', pg)).toBe(0);
      expect(sample(text, 'barkeep_receiver_lag_seconds', pg)).toBeUndefined();

      // A state file written before these fields existed.
      fake.tasks = [taskState('pg'), taskState('other')];
      const { primaryWalEnd: _p, behindSince: _b, ...old } = JSON.parse(original) as ReceiverState;
      writeFileSync(receiverStatePath(paths), JSON.stringify(old));
      text = await next();
      expect(sample(text, 'barkeep_receiver_up', pg)).toBe(1);
      expect(sample(text, 'barkeep_receiver_flushed_lsn', pg)).toBe(0x3000000);
      expect(sample(text, 'barkeep_receiver_primary_lsn', pg)).toBeUndefined();
      expect(sample(text, 'barkeep_receiver_lag_seconds', pg)).toBeUndefined();
      expect(sample(text, 'barkeep_collect_failed', { server: 'pg', source: 'receiver' })).toBe(0);
    } finally {
      writeFileSync(receiverStatePath(paths), original);
    }
  });

  it("flags a server whose xlog.db cannot be read and still serves its other series and the other server's", async () => {
    const { url } = await start(fakeDeps());
    const text = await scrape(url('/metrics'));
    const other = { server: 'other' };
    expect(sample(text, 'barkeep_collect_failed', { server: 'other', source: 'wal' })).toBe(1);
    expect(sample(text, 'barkeep_collect_failed', { server: 'other', source: 'catalog' })).toBe(0);
    expect(sample(text, 'barkeep_collect_failed', { server: 'pg', source: 'wal' })).toBe(0);
    expect(sample(text, 'barkeep_wal_files', other)).toBeUndefined();
    expect(sample(text, 'barkeep_backups', { server: 'other', status: 'WAITING_FOR_WALS' })).toBe(1);
    expect(sample(text, 'barkeep_last_backup_timestamp_seconds', other)).toBeUndefined();
    expect(sample(text, 'barkeep_wal_files', { server: 'pg' })).toBe(3);
  });

  it('follows xlog.db as it grows, is rewritten by rename, or is rewritten in place', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const fake = fakeDeps();
    const { url } = await start(fake);
    const path = currentXlogDbPath(server('pg').paths);
    const original = readFileSync(path, 'utf8');
    const next = async () => {
      vi.setSystemTime(Date.now() + 2_000);
      return scrape(url('/metrics'));
    };
    try {
      expect(sample(await next(), 'barkeep_wal_files', { server: 'pg' })).toBe(3);

      // Appended (as the archiver does), including a line that does not parse.
      appendFileSync(path, formatXlogDbLine(wal('000000010000000000000003', 1000, 1709400000)) + 'garbage\n');
      let text = await next();
      expect(sample(text, 'barkeep_wal_files', { server: 'pg' })).toBe(4);
      expect(sample(text, 'barkeep_wal_size_bytes', { server: 'pg' })).toBe(1342);
      expect(sample(text, 'barkeep_wal_catalog_invalid_lines', { server: 'pg' })).toBe(1);
      expect(sample(text, 'barkeep_last_archived_wal_timestamp_seconds', { server: 'pg' })).toBe(1709400000);

      // An unterminated last line counts, and still counts once its newline arrives.
      appendFileSync(path, formatXlogDbLine(wal('000000010000000000000004', 1, 1709400060)).trimEnd());
      expect(sample(await next(), 'barkeep_wal_files', { server: 'pg' })).toBe(5);
      appendFileSync(path, '\n');
      expect(sample(await next(), 'barkeep_wal_files', { server: 'pg' })).toBe(5);

      // Rewritten by rename (WAL removal after retention).
      writeFileSync(`${path}.tmp`, formatXlogDbLine(wal('000000010000000000000004', 7, 1709400060)));
      renameSync(`${path}.tmp`, path);
      text = await next();
      expect(sample(text, 'barkeep_wal_files', { server: 'pg' })).toBe(1);
      expect(sample(text, 'barkeep_wal_size_bytes', { server: 'pg' })).toBe(7);

      // Rewritten in place, larger than before (Barman's rebuild truncates and rewrites).
      writeFileSync(path, [wal('000000010000000000000005', 11, 1709400120), wal('000000010000000000000006', 13, 1709400180)].map(formatXlogDbLine).join(''));
      text = await next();
      expect(sample(text, 'barkeep_wal_files', { server: 'pg' })).toBe(2);
      expect(sample(text, 'barkeep_wal_size_bytes', { server: 'pg' })).toBe(24);
    } finally {
      writeFileSync(path, original);
    }
  });

  it('estimates the days until the disk is full once its samples span an hour', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const { url } = await start(fakeDeps());
    expect(sample(await scrape(url('/metrics')), 'barkeep_disk_days_until_full', { server: 'pg' })).toBeUndefined();
    vi.setSystemTime(Date.now() + 30 * 60_000);
    expect(sample(await scrape(url('/metrics')), 'barkeep_disk_days_until_full', { server: 'pg' })).toBeUndefined();
    vi.setSystemTime(Date.now() + 31 * 60_000);
    // The real filesystem's usage moves at random here: the value's existence is what counts.
    expect(sample(await scrape(url('/metrics')), 'barkeep_disk_days_until_full', { server: 'pg' })).toBeGreaterThanOrEqual(0);
  });
});

describe('xlog.db totals', () => {
  it('reads only what was appended since the last scan', async () => {
    const path = join(dir, 'scan-xlog.db');
    const names = ['01', '02', '03', '04', '05'].map((n) => `0000000100000000000000${n}`);
    writeFileSync(path, names.map((n, i) => formatXlogDbLine(wal(n, 100, i + 1))).join(''));
    const scanner = new WalCatalogScanner();
    expect(await scanner.totals('pg', path)).toEqual({ files: 5, bytes: 500, lastSegmentTime: 5, invalidLines: 0 });
    // Damage the first line without changing its length, away from the tail the scanner
    // compares to notice a rewrite: a rescan would count it invalid.
    const text = readFileSync(path, 'utf8');
    writeFileSync(path, text.replace('\t100\t', '\tx00\t'));
    appendFileSync(path, formatXlogDbLine(wal('000000010000000000000006', 300, 6)));
    expect(await scanner.totals('pg', path)).toEqual({ files: 6, bytes: 800, lastSegmentTime: 6, invalidLines: 0 });
    // A fresh scanner reads it all.
    expect(await new WalCatalogScanner().totals('pg', path)).toEqual({ files: 5, bytes: 700, lastSegmentTime: 6, invalidLines: 1 });
    expect(await scanner.totals('pg', join(dir, 'missing-xlog.db'))).toEqual({ files: 0, bytes: 0, lastSegmentTime: null, invalidLines: 0 });
  });
});

describe('disk growth estimate', () => {
  const t0 = 1_700_000_000_000;
  it('needs an hour of samples, extrapolates linearly, and says +Inf when usage does not grow', () => {
    expect(estimateDaysUntilFull([], t0, 100, 100)).toBeNull();
    expect(estimateDaysUntilFull([{ at: t0, usedBytes: 0 }], t0 + 59 * 60_000, 1e9, 1e12)).toBeNull();
    // 1 GB/h with 48 GB free: 2 days.
    expect(estimateDaysUntilFull([{ at: t0, usedBytes: 10e9 }], t0 + 2 * HOUR, 12e9, 48e9)).toBeCloseTo(2, 10);
    expect(estimateDaysUntilFull([{ at: t0, usedBytes: 10e9 }], t0 + 2 * HOUR, 9e9, 48e9)).toBe(Infinity);
    // Samples older than a day no longer count.
    expect(estimateDaysUntilFull([{ at: t0, usedBytes: 0 }], t0 + 25 * HOUR, 1e9, 1e12)).toBeNull();
  });

  it('keeps samples apart and within the window', () => {
    const g = new GrowthTracker();
    g.record('k', t0, 0);
    g.record('k', t0 + GROWTH_SAMPLE_INTERVAL_MS - 1, 5e9); // too close: not kept
    expect(g.daysUntilFull('k', t0 + HOUR, 1e9, 24e9)).toBeCloseTo(1, 10);
    for (let t = t0; t <= t0 + 30 * HOUR; t += GROWTH_SAMPLE_INTERVAL_MS) g.record('k', t, (t - t0) / HOUR);
    // Still an estimate after the first samples left the window.
    expect(g.daysUntilFull('k', t0 + 30 * HOUR, 30, 24)).toBeCloseTo(1, 6);
    g.retain([]);
    expect(g.daysUntilFull('k', t0 + 30 * HOUR, 30, 24)).toBeNull();
  });
});

describe('the listener', () => {
  it('answers 404 for other paths and 405 for other methods', async () => {
    const { url } = await start(fakeDeps());
    expect((await fetch(url('/'))).status).toBe(404);
    expect((await fetch(url('/metricsx'))).status).toBe(404);
    expect((await fetch(url('/metrics?x=1'))).status).toBe(200);
    const post = await fetch(url('/metrics'), { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    expect((await fetch(url('/health'), { method: 'DELETE' })).status).toBe(405);
  });

  it('refuses a bad http_listen value, naming it', async () => {
    for (const bad of ['nonsense', '127.0.0.1', '127.0.0.1:99999', '::1:9187', '']) {
      await expect(startHttpServer(bad, fakeDeps().deps)).rejects.toThrow(`http_listen: '${bad}' is not an address:port`);
    }
    expect(parseListen('[::1]:9187')).toEqual({ host: '::1', port: 9187 });
    expect(parseListen('localhost:0')).toEqual({ host: 'localhost', port: 0 });
  });

  it('says when the address is in use, and closes idempotently', async () => {
    const { handle } = await start(fakeDeps());
    const taken = `127.0.0.1:${handle.address.port}`;
    await expect(startHttpServer(taken, fakeDeps().deps)).rejects.toThrow(`http_listen: cannot listen on ${taken}: the address is already in use`);
    await handle.close();
    await handle.close();
    await expect(fetch(`http://${taken}/health`)).rejects.toThrow();
  });
});
