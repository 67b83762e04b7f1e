// cloud-backup's PostgreSQL connection from barman-cloud-backup's flags
// (cloud_backup.py build_conninfo): -d may be a whole conninfo string, which
// then wins over -h/-p/-U; otherwise the flags become key=value pairs and
// whatever is left unset comes from the libpq environment (PGHOST, PGPORT,
// PGUSER, PGPASSWORD, ~/.pgpass) as libpq would take it.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseConninfo } from '../postgres/conninfo.ts';

export interface ConnectionFlags {
  host?: string;
  port?: string;
  user?: string;
  /** Default 'postgres', as barman-cloud-backup's. */
  dbname?: string;
}

function quote(value: string): string {
  if (value === '') return "''";
  if (!/\s|'|\\/.test(value)) return value;
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** Sockets libpq looks in when no host is given (Debian's build first, then the upstream default). */
const SOCKET_DIRS = ['/var/run/postgresql', '/tmp'];

/**
 * The conninfo string for the flags. Without a host anywhere (flags, conninfo,
 * PGHOST), libpq connects over the local Unix socket; node-postgres would try
 * TCP to localhost instead, so the socket directory is named explicitly.
 */
export function buildConninfo(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): string {
  const dbname = flags.dbname ?? 'postgres';
  let conninfo: string;
  // libpq expands a dbname that is a URI or holds '=' into a whole connection string.
  const uri = /^postgres(ql)?:\/\//.test(dbname);
  if (dbname === '' || dbname.includes('=') || uri) {
    conninfo = dbname;
  } else {
    const parts: string[] = [];
    if (flags.host) parts.push(`host=${quote(flags.host)}`);
    if (flags.port) parts.push(`port=${quote(flags.port)}`);
    if (flags.user) parts.push(`user=${quote(flags.user)}`);
    parts.push(`dbname=${quote(dbname)}`);
    conninfo = parts.join(' ');
  }
  const params = parseConninfo(conninfo);
  if (!uri && !params['host'] && !params['hostaddr'] && !env['PGHOST']) {
    const port = params['port'] ?? env['PGPORT'] ?? '5432';
    const dir = SOCKET_DIRS.find((d) => existsSync(join(d, `.s.PGSQL.${port}`)));
    if (dir) conninfo = `${conninfo} host=${dir}`.trim();
  }
  return conninfo;
}
