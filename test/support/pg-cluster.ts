// Throwaway PostgreSQL clusters for tests: real servers of any supported major,
// owned by the `postgres` OS user, with a non-superuser `barman` role set up the
// way the reference documents for a Barman deployment.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { freePort } from './free-port.ts';
import {
  asServerUser,
  chownToServer,
  isPostmasterOf,
  pgBinDir,
  postmasterPid,
  runRoot,
  stopDataDirSync,
  type PgMajor,
} from './run-root.ts';

export type { PgMajor } from './run-root.ts';
export { pgBinDir } from './run-root.ts';

export type SettingValue = string | number | boolean;
export type StopMode = 'smart' | 'fast' | 'immediate';

export interface StartClusterOptions {
  /** Server major; 15 uses Debian's packaged server, the others the npm builds. */
  major?: PgMajor;
  /** Extra postgresql.conf settings; they override the harness defaults. */
  settings?: Record<string, SettingValue>;
  /** Extra pg_hba.conf lines, placed before the defaults so they win on first match. */
  hba?: string[];
  /** Password for the `barman` role; random when omitted. */
  barmanPassword?: string;
  /** initdb -k; default true. */
  dataChecksums?: boolean;
  /** Prefix of the cluster's directory name, to make leftovers recognisable. */
  name?: string;
}

export interface PgCluster {
  readonly major: PgMajor;
  /** `SHOW server_version`, e.g. "15.18 (Debian 15.18-0+deb12u1)". */
  readonly version: string;
  /** `SHOW server_version_num`, e.g. 150018. */
  readonly versionNum: number;
  readonly port: number;
  readonly host: '127.0.0.1';
  readonly socketDir: string;
  readonly dataDir: string;
  /** Parent of dataDir, socketDir and logFile; removed by destroy(). */
  readonly dir: string;
  readonly logFile: string;
  readonly binDir: string;
  readonly barmanPassword: string;
  /** libpq keyword/value string for the barman role over TCP; `extra` adds or overrides keywords. */
  conninfo(extra?: Record<string, string | number>): string;
  /** node-postgres config for the barman role over TCP. */
  barmanConfig(extra?: pg.ClientConfig): pg.ClientConfig;
  /** node-postgres config for the postgres superuser over the unix socket (trust). */
  superuserConfig(extra?: pg.ClientConfig): pg.ClientConfig;
  superuserQuery<R extends Record<string, unknown> = Record<string, unknown>>(
    sql: string,
    params?: unknown[],
  ): Promise<R[]>;
  stop(mode?: StopMode): Promise<void>;
  start(): Promise<void>;
  restart(mode?: StopMode): Promise<void>;
  /** pg_ctl promote -w; only meaningful for a cluster running as a standby. */
  promote(): Promise<void>;
  /** Postmaster pid from postmaster.pid, or null when no server is running. */
  pid(): number | null;
  isRunning(): boolean;
  /** Last lines of the server log, for assertion messages. */
  logTail(lines?: number): string;
  /** Immediate stop if running, then remove the cluster directory. */
  destroy(): Promise<void>;
}

const HOST = '127.0.0.1';
const START_TIMEOUT_S = 120;
let clusterSeq = 0;

function run(
  file: string,
  args: string[],
  opts: { cwd: string; timeoutMs?: number },
): Promise<{ stdout: string; stderr: string }> {
  const [f, a] = asServerUser(file, args);
  return new Promise((resolvePromise, reject) => {
    execFile(
      f,
      a,
      { cwd: opts.cwd, env: serverEnv(), timeout: opts.timeoutMs ?? 180_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          const msg = `${[file, ...args].join(' ')} failed: ${err.message}\n${stdout}${stderr}`;
          reject(Object.assign(new Error(msg.trim()), { stdout, stderr }));
        } else {
          resolvePromise({ stdout, stderr });
        }
      },
    );
  });
}

