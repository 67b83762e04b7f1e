// The files that install and run barkeep as a service: the systemd unit, the
// example configuration, docker-compose.yml and its Dockerfile. Each is checked
// against what barkeep itself accepts (its own configuration loader) and
// against the tools that consume it when they are on the machine
// (systemd-analyze, docker compose); without them, the files are parsed here
// and checked structurally.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { allIssues, formatIssue, loadConfigFile, type Config } from '../../src/config/load.ts';
import { GLOBAL_KEYS, SERVER_KEYS } from '../../src/config/keys.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const repo = (...p: string[]) => join(REPO, ...p);
const read = (...p: string[]) => readFileSync(repo(...p), 'utf8');

const tmp = mkdtempSync(join(tmpdir(), 'barkeep-packaging-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let caseNo = 0;
const caseDir = () => {
  const d = join(tmp, `case${caseNo++}`);
  mkdirSync(d, { recursive: true });
  return d;
};

function run(cmd: string, args: string[], opts: { cwd?: string; input?: string } = {}): { status: number | null; out: string; err: string; missing: boolean } {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, input: opts.input, encoding: 'utf8', timeout: 60_000 });
  const missing = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
  return { status: r.status, out: r.stdout ?? '', err: r.stderr ?? '', missing };
}

// ---------------------------------------------------------------------------
// barman.conf: loaded by barkeep's own loader, from a copy whose
// configuration_files_directory points at the copy of barman.d.

const KNOWN_KEYS = new Set([...Object.keys(GLOBAL_KEYS), ...Object.keys(SERVER_KEYS)]);
const INCLUDE_LINE = /^configuration_files_directory\s*=\s*\/etc\/barman\.d\s*$/m;

/** Copies a barman.conf and its barman.d into a fresh directory and loads them. */
function loadCopy(confText: string, includeDir: string, extra: Record<string, string> = {}): Config {
  const dir = caseDir();
  cpSync(includeDir, join(dir, 'barman.d'), { recursive: true });
  for (const [name, text] of Object.entries(extra)) writeFileSync(join(dir, 'barman.d', name), text);
  expect(confText, 'the shipped file includes /etc/barman.d').toMatch(INCLUDE_LINE);
  writeFileSync(join(dir, 'barman.conf'), confText.replace(INCLUDE_LINE, `configuration_files_directory = ${join(dir, 'barman.d')}`));
  return loadConfigFile(join(dir, 'barman.conf'));
}

const issues = (c: Config, level: 'error' | 'warning') => allIssues(c).filter((i) => i.level === level).map(formatIssue);

/** ";key = value" lines whose key barkeep knows: optional settings to uncomment. */
function optionalSettings(text: string): { line: number; key: string }[] {
  return text.split('\n').flatMap((l, i) => {
    const m = /^;([a-z_]+)\s*=/.exec(l);
    return m && KNOWN_KEYS.has(m[1]!) ? [{ line: i, key: m[1]! }] : [];
  });
}
function uncomment(text: string, line: number): string {
  const lines = text.split('\n');
  lines[line] = lines[line]!.slice(1);
  return lines.join('\n');
}

