import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

// Password lookup in a libpq password file (~/.pgpass, PGPASSFILE or the
// `passfile` conninfo keyword), with libpq's rules: `host:port:db:user:pw`
// lines, `*` wildcards, `\:` and `\\` escapes, first match wins, and a file
// readable by group or others is ignored, as libpq ignores it.

export interface PassLookup {
  host: string;
  port: number;
  database: string;
  user: string;
  passfile?: string;
}

export function lookupPgpass(req: PassLookup): string | undefined {
  const file = req.passfile ?? process.env['PGPASSFILE'] ?? join(homedir(), '.pgpass');
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile() || (st.mode & 0o077) !== 0) return undefined;
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  // A unix-socket host matches the entry "localhost", as in libpq.
  const host = req.host.startsWith('/') ? 'localhost' : req.host;
  for (const line of text.split(/\r?\n/)) {
    if (line === '' || line.startsWith('#')) continue;
    const fields = splitFields(line);
    if (fields.length < 5) continue;
    const [h, p, d, u] = fields as [string, string, string, string];
    if (matches(h, host) && matches(p, String(req.port)) && matches(d, req.database) && matches(u, req.user)) {
      return fields.slice(4).join(':');
    }
  }
  return undefined;
}

function matches(pattern: string, value: string): boolean {
  return pattern === '*' || pattern === value;
}

function splitFields(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (ch === '\\' && i + 1 < line.length) {
      cur += line[++i];
    } else if (ch === ':' && out.length < 4) {
      out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  out.push(cur);
  return out;
}