// PG* variables in the test runner's environment would silently redirect pg_ctl
// or the server, and locale variables change initdb's defaults.
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('PG') || k.startsWith('LC_') || k === 'LANG' || k === 'LANGUAGE') continue;
    env[k] = v;
  }
  env.LANG = 'C.UTF-8';
  return env;
}

function confValue(v: SettingValue): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function conninfoValue(v: string | number): string {
  const s = String(v);
  return s !== '' && /^[^\s'\\]+$/.test(s) ? s : `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

function sqlLiteral(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// Another worker, sshd or a client's ephemeral port can grab the port between
// freePort() and the postmaster's bind(); such a start is retried on a new port.
function isPortClash(log: string): boolean {
  return /could not bind IPv4 address|Address already in use|could not create any TCP\/IP sockets/.test(log);
}

class Cluster implements PgCluster {
  readonly major: PgMajor;
  version = '';
  versionNum = 0;
  port: number;
  readonly host = HOST;
  readonly socketDir: string;
  readonly dataDir: string;
  readonly dir: string;
  readonly logFile: string;
  readonly binDir: string;
  readonly barmanPassword: string;
  #baseConf = '';
  #settings: Record<string, SettingValue> = {};

  constructor(init: {
    major: PgMajor;
    port: number;
    dir: string;
    binDir: string;
    barmanPassword: string;
  }) {
    this.major = init.major;
    this.port = init.port;
    this.dir = init.dir;
    this.binDir = init.binDir;
    this.barmanPassword = init.barmanPassword;
    this.dataDir = join(init.dir, 'data');
    this.socketDir = join(init.dir, 'sock');
    this.logFile = join(init.dir, 'server.log');
  }

  writeConf(baseConf: string, settings: Record<string, SettingValue>): void {
    this.#baseConf = baseConf;
    this.#settings = settings;
    this.#rewriteConf();
  }

  #rewriteConf(): void {
    const all: Record<string, SettingValue> = {
      ...this.#settings,
      port: this.port,
      unix_socket_directories: this.socketDir,
    };
    const block = Object.entries(all)
      .map(([k, v]) => `${k} = ${confValue(v)}`)
      .join('\n');
    writeFileSync(
      join(this.dataDir, 'postgresql.conf'),
      `${this.#baseConf.trimEnd()}\n\n# barkeep test harness\n${block}\n`,
    );
  }

  conninfo(extra: Record<string, string | number> = {}): string {
    const kv: Record<string, string | number> = {
      host: this.host,
      port: this.port,
      user: 'barman',
      dbname: 'postgres',
      password: this.barmanPassword,
      ...extra,
    };
    return Object.entries(kv)
      .map(([k, v]) => `${k}=${conninfoValue(v)}`)
      .join(' ');
  }

  barmanConfig(extra: pg.ClientConfig = {}): pg.ClientConfig {
    return {
      host: this.host,
      port: this.port,
      user: 'barman',
      password: this.barmanPassword,
      database: 'postgres',
      ...extra,
    };
  }

  superuserConfig(extra: pg.ClientConfig = {}): pg.ClientConfig {
    return { host: this.socketDir, port: this.port, user: 'postgres', database: 'postgres', ...extra };
  }

  async superuserQuery<R extends Record<string, unknown> = Record<string, unknown>>(
    sql: string,
    params?: unknown[],
  ): Promise<R[]> {
    const client = new pg.Client(this.superuserConfig());
    // An 'error' event without a listener (server shut down mid-query) would crash the worker.
    client.on('error', () => {});
    await client.connect();
    try {
      const res = await client.query<R>(sql, params);
      return res.rows;
    } finally {
      await client.end().catch(() => {});
    }
  }

  pid(): number | null {
    const pid = postmasterPid(this.dataDir);
    return pid !== null && isPostmasterOf(pid, this.dataDir) ? pid : null;
  }

  isRunning(): boolean {
    return this.pid() !== null;
  }

  logTail(lines = 40): string {
    return tail(this.logFile, lines);
  }

  async start(): Promise<void> {
    const logSize = existsSync(this.logFile) ? readFileSync(this.logFile).length : 0;
    try {
      await this.#pgCtl(['-l', this.logFile, '-w', '-t', String(START_TIMEOUT_S), 'start']);
    } catch (err) {
      const log = existsSync(this.logFile) ? readFileSync(this.logFile).subarray(logSize).toString() : '';
      throw Object.assign(new Error(`${(err as Error).message}\n--- server log ---\n${log.trimEnd()}`), {
        portClash: isPortClash(log),
      });
    }
  }

  /** First start: retries on a fresh port when the chosen one was taken meanwhile. */
  async startFresh(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.start();
        return;
      } catch (err) {
        if (!(err as { portClash?: boolean }).portClash || attempt >= 5) throw err;
        this.port = await freePort();
        this.#rewriteConf();
      }
    }
  }

  async stop(mode: StopMode = 'fast'): Promise<void> {
    await this.#pgCtl(['-m', mode, '-w', '-t', String(START_TIMEOUT_S), 'stop']);
  }

  async restart(mode: StopMode = 'fast'): Promise<void> {
    await this.stop(mode);
    await this.start();
  }

  async promote(): Promise<void> {
    await this.#pgCtl(['-w', '-t', String(START_TIMEOUT_S), 'promote']);
  }

  async destroy(): Promise<void> {
    if (this.isRunning()) {
      try {
        await this.stop('immediate');
      } catch {
        stopDataDirSync(this.dataDir);
      }
    }
    await rm(this.dir, { recursive: true, force: true, maxRetries: 3 });
  }

  async loadVersion(): Promise<void> {
    const [row] = await this.superuserQuery<{ server_version: string; num: string }>(
      `SELECT current_setting('server_version') AS server_version,
              current_setting('server_version_num') AS num`,
    );
    this.version = row!.server_version;
    this.versionNum = Number(row!.num);
  }

  #pgCtl(args: string[]): Promise<unknown> {
    return run(join(this.binDir, 'pg_ctl'), ['-D', this.dataDir, ...args], { cwd: this.dir });
  }
}

