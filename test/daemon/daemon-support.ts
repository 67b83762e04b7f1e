// What the daemon tests share: the real `barkeep daemon` process, its HTTP
// answers, and its configuration and log files.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { parseWalFileName, walFileName } from '../../src/postgres/lsn.ts';
import { BARKEEP_BIN } from '../support/cli.ts';

export interface Daemon {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

/** `barkeep -c conf daemon [args]`, with the minute between maintenance passes shortened to `everyMs`. */
export function startDaemon(conf: string, env: NodeJS.ProcessEnv, opts: { args?: string[]; everyMs?: number } = {}): Daemon {
  const child = spawn(process.execPath, [BARKEEP_BIN, '-c', conf, 'daemon', ...(opts.args ?? [])], {
    env: { ...env, BARKEEP_MAINTENANCE_EVERY_MS: String(opts.everyMs ?? 2000) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

export async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text() };
}

export interface HealthDocument {
  status: 'ok' | 'failing';
  servers: Record<string, { ok: boolean; failed: { name: string; hint: string }[] }>;
}

export async function health(port: number): Promise<{ status: number; doc: HealthDocument }> {
  const r = await get(port, '/health');
  return { status: r.status, doc: JSON.parse(r.body) as HealthDocument };
}

/** The value of one series of a Prometheus text exposition, or null when absent. */
export function metric(body: string, name: string, labels: Record<string, string>): number | null {
  for (const line of body.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return null;
}

export function logFile(conf: string): string {
  return /log_file = (.*)\n/.exec(readFileSync(conf, 'utf8'))![1]!;
}

/** The log's JSON entries. */
export function logEntries(conf: string): Record<string, unknown>[] {
  return readFileSync(logFile(conf), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The lines of a server's section of a configuration written by barkeepServer. */
export function serverSection(conf: string, name = 'pg'): string {
  return conf.slice(conf.indexOf(`[${name}]\n`) + `[${name}]\n`.length).split('\n[')[0]!;
}

export const step = (what: string) => process.stderr.write(`[daemon test ${new Date().toISOString()}] ${what}\n`);

/** Every segment name from `first` to `last` (16 MiB segments, one timeline). */
export function segmentRange(first: string, last: string): string[] {
  const SEG = 16 * 1024 * 1024;
  const a = parseWalFileName(first, SEG)!;
  const b = parseWalFileName(last, SEG)!;
  const out: string[] = [];
  for (let n = a.segNo; n <= b.segNo; n++) out.push(walFileName(a.timeline, n, SEG));
  return out;
}

/**
 * Rewrites `conf` with the keys of a section set (null removes the key); the
 * other lines stay as they are.
 */
export function setKeys(conf: string, section: string, keys: Record<string, string | number | null>): void {
  const text = readFileSync(conf, 'utf8');
  const start = text.indexOf(`[${section}]\n`);
  if (start < 0) throw new Error(`no [${section}] in ${conf}`);
  const bodyStart = start + section.length + 3;
  const next = text.indexOf('\n[', bodyStart);
  const bodyEnd = next < 0 ? text.length : next + 1;
  const lines = text
    .slice(bodyStart, bodyEnd)
    .split('\n')
    .filter((l) => l.trim() !== '' && !Object.hasOwn(keys, l.split('=')[0]!.trim()));
  for (const [k, v] of Object.entries(keys)) if (v !== null) lines.push(`${k} = ${v}`);
  writeFileSync(conf, `${text.slice(0, bodyStart)}${lines.join('\n')}\n${next < 0 ? '' : '\n'}${text.slice(bodyEnd)}`);
}
