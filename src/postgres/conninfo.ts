import type { ClientConfig } from 'pg';
import { lookupPgpass } from './pgpass.ts';

// libpq connection strings as barman.conf holds them: `key=value` pairs
// (values optionally single-quoted, with backslash escapes) or a
// postgres:// URI. We translate them into node-postgres options ourselves
// because pg only understands URIs. Unset parameters fall back to the libpq
// environment (PGHOST, PGUSER, ...) and ~/.pgpass, which pg handles.

export class ConninfoError extends Error {}

export type ConninfoParams = Record<string, string>;

const KNOWN = new Set([
  'host', 'hostaddr', 'port', 'user', 'dbname', 'password', 'passfile', 'sslmode', 'sslcert', 'sslkey',
  'sslrootcert', 'sslpassword', 'application_name', 'connect_timeout', 'options', 'keepalives',
  'keepalives_idle', 'target_session_attrs', 'replication', 'fallback_application_name',
]);

export function parseConninfo(conninfo: string): ConninfoParams {
  const s = conninfo.trim();
  if (/^postgres(ql)?:\/\//.test(s)) return parseUri(s);
  const out: ConninfoParams = {};
  let i = 0;
  const n = s.length;
  while (i < n) {
    while (i < n && /\s/.test(s[i]!)) i++;
    if (i >= n) break;
    const keyStart = i;
    while (i < n && s[i] !== '=' && !/\s/.test(s[i]!)) i++;
    const key = s.slice(keyStart, i);
    while (i < n && /\s/.test(s[i]!)) i++;
    if (s[i] !== '=') throw new ConninfoError(`missing "=" after "${key}" in connection string`);
    i++;
    while (i < n && /\s/.test(s[i]!)) i++;
    let value = '';
    if (s[i] === "'") {
      i++;
      let closed = false;
      while (i < n) {
        const ch = s[i]!;
        if (ch === '\\' && i + 1 < n) {
          value += s[i + 1];
          i += 2;
        } else if (ch === "'") {
          closed = true;
          i++;
          break;
        } else {
          value += ch;
          i++;
        }
      }
      if (!closed) throw new ConninfoError(`unterminated quoted value for "${key}" in connection string`);
    } else {
      while (i < n && !/\s/.test(s[i]!)) {
        if (s[i] === '\\' && i + 1 < n) {
          value += s[i + 1];
          i += 2;
        } else {
          value += s[i];
          i++;
        }
      }
    }
    if (!KNOWN.has(key)) throw new ConninfoError(`invalid connection option "${key}"`);
    out[key] = value;
  }
  return out;
}

function parseUri(uri: string): ConninfoParams {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new ConninfoError('malformed postgresql:// URI');
  }
  const out: ConninfoParams = {};
  if (url.hostname) out['host'] = decodeURIComponent(url.hostname.replace(/^\[|\]$/g, ''));
  if (url.port) out['port'] = url.port;
  if (url.username) out['user'] = decodeURIComponent(url.username);
  if (url.password) out['password'] = decodeURIComponent(url.password);
  const db = url.pathname.replace(/^\//, '');
  if (db) out['dbname'] = decodeURIComponent(db);
  for (const [k, v] of url.searchParams) {
    if (!KNOWN.has(k)) throw new ConninfoError(`invalid connection option "${k}"`);
    out[k] = v;
  }
  return out;
}

/** The conninfo with any password replaced, safe for output and logs. */
export function maskConninfo(conninfo: string): string {
  if (/^postgres(ql)?:\/\//.test(conninfo.trim())) {
    return conninfo.replace(/(\/\/[^:/@]*:)[^@]*@/, '$1***@').replace(/([?&]password=)[^&]*/g, '$1***');
  }
  return conninfo.replace(/(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)/g, '$1***');
}

export interface PgOptions {
  replication?: boolean;
  applicationName?: string;
  /** Seconds; libpq's connect_timeout wins when set. */
  connectTimeout?: number;
}

export function toClientConfig(conninfo: string, opts: PgOptions = {}): ClientConfig {
  const p = parseConninfo(conninfo);
  const host = p['hostaddr'] || p['host'];
  if (host?.includes(',')) throw new ConninfoError('multiple hosts in one connection string are not supported');
  const cfg: ClientConfig & { replication?: boolean } = {};
  if (host) cfg.host = host;
  if (p['port']) {
    const port = Number(p['port']);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConninfoError(`invalid port "${p['port']}"`);
    cfg.port = port;
  }
  if (p['user']) cfg.user = p['user'];
  if (p['dbname']) cfg.database = p['dbname'];
  if (p['password'] !== undefined) {
    cfg.password = p['password'];
  } else if (process.env['PGPASSWORD'] === undefined) {
    // Resolved at connect time with the same defaults libpq applies.
    const user = cfg.user ?? process.env['PGUSER'] ?? currentUser();
    cfg.password = () =>
      lookupPgpass({
        host: cfg.host ?? process.env['PGHOST'] ?? 'localhost',
        port: cfg.port ?? Number(process.env['PGPORT'] ?? 5432),
        database: cfg.database ?? process.env['PGDATABASE'] ?? (opts.replication ? 'replication' : user),
        user,
        ...(p['passfile'] ? { passfile: p['passfile'] } : {}),
      }) ?? '';
  }
  if (p['options']) cfg.options = p['options'];
  cfg.application_name = opts.applicationName ?? p['application_name'] ?? 'barkeep';
  const timeout = p['connect_timeout'] ? Number(p['connect_timeout']) : opts.connectTimeout;
  if (timeout && timeout > 0) cfg.connectionTimeoutMillis = timeout * 1000;
  cfg.ssl = sslFor(p);
  if (opts.replication) cfg.replication = true;
  return cfg;
}

function sslFor(p: ConninfoParams): ClientConfig['ssl'] {
  const mode = p['sslmode'] ?? 'disable';
  switch (mode) {
    case 'disable':
    case 'allow':
    case 'prefer':
      // pg cannot fall back from TLS to plain text as libpq's 'prefer' does;
      // plain text is what 'prefer' gets on servers without TLS anyway.
      return false;
    case 'require':
      return { rejectUnauthorized: false };
    case 'verify-ca':
    case 'verify-full':
      return { rejectUnauthorized: true, ...(p['sslrootcert'] ? { ca: readPem(p['sslrootcert']) } : {}) };
    default:
      throw new ConninfoError(`invalid sslmode "${mode}": use disable, allow, prefer, require, verify-ca or verify-full`);
  }
}

function currentUser(): string {
  try {
    return process.getBuiltinModule('node:os').userInfo().username;
  } catch {
    return '';
  }
}

function readPem(path: string): string {
  // Loaded lazily: only TLS users pay for it.
  return process.getBuiltinModule('node:fs').readFileSync(path, 'utf8');
}