async function createBarmanRole(c: Cluster): Promise<void> {
  const backupFns =
    c.major >= 15
      ? 'pg_backup_start(text, boolean), pg_backup_stop(boolean)'
      : 'pg_start_backup(text, boolean, boolean), pg_stop_backup(boolean, boolean)';
  // pg_checkpoint appeared in 15; before that CHECKPOINT is superuser-only.
  const roles = ['pg_read_all_settings', 'pg_read_all_stats', ...(c.major >= 15 ? ['pg_checkpoint'] : [])];
  await c.superuserQuery(`CREATE ROLE barman LOGIN REPLICATION PASSWORD ${sqlLiteral(c.barmanPassword)}`);
  await c.superuserQuery(
    `GRANT EXECUTE ON FUNCTION ${backupFns}, pg_switch_wal(), pg_create_restore_point(text) TO barman`,
  );
  await c.superuserQuery(`GRANT ${roles.join(', ')} TO barman`);
}

export async function startCluster(opts: StartClusterOptions = {}): Promise<PgCluster> {
  const major = opts.major ?? 15;
  const binDir = pgBinDir(major);
  const root = runRoot();
  const dir = resolve(
    root,
    `${opts.name ?? `pg${major}`}-${process.pid}-${++clusterSeq}-${randomBytes(2).toString('hex')}`,
  );
  mkdirSync(dir, { mode: 0o755 });
  chownToServer(dir);
  const cluster = new Cluster({
    major,
    port: await freePort(),
    dir,
    binDir,
    barmanPassword: opts.barmanPassword ?? randomBytes(12).toString('hex'),
  });
  try {
    mkdirSync(cluster.socketDir, { mode: 0o755 });
    chownToServer(cluster.socketDir);

    const checksums = opts.dataChecksums ?? true;
    // PG18 turns checksums on by default, so "off" has to be asked for.
    const checksumArgs = checksums ? ['-k'] : major >= 18 ? ['--no-data-checksums'] : [];
    await run(
      join(binDir, 'initdb'),
      [
        '-D', cluster.dataDir,
        '-U', 'postgres',
        '--auth-local=trust',
        '--auth-host=scram-sha-256',
        '-E', 'UTF8',
        '--locale=C.UTF-8',
        ...checksumArgs,
      ],
      { cwd: dir },
    );

    cluster.writeConf(readFileSync(join(cluster.dataDir, 'postgresql.conf'), 'utf8'), {
      listen_addresses: HOST,
      wal_level: 'replica',
      max_wal_senders: 10,
      max_replication_slots: 10,
      password_encryption: 'scram-sha-256',
      shared_buffers: '32MB',
      max_connections: 50,
      ...opts.settings,
    });
    writeFileSync(
      join(cluster.dataDir, 'pg_hba.conf'),
      [
        '# barkeep test harness: extra lines first, so they win on first match',
        ...(opts.hba ?? []),
        'local all postgres trust',
        'local replication postgres trust',
        'host all all 127.0.0.1/32 scram-sha-256',
        'host replication barman 127.0.0.1/32 scram-sha-256',
        '',
      ].join('\n'),
    );

    await cluster.startFresh();
    await createBarmanRole(cluster);
    await cluster.loadVersion();
    return cluster;
  } catch (err) {
    // Leave the directory for post-mortem (teardown removes it) but never a server.
    if (cluster.isRunning()) stopDataDirSync(cluster.dataDir);
    const msg = (err as Error).message;
    const log = msg.includes('--- server log ---') ? '' : `\n--- server log ---\n${cluster.logTail(30)}`;
    throw new Error(`startCluster(major ${major}) in ${dir} failed: ${msg}${log}`, { cause: err });
  }
}

