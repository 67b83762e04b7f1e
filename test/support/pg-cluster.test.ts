import { existsSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from './free-port.ts';
import { startCluster, type PgCluster, type PgMajor } from './pg-cluster.ts';
import { RUN_ROOT_ENV } from './run-root.ts';
import { makeTempDir } from './tmp.ts';

async function query<R extends Record<string, unknown>>(cfg: pg.ClientConfig, sql: string): Promise<R[]> {
  const client = new pg.Client(cfg);
  client.on('error', () => {});
  await client.connect();
  try {
    return (await client.query<R>(sql)).rows;
  } finally {
    await client.end().catch(() => {});
  }
}

async function connectError(cfg: pg.ClientConfig): Promise<NodeJS.ErrnoException & { code?: string }> {
  try {
    await query(cfg, 'SELECT 1');
  } catch (err) {
    return err as NodeJS.ErrnoException;
  }
  throw new Error('connection unexpectedly succeeded');
}

// The postmaster is reparented to pid 1 once pg_ctl exits, and pid 1 here reaps
// lazily: a stopped server can linger as a zombie for a moment.
function processLives(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe('run root', () => {
  it('reaches workers through the environment and inject()', () => {
    const root = process.env[RUN_ROOT_ENV];
    expect(root).toMatch(/^\/tmp\/barkeep-test-\d+-[0-9a-f]+$/);
    expect(inject('barkeepTestRoot')).toBe(root);
    const dir = makeTempDir('probe');
    expect(dir.startsWith(`${root}/tmp/probe-`)).toBe(true);
  });

  it('freePort never repeats within a process', async () => {
    const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
    expect(new Set(ports).size).toBe(ports.length);
  });
});

// The majors run side by side (cluster start is mostly waiting); the tests inside
// one major stay in order because the last one stops and restarts the server.
describe.concurrent.each([14, 15, 16, 17, 18] as const)('PostgreSQL %i cluster', (major: PgMajor) => {
  let c: PgCluster;
  beforeAll(async () => {
    c = await startCluster({ major, settings: { application_name: 'harness' } });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it.sequential('runs the requested major with the harness settings', async () => {
    expect(Math.floor(c.versionNum / 10000)).toBe(major);
    expect(c.port).not.toBe(5432);
    expect(c.dataDir.startsWith(process.env[RUN_ROOT_ENV]!)).toBe(true);
    const [row] = await c.superuserQuery<Record<string, string>>(
      `SELECT current_setting('wal_level') AS wal_level,
              current_setting('data_checksums') AS data_checksums,
              current_setting('application_name') AS application_name,
              current_setting('listen_addresses') AS listen_addresses,
              current_setting('port') AS port`,
    );
    expect(row).toEqual({
      wal_level: 'replica',
      data_checksums: 'on',
      application_name: 'harness',
      listen_addresses: '127.0.0.1',
      port: String(c.port),
    });
  });

  it.sequential('lets barman in over TCP with SCRAM, as a non-superuser', async () => {
    const [me] = await query<{ u: string; su: boolean; repl: boolean }>(
      c.barmanConfig(),
      `SELECT current_user AS u, rolsuper AS su, rolreplication AS repl FROM pg_roles WHERE rolname = current_user`,
    );
    expect(me).toEqual({ u: 'barman', su: false, repl: true });
    const [pw] = await c.superuserQuery<{ p: string }>(
      `SELECT rolpassword AS p FROM pg_authid WHERE rolname = 'barman'`,
    );
    expect(pw!.p).toMatch(/^SCRAM-SHA-256\$/);
    const [wl] = await query<{ wal_level: string }>(c.barmanConfig(), 'SHOW wal_level');
    expect(wl!.wal_level).toBe('replica');
  });

  it.sequential('rejects a wrong password with 28P01', async () => {
    const err = await connectError(c.barmanConfig({ password: 'wrong' }));
    expect(err.code).toBe('28P01');
  });

  it.sequential('gives barman the backup functions it was granted', async () => {
    const client = new pg.Client(c.barmanConfig());
    await client.connect();
    try {
      if (major >= 15) {
        await client.query(`SELECT pg_backup_start('harness', true)`);
        const stop = await client.query(`SELECT lsn, labelfile FROM pg_backup_stop(false)`);
        expect(stop.rows[0].labelfile).toContain('LABEL: harness');
        await client.query('CHECKPOINT');
      } else {
        await client.query(`SELECT pg_start_backup('harness', true, false)`);
        const stop = await client.query(`SELECT lsn, labelfile FROM pg_stop_backup(false, false)`);
        expect(stop.rows[0].labelfile).toContain('LABEL: harness');
        await expect(client.query('CHECKPOINT')).rejects.toThrow(/superuser|permission/);
      }
      await client.query('SELECT pg_switch_wal()');
      await client.query(`SELECT pg_create_restore_point('harness')`);
      const s = await client.query(`SELECT current_setting('data_directory') AS d`);
      expect(s.rows[0].d).toBe(c.dataDir);
    } finally {
      await client.end();
    }
  });

  it.sequential('accepts a physical replication connection for barman', async () => {
    const client = new pg.Client({ ...c.barmanConfig(), replication: true } as pg.ClientConfig);
    await client.connect();
    try {
      const res = await client.query('IDENTIFY_SYSTEM');
      const [ctl] = await c.superuserQuery<{ id: string }>(
        'SELECT system_identifier::text AS id FROM pg_control_system()',
      );
      expect(res.rows[0].systemid).toBe(ctl!.id);
      expect(Number(res.rows[0].timeline)).toBe(1);
    } finally {
      await client.end();
    }
  });

  it.sequential('stops, refuses connections, and starts again on the same port', async () => {
    const pidBefore = c.pid();
    expect(pidBefore).toBeGreaterThan(0);
    await c.stop();
    expect(c.pid()).toBeNull();
    expect(c.isRunning()).toBe(false);
    const err = await connectError(c.barmanConfig());
    expect(err.code).toBe('ECONNREFUSED');
    await c.start();
    const pidAfter = c.pid();
    expect(pidAfter).toBeGreaterThan(0);
    expect(pidAfter).not.toBe(pidBefore);
    const [row] = await query<{ port: string }>(c.barmanConfig(), 'SHOW port');
    expect(Number(row!.port)).toBe(c.port);
  });
});

describe('startCluster options', () => {
  it('starts two clusters in parallel on different ports', async () => {
    const [a, b] = await Promise.all([startCluster(), startCluster({ major: 17 })]);
    try {
      expect(a.port).not.toBe(b.port);
      expect(a.dataDir).not.toBe(b.dataDir);
      const [ra] = await a.superuserQuery<{ n: string }>('SHOW server_version_num');
      const [rb] = await b.superuserQuery<{ n: string }>('SHOW server_version_num');
      expect(ra).toBeDefined();
      expect(rb).toBeDefined();
      expect(a.isRunning() && b.isRunning()).toBe(true);
    } finally {
      await Promise.all([a.destroy(), b.destroy()]);
    }
  });

  it('honours dataChecksums: false (PG18 enables them by default), hba lines and a fixed password', async () => {
    const c = await startCluster({
      major: 18,
      dataChecksums: false,
      barmanPassword: "it's a secret",
      hba: ['host all barman 127.0.0.1/32 reject'],
    });
    try {
      const [row] = await c.superuserQuery<{ data_checksums: string }>('SHOW data_checksums');
      expect(row!.data_checksums).toBe('off');
      expect(c.conninfo()).toContain(`password='it\\'s a secret'`);
      // The extra line precedes the defaults, so it wins for ordinary connections...
      const err = await connectError(c.barmanConfig());
      expect(err.message).toMatch(/rejects connection/);
      // ...while replication connections still match the default replication line.
      const repl = new pg.Client({ ...c.barmanConfig(), replication: true } as pg.ClientConfig);
      await repl.connect();
      await repl.end();
    } finally {
      await c.destroy();
    }
  });

  it('destroy() stops the server and removes its directory', async () => {
    const c = await startCluster();
    const pid = c.pid();
    expect(pid).toBeGreaterThan(0);
    await c.destroy();
    expect(existsSync(c.dir)).toBe(false);
    expect(processLives(pid!)).toBe(false);
  });
});