describe('config/barman.conf and config/barman.d/pg.conf', () => {
  const conf = read('config', 'barman.conf');
  const pgConf = read('config', 'barman.d', 'pg.conf');
  const load = () => loadCopy(conf, repo('config', 'barman.d'));

  it('load with barkeep\'s loader without an error or a warning', () => {
    const config = load();
    const warnings = issues(config, 'warning');
    if (warnings.length > 0) console.log(`warnings:\n  ${warnings.join('\n  ')}`);
    expect(issues(config, 'error')).toEqual([]);
    expect(warnings).toEqual([]);
    expect(config.fatal).toBe(false);
    expect([...config.servers.keys()]).toEqual(['pg']);
    expect(config.files.map((f) => basename(f))).toEqual(['barman.conf', 'pg.conf']);
  });

  it('hold the seed deployment\'s settings (global section and streaming server)', () => {
    const config = load();
    const g = config.global;
    expect(g.barman_user).toBe('barman');
    expect(g.barman_home).toBe('/var/lib/barman');
    expect(g.log_file).toBe('/var/log/barman/barman.log');
    expect(g.log_level).toBe('info');
    expect(g.http_listen).toEqual({ host: '127.0.0.1', port: 9187 });
    // Every key of the seed's /etc/barman.conf is set in [barman].
    for (const k of ['barman_user', 'configuration_files_directory', 'barman_home', 'log_file', 'log_level', 'compression', 'retention_policy', 'wal_retention_policy']) {
      expect(conf, k).toMatch(new RegExp(`^${k}\\s*=`, 'm'));
    }

    const pg = config.servers.get('pg')!;
    expect(pg.disabled).toBe(false);
    const s = pg.settings;
    expect(s.description).toBe('Streaming PostgreSQL backup');
    expect(s.conninfo).toMatch(/\buser=barman\b/);
    expect(s.streaming_conninfo).toMatch(/\buser=barman\b/);
    expect(s.conninfo).not.toMatch(/password/i);
    expect(s.backup_method).toBe('postgres');
    expect(s.streaming_archiver).toBe(true);
    expect(s.archiver).toBe(false);
    expect(s.slot_name).toBe('barman');
    expect(s.create_slot).toBe('auto');
    expect(s.backup_schedule).toBe('0 4 * * *');
    expect(pg.text.retention_policy).toBe('RECOVERY WINDOW OF 1 WEEKS');
    expect(s.minimum_redundancy).toBeGreaterThanOrEqual(1);
    // A nightly schedule: the newest backup may be a day old, so the alarm
    // must leave more than a day.
    expect(s.last_backup_maximum_age?.seconds).toBeGreaterThan(24 * 3600);
    expect(s.verify_backup).toBe(true);
    expect(s.compression).toBe('gzip');
    expect(pg.paths.backupDirectory).toBe('/var/lib/barman/pg');
    // Each set key is where its scope allows it (no "ignored here" warning was
    // raised above); pg.conf holds only the [pg] section.
    expect(pgConf.match(/^\[.*\]$/gm)).toEqual(['[pg]']);
  });

  it('every optional ";key = value" line loads on its own when uncommented', () => {
    const cases = [
      ...optionalSettings(conf).map((o) => ({ ...o, file: 'barman.conf' as const })),
      ...optionalSettings(pgConf).map((o) => ({ ...o, file: 'pg.conf' as const })),
    ];
    expect(cases.length).toBeGreaterThanOrEqual(8);
    for (const c of cases) {
      const config =
        c.file === 'barman.conf'
          ? loadCopy(uncomment(conf, c.line), repo('config', 'barman.d'))
          : loadCopy(conf, repo('config', 'barman.d'), { 'pg.conf': uncomment(pgConf, c.line) });
      const found = [...issues(config, 'error'), ...issues(config, 'warning')];
      expect(found, `${c.file}:${c.line + 1} ${c.key}`).toEqual([]);
      const value = c.key in GLOBAL_KEYS ? (config.globalText as Record<string, string>)[c.key] : (config.servers.get('pg')!.text as Record<string, string>)[c.key];
      // (An empty http_listen disables the endpoint: no value to keep.)
      if (c.key !== 'http_listen') expect(value, `${c.key} took effect`).toBeDefined();
      else expect(config.global.http_listen).toBeNull();
    }
  });

  it('contain no inline comment after a value (barman.conf has none: it would be part of the value)', () => {
    for (const [name, text] of [['barman.conf', conf], ['pg.conf', pgConf]] as const) {
      for (const line of text.split('\n')) {
        if (/^\s*[;#]/.test(line) || !line.includes('=')) continue;
        expect(line, name).not.toMatch(/\s[;#]/);
      }
    }
  });
});

// ---------------------------------------------------------------------------
// systemd/barkeep.service

type Unit = Map<string, Map<string, string[]>>;

/** systemd's unit file syntax: sections, Key=Value (repeatable), comments, "\" continuations. */
function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) line = `${line.slice(0, -1)} ${lines[++i]!.trim()}`;
    const header = /^\[([^\]]+)\]$/.exec(line);
    if (header) {
      section = unit.get(header[1]!) ?? new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const m = /^([A-Za-z0-9]+)\s*=\s*(.*)$/.exec(line);
    if (!m || !section) throw new Error(`barkeep.service line ${i + 1}: not "Key=Value" inside a section: ${line}`);
    section.set(m[1]!, [...(section.get(m[1]!) ?? []), m[2]!]);
  }
  return unit;
}

/** systemd time span in seconds: "15s", "1min 30s", "500ms", or a bare number of seconds. */
function timeSpan(v: string): number {
  const units: Record<string, number> = { ms: 0.001, s: 1, sec: 1, m: 60, min: 60, h: 3600 };
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v);
  let total = 0;
  for (const part of v.trim().split(/\s+/)) {
    const m = /^(\d+(?:\.\d+)?)(ms|s|sec|min|m|h)$/.exec(part);
    if (!m) throw new Error(`not a time span: ${v}`);
    total += Number(m[1]) * units[m[2]!]!;
  }
  return total;
}