/**
 * A streaming standby of `primary`, made from a cold copy of its data
 * directory (works for every major, including the npm builds that ship no
 * pg_basebackup). The primary is stopped for the copy and started again.
 * Same system identifier, same `barman` role and password; no slots.
 */
export async function cloneAsStandby(primary: PgCluster, settings: Record<string, SettingValue> = {}): Promise<PgCluster> {
  const dir = resolve(runRoot(), `standby${primary.major}-${process.pid}-${++clusterSeq}-${randomBytes(2).toString('hex')}`);
  mkdirSync(dir, { mode: 0o755 });
  chownToServer(dir);
  const standby = new Cluster({ major: primary.major, port: await freePort(), dir, binDir: primary.binDir, barmanPassword: primary.barmanPassword });
  mkdirSync(standby.socketDir, { mode: 0o755 });
  chownToServer(standby.socketDir);
  await primary.stop('fast');
  try {
    await run('cp', ['-a', primary.dataDir, standby.dataDir], { cwd: dir });
  } finally {
    await primary.start();
  }
  await rm(join(standby.dataDir, 'postmaster.pid'), { force: true });
  for (const slot of existsSync(join(standby.dataDir, 'pg_replslot')) ? readdirSync(join(standby.dataDir, 'pg_replslot')) : []) {
    await rm(join(standby.dataDir, 'pg_replslot', slot), { recursive: true, force: true });
  }
  standby.writeConf(readFileSync(join(standby.dataDir, 'postgresql.conf'), 'utf8'), {
    primary_conninfo: `host=${primary.socketDir} port=${primary.port} user=postgres`,
    hot_standby: 'on',
    ...settings,
  });
  writeFileSync(join(standby.dataDir, 'standby.signal'), '');
  chownToServer(join(standby.dataDir, 'standby.signal'));
  await standby.startFresh();
  await standby.loadVersion();
  return standby;
}