describe('systemd/barkeep.service', () => {
  const text = read('systemd', 'barkeep.service');
  const unit = parseUnit(text);
  const get = (section: string, key: string): string | undefined => unit.get(section)?.get(key)?.at(-1);
  const all = (section: string, key: string): string[] => (unit.get(section)?.get(key) ?? []).flatMap((v) => v.split(/\s+/).filter(Boolean));

  it('parses as a unit with [Unit], [Service] and [Install]', () => {
    expect([...unit.keys()]).toEqual(['Unit', 'Service', 'Install']);
    expect(text).not.toMatch(/PLACEHOLDER/);
  });

  it('starts after the network is up and is enabled for multi-user.target', () => {
    expect(all('Unit', 'After')).toContain('network-online.target');
    expect(all('Unit', 'Wants')).toContain('network-online.target');
    expect(get('Install', 'WantedBy')).toBe('multi-user.target');
  });

  it('runs `barkeep daemon` as barman, from the documented install location', () => {
    expect(get('Service', 'User')).toBe('barman');
    expect(get('Service', 'Group')).toBe('barman');
    const exec = unit.get('Service')!.get('ExecStart')!;
    expect(exec).toHaveLength(1);
    const argv = exec[0]!.split(/\s+/);
    expect(argv.slice(-3)).toEqual(['-c', '/etc/barman.conf', 'daemon']);
    // /opt/barkeep is a built checkout: the Node.js 22 that `npm ci` installs
    // (the devDependency "node") runs the compiled entry point of package.json.
    expect(argv.slice(0, 2)).toEqual(['/opt/barkeep/node_modules/node/bin/node', '/opt/barkeep/dist/cli/bin.js']);
    const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string>; devDependencies: Record<string, string> };
    expect(pkg.bin['barkeep']).toBe('dist/cli/bin.js');
    expect(pkg.devDependencies['node']).toMatch(/^\^?22\./);
    expect(existsSync(repo('src', 'cli', 'bin.ts'))).toBe(true);
    if (existsSync(repo('node_modules', 'node'))) accessSync(repo('node_modules', 'node', 'bin', 'node'), constants.X_OK);
    // The alternative (npm install -g) is documented, commented out.
    expect(text).toMatch(/^#ExecStart=\/usr\/bin\/barkeep -c \/etc\/barman\.conf daemon$/m);
  });

  it('reloads with SIGHUP, stops with SIGTERM a little after the daemon\'s 10 s, restarts on failure', () => {
    expect(get('Service', 'ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(get('Service', 'KillSignal')).toBe('SIGTERM');
    const stop = timeSpan(get('Service', 'TimeoutStopSec')!);
    expect(stop).toBeGreaterThan(10);
    expect(stop).toBeLessThanOrEqual(30);
    expect(get('Service', 'Restart')).toBe('on-failure');
    const rs = timeSpan(get('Service', 'RestartSec')!);
    expect(rs).toBeGreaterThanOrEqual(1);
    expect(rs).toBeLessThanOrEqual(60);
  });

  it('is hardened, and can write exactly barman_home and the log directory of config/barman.conf', () => {
    const expected: Record<string, string> = {
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      PrivateTmp: 'yes',
      ProtectHome: 'read-only',
      ProtectKernelTunables: 'yes',
      ProtectControlGroups: 'yes',
      RestrictSUIDSGID: 'yes',
      LockPersonality: 'yes',
      RestrictRealtime: 'yes',
      CapabilityBoundingSet: '',
      SystemCallArchitectures: 'native',
      UMask: '0077',
    };
    for (const [k, v] of Object.entries(expected)) expect(get('Service', k), k).toBe(v);
    // V8's JIT needs W+X memory.
    expect(get('Service', 'MemoryDenyWriteExecute')).toBeUndefined();

    const config = loadCopy(read('config', 'barman.conf'), repo('config', 'barman.d'));
    const writable = all('Service', 'ReadWritePaths');
    expect(writable).toEqual([config.global.barman_home, dirname(config.global.log_file!)]);
  });

  const analyze = run('systemd-analyze', ['--version']);
  describe.skipIf(analyze.missing || analyze.status !== 0)('with systemd-analyze', () => {
    // /opt/barkeep is not installed here, and `verify` checks that the
    // executable exists: the copy runs this node instead, with the same arguments.
    function installedCopy(): string {
      const dir = caseDir();
      const path = join(dir, 'barkeep.service');
      writeFileSync(path, text.replace(/^ExecStart=\S+/m, `ExecStart=${process.execPath}`));
      return path;
    }

    it('systemd-analyze verify accepts the unit', () => {
      const path = installedCopy();
      const r = run('systemd-analyze', ['verify', path]);
      const about = `${r.out}${r.err}`.split('\n').filter((l) => l.includes('barkeep.service'));
      expect(about, `${r.out}${r.err}`).toEqual([]);
      expect(r.status, `${r.out}${r.err}`).toBe(0);
    });

    it('systemd-analyze security rates its exposure OK or better (offline, where supported)', ({ skip }) => {
      const r = run('systemd-analyze', ['security', '--offline=true', installedCopy()]);
      const m = /Overall exposure level for barkeep\.service:\s*([\d.]+)/.exec(`${r.out}${r.err}`);
      if (!m) return skip('this systemd-analyze has no offline security review');
      console.log(`systemd-analyze security: exposure ${m[1]}`);
      expect(Number(m[1])).toBeLessThanOrEqual(4.0);
    });
  });
});

// ---------------------------------------------------------------------------
// docker-compose.yml and Dockerfile

/**
 * Reads the block-style YAML subset docker-compose.yml is written in: nested
 * mappings, sequences of scalars, plain and quoted scalars, comments. Anything
 * else (flow collections, anchors, block scalars, sequences of mappings) is
 * refused by line, so the structural checks never run on a misreading.
 */
function parseYamlSubset(text: string): unknown {
  type Line = { n: number; indent: number; body: string };
  const lines: Line[] = [];
  text.split('\n').forEach((raw, i) => {
    if (raw.includes('\t')) throw new Error(`docker-compose.yml:${i + 1}: tab character`);
    const body = stripComment(raw).trimEnd();
    if (body.trim() === '') return;
    if (body.trim() === '---') throw new Error(`docker-compose.yml:${i + 1}: several documents`);
    lines.push({ n: i + 1, indent: body.length - body.trimStart().length, body: body.trim() });
  });
  let pos = 0;

  function stripComment(raw: string): string {
    let quote: string | null = null;
    for (let i = 0; i < raw.length; i++) {
      const c = raw[i]!;
      if (quote) {
        if (c === quote) quote = null;
      } else if (c === '"' || c === "'") {
        if (i === 0 || /[\s:-]/.test(raw[i - 1]!)) quote = c;
      } else if (c === '#' && (i === 0 || /\s/.test(raw[i - 1]!))) {
        return raw.slice(0, i);
      }
    }
    return raw;
  }
  function scalar(v: string, n: number): unknown {
    if (/^".*"$/.test(v)) return JSON.parse(v) as string;
    if (/^'.*'$/.test(v)) return v.slice(1, -1).replaceAll("''", "'");
    if (/^[[{&*!|>%@`]/.test(v)) throw new Error(`docker-compose.yml:${n}: '${v}' is outside the YAML subset this test reads`);
    if (/^(null|~)$/.test(v)) return null;
    if (/^(true|false)$/.test(v)) return v === 'true';
    if (/^-?\d+$/.test(v)) return Number(v);
    return v;
  }
  function block(indent: number): unknown {
    const first = lines[pos]!;
    if (first.body === '-' || first.body.startsWith('- ')) {
      const seq: unknown[] = [];
      while (pos < lines.length && lines[pos]!.indent === indent && (lines[pos]!.body.startsWith('- ') || lines[pos]!.body === '-')) {
        const l = lines[pos++]!;
        const item = l.body.slice(2).trim();
        if (item === '' || /^[A-Za-z0-9_."'-]+:(\s|$)/.test(item)) throw new Error(`docker-compose.yml:${l.n}: sequences of mappings are outside the YAML subset this test reads`);
        seq.push(scalar(item, l.n));
      }
      return seq;
    }
    const map: Record<string, unknown> = {};
    while (pos < lines.length && lines[pos]!.indent === indent) {
      const l = lines[pos++]!;
      const m = /^([A-Za-z0-9_.-]+|"[^"]*"|'[^']*'):(?:\s+(.*))?$/.exec(l.body);
      if (!m) throw new Error(`docker-compose.yml:${l.n}: expected "key: value", got '${l.body}'`);
      const key = m[1]!.replace(/^["']|["']$/g, '');
      if (key in map) throw new Error(`docker-compose.yml:${l.n}: duplicate key '${key}'`);
      const next = lines[pos];
      if (m[2] !== undefined && m[2] !== '') {
        map[key] = scalar(m[2], l.n);
      } else if (next && (next.indent > indent || (next.indent === indent && next.body.startsWith('- ')))) {
        map[key] = block(next.indent);
      } else {
        map[key] = null;
      }
    }
    if (pos < lines.length && lines[pos]!.indent > indent) throw new Error(`docker-compose.yml:${lines[pos]!.n}: unexpected indentation`);
    return map;
  }
  const doc = block(0);
  if (pos < lines.length) throw new Error(`docker-compose.yml:${lines[pos]!.n}: unexpected indentation`);
  return doc;
}

type Service = {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  profiles?: string[];
  init?: boolean;
  stop_grace_period?: string;
};
type Compose = { name: string; services: Record<string, Service>; volumes: Record<string, unknown> };

/** host-or-volume:container[:mode] */
function mount(spec: string): { source: string; target: string; mode?: string } {
  const [source, target, mode] = spec.split(':');
  return { source: source!, target: target!, ...(mode ? { mode } : {}) };
}

describe('docker-compose.yml', () => {
  const text = read('docker-compose.yml');
  const compose = parseYamlSubset(text) as Compose;
  const svc = compose.services;

  it('reads the same with a full YAML parser, where python3 has PyYAML', ({ skip }) => {
    const r = run('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: text });
    if (r.missing || r.status !== 0) return skip('no python3 with PyYAML here');
    expect(parseYamlSubset(text)).toEqual(JSON.parse(r.out));
  });

  const compose2 = run('docker', ['compose', 'version']);
  it.skipIf(compose2.missing || compose2.status !== 0)('docker compose config validates it', () => {
    const r = run('docker', ['compose', '-f', repo('docker-compose.yml'), '--profile', 'cloud', 'config', '--quiet'], { cwd: REPO });
    expect(r.status, r.err).toBe(0);
  });

  it('defines PostgreSQL, barkeep and an S3-compatible store', () => {
    expect(compose.name).toBe('barkeep');
    expect(Object.keys(svc).sort()).toEqual(['barkeep', 'minio', 'postgres']);
    for (const [name, s] of Object.entries(svc)) expect(s.image ?? s.build, name).toBeTruthy();
  });

  it('runs a PostgreSQL 16 primary set up for streaming backups', () => {
    const pg = svc['postgres']!;
    expect(pg.image).toMatch(/^postgres:16(\.|-|$)/);
    const settings = Object.fromEntries(
      pg.command!.filter((_, i, a) => a[i - 1] === '-c').map((kv) => kv.split('=') as [string, string]),
    );
    expect(pg.command![0]).toBe('postgres');
    expect(settings['wal_level']).toBe('replica');
    expect(Number(settings['max_wal_senders'])).toBeGreaterThanOrEqual(2);
    expect(Number(settings['max_replication_slots'])).toBeGreaterThanOrEqual(1);
    expect(pg.healthcheck?.test.join(' ')).toMatch(/pg_isready/);
    expect(pg.ports, 'PostgreSQL is not published on the host').toBeUndefined();
    expect(pg.environment?.['POSTGRES_PASSWORD']).toBeTruthy();
  });

  it('creates the barman role and its replication pg_hba line in an init script', () => {
    const pg = svc['postgres']!;
    const init = pg.volumes!.map(mount).find((m) => m.target === '/docker-entrypoint-initdb.d');
    expect(init?.source).toMatch(/^\.\//);
    const dir = repo(init!.source);
    const scripts = readdirSync(dir).filter((f) => f.endsWith('.sh'));
    expect(scripts).toEqual(['10-barman.sh']);
    const path = join(dir, scripts[0]!);
    expect(statSync(path).mode & 0o111, 'executable (else the image sources it into its own shell)').not.toBe(0);
    const sh = readFileSync(path, 'utf8');
    expect(run('bash', ['-n', path]).status).toBe(0);
    expect(sh).toMatch(/CREATE ROLE barman LOGIN REPLICATION PASSWORD :'barman_password'/);
    expect(sh).toMatch(/GRANT pg_read_all_settings, pg_read_all_stats, pg_checkpoint TO barman/);
    expect(sh).toMatch(/pg_backup_start\(text, boolean\), pg_backup_stop\(boolean\)/);
    expect(sh).toMatch(/^host\s+replication\s+barman\s+samenet\s+scram-sha-256$/m);
    expect(sh).toMatch(/BARMAN_PASSWORD/);
    // The role's password is the one barkeep connects with.
    expect(pg.environment?.['BARMAN_PASSWORD']).toBe(svc['barkeep']!.environment?.['PGPASSWORD']);
  });

  it('builds barkeep from the repository and runs its daemon once PostgreSQL is healthy', () => {
    const b = svc['barkeep']!;
    expect(b.build).toEqual({ context: '.', dockerfile: 'Dockerfile' });
    expect(existsSync(repo(b.build!.dockerfile))).toBe(true);
    expect(b.command).toEqual(['barkeep', 'daemon', '-c', '/etc/barman.conf']);
    expect(b.init).toBe(true);
    expect(b.depends_on?.['postgres']?.condition).toBe('service_healthy');
    expect(timeSpan(b.stop_grace_period!)).toBeGreaterThan(10);
  });

  it('mounts a barkeep configuration that loads cleanly and points at the postgres service', () => {
    const b = svc['barkeep']!;
    const mounts = b.volumes!.map(mount);
    const conf = mounts.find((m) => m.target === '/etc/barman.conf')!;
    const dir = mounts.find((m) => m.target === '/etc/barman.d')!;
    expect(conf.mode).toBe('ro');
    expect(dir.mode).toBe('ro');
    expect(statSync(repo(conf.source)).isFile()).toBe(true);
    expect(statSync(repo(dir.source)).isDirectory()).toBe(true);

    const config = loadCopy(read(conf.source), repo(dir.source));
    expect(issues(config, 'error')).toEqual([]);
    expect(issues(config, 'warning')).toEqual([]);
    const pg = config.servers.get('pg')!;
    expect(pg.settings.conninfo).toMatch(/\bhost=postgres\b/);
    expect(pg.settings.streaming_conninfo).toMatch(/\bhost=postgres\b/);
    expect(pg.settings.streaming_archiver).toBe(true);
    expect(pg.settings.create_slot).toBe('auto');
    expect(pg.settings.backup_schedule).toBe('0 4 * * *');

    // barman_home and the log directory are named volumes, declared.
    const named = (target: string) => mounts.find((m) => m.target === target && !/^[./]/.test(m.source));
    expect(named(config.global.barman_home!), 'barman_home on a volume').toBeDefined();
    expect(named(dirname(config.global.log_file!)), 'log directory on a volume').toBeDefined();

    // The endpoint listens on every interface of the container, on the port published.
    expect(config.global.http_listen).toEqual({ host: '0.0.0.0', port: 9187 });
    expect(b.ports).toEqual([`127.0.0.1:9187:${config.global.http_listen!.port}`]);
  });

  it('publishes ports on the host\'s loopback only', () => {
    for (const [name, s] of Object.entries(svc)) {
      for (const p of s.ports ?? []) expect(p, name).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
    }
  });

  it('declares every named volume it uses', () => {
    const used = Object.values(svc).flatMap((s) => (s.volumes ?? []).map(mount).filter((m) => !/^[./~]/.test(m.source)).map((m) => m.source));
    expect(new Set(used)).toEqual(new Set(Object.keys(compose.volumes)));
    // Bind mounts name files of this repository.
    for (const s of Object.values(svc)) {
      for (const m of (s.volumes ?? []).map(mount).filter((m) => m.source.startsWith('./'))) expect(existsSync(repo(m.source)), m.source).toBe(true);
    }
  });

  it('has the S3-compatible store behind the "cloud" profile', () => {
    const s3 = svc['minio']!;
    expect(s3.image).toMatch(/minio/);
    expect(s3.profiles).toEqual(['cloud']);
    expect(s3.environment?.['MINIO_ROOT_USER']).toBeTruthy();
    expect(s3.environment?.['MINIO_ROOT_PASSWORD']).toBeTruthy();
  });
});

describe('Dockerfile', () => {
  const text = read('Dockerfile');
  // Instructions, with "\" continuations joined.
  const instructions = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const i = l.search(/\s/);
      return { op: l.slice(0, i).toUpperCase(), args: l.slice(i + 1).trim() };
    });
  const ops = (op: string) => instructions.filter((i) => i.op === op).map((i) => i.args);

  it('builds on node:22-bookworm-slim with npm ci and npm run build', () => {
    const images = ops('FROM').map((a) => a.split(/\s+/).filter((w) => !w.startsWith('--'))[0]);
    expect(images).toEqual(['node:22-bookworm-slim', 'node:22-bookworm-slim']);
    const runs = ops('RUN').join('\n');
    expect(runs).toMatch(/\bnpm ci\b/);
    expect(runs).toMatch(/\bnpm run build\b/);
    expect(runs).toMatch(/useradd .*barman/);
    // Every file the build copies from the context exists in the repository.
    for (const args of ops('COPY').filter((a) => !a.startsWith('--from'))) {
      const parts = args.split(/\s+/);
      for (const src of parts.slice(0, -1)) expect(existsSync(repo(src)), src).toBe(true);
    }
  });

  it('runs `barkeep daemon -c /etc/barman.conf` as barman, as compose does', () => {
    expect(ops('USER')).toEqual(['barman']);
    expect(JSON.parse(ops('CMD').at(-1)!)).toEqual(['barkeep', 'daemon', '-c', '/etc/barman.conf']);
    expect(ops('EXPOSE')).toEqual(['9187']);
    expect(ops('RUN').join('\n')).toContain('ln -s /opt/barkeep/dist/cli/bin.js /usr/local/bin/barkeep');
  });
});
