// The daemon's HTTP listener (http_listen, loopback by default): /metrics for
// Prometheus and /health for load balancers and uptime probes. It only reads: the
// catalog on disk, the supervisor's task snapshots and the results of barkeep's
// checks. A failing server shows up in the answers; it never fails the listener.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CheckResult, ServerCheckReport } from '../checks/server-checks.ts';
import type { ServerConfig } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { maskConninfo } from '../postgres/conninfo.ts';
import type { ServerTaskState } from './daemon-state.ts';
import { createMetricsRegistry, type ServerChecks } from './metrics.ts';

export interface HttpDeps {
  /** Active, non-disabled servers of the current configuration (it changes on reload: call it per request). */
  servers(): ServerConfig[];
  /** Task state snapshots from the supervisor. */
  state(): ServerTaskState[];
  /** Runs barkeep's checks for one server (checkServer from src/checks/server-checks.ts in production). */
  check(server: ServerConfig): Promise<ServerCheckReport>;
  logger: Logger;
}

export interface HttpServerHandle {
  address: { host: string; port: number };
  close(): Promise<void>;
}

/** Checks hit PostgreSQL: /health answers from results this recent. */
export const HEALTH_CACHE_MS = 5_000;
/** barkeep_check_failed may be this old before a scrape asks for a new run. */
export const METRICS_CHECK_MAX_AGE_MS = 30_000;
/**
 * How long a scrape waits for that run before answering with the previous results:
 * a check stuck until check_timeout must not make Prometheus lose every other series.
 */
export const METRICS_CHECK_WAIT_MS = 5_000;

/** Name of the pseudo-check /health adds for a receiver task that keeps failing. */
export const RECEIVER_CHECK = 'WAL receiver';

export async function startHttpServer(listen: string, deps: HttpDeps): Promise<HttpServerHandle> {
  const { host, port } = parseListen(listen);
  const checks = new CheckCache(deps);
  const registry = createMetricsRegistry({
    servers: () => deps.servers(),
    state: () => deps.state(),
    checks: () => checks.forMetrics(),
    logger: deps.logger,
  });

  const routes: Record<string, (res: ServerResponse) => Promise<void>> = {
    '/metrics': async (res) => send(res, 200, registry.contentType, await registry.metrics()),
    '/health': async (res) => {
      const health = await checks.health();
      send(res, health.status === 'ok' ? 200 : 503, 'application/json; charset=utf-8', `${JSON.stringify(health, null, 2)}\n`);
    },
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      deps.logger.error({ err: errorText(err), url: req.url }, 'HTTP request failed');
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error; see the barkeep log\n');
      else res.destroy();
    });
  });
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] as string;
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (!route) return send(res, 404, 'text/plain; charset=utf-8', 'not found: barkeep serves /metrics and /health\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return send(res, 405, 'text/plain; charset=utf-8', `method ${req.method} not allowed: use GET or HEAD\n`);
    }
    await route(res);
  }

  const where = formatAddress(host, port);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      reject(listenError(listen, where, err));
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ host, port, exclusive: true });
  });
  // Past listen(), an 'error' without a listener would crash the daemon.
  server.on('error', (err) => deps.logger.error({ err: err.message }, 'HTTP listener error'));

  const bound = server.address() as AddressInfo;
  const address = { host: bound.address, port: bound.port };
  deps.logger.debug({ http_listen: formatAddress(address.host, address.port) }, 'serving /metrics and /health');

  let closing: Promise<void> | null = null;
  return {
    address,
    close: () =>
      (closing ??= new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // A scrape waiting on a slow check must not hold up the daemon's shutdown.
        server.closeAllConnections();
      })),
  };
}

/** 'host:port' or '[v6]:port'; port 0 picks a free port (tests). */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(listen.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new Error(`http_listen: '${listen}' is not an address:port (e.g. 127.0.0.1:9187 or [::1]:9187)`);
  }
  return { host: m[1] ?? (m[2] as string), port };
}

function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

function listenError(listen: string, where: string, err: NodeJS.ErrnoException): Error {
  const shown = listen.trim() === where ? where : `${listen} (${where})`;
  switch (err.code) {
    case 'EADDRINUSE':
      return new Error(`http_listen: cannot listen on ${shown}: the address is already in use (another barkeep daemon or exporter?); change http_listen or leave it empty to disable the listener`);
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new Error(`http_listen: cannot listen on ${shown}: no such local address (${err.code})`);
    case 'EACCES':
      return new Error(`http_listen: cannot listen on ${shown}: permission denied (ports below 1024 need privileges)`);
    default:
      return new Error(`http_listen: cannot listen on ${shown}: ${err.message}`);
  }
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, {
    'Content-Type': contentType,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(body);
}

// ------------------------------------------------------------------ checks and /health

interface HealthDocument {
  status: 'ok' | 'failing';
  servers: Record<string, { ok: boolean; failed: { name: string; hint: string }[] }>;
  checked_at: string;
}

interface CheckRun {
  /** The servers it covered: a reload that changes them needs a new run. */
  key: string;
  finishedAt: number;
  results: Map<string, CheckResult[]>;
}

/**
 * One run of every server's checks serves every /health request for HEALTH_CACHE_MS
 * and the metrics for METRICS_CHECK_MAX_AGE_MS; concurrent requests share a run in
 * progress, so probes and scrapes never multiply the connections to PostgreSQL.
 */
class CheckCache {
  private readonly deps: HttpDeps;
  private last: CheckRun | null = null;
  private inflight: { key: string; promise: Promise<CheckRun> } | null = null;

  constructor(deps: HttpDeps) {
    this.deps = deps;
  }

  async health(): Promise<HealthDocument> {
    const servers = this.deps.servers();
    const run = await this.run(servers, HEALTH_CACHE_MS);
    const tasks = this.tasks();
    const doc: HealthDocument = { status: 'ok', servers: {}, checked_at: new Date(run.finishedAt).toISOString() };
    for (const server of servers) {
      const failed = withReceiver(run.results.get(server.name) ?? [], tasks.get(server.name))
        .filter((c) => !c.ok)
        .map((c) => ({ name: c.name, hint: scrub(c.hint, servers) }));
      doc.servers[server.name] = { ok: failed.length === 0, failed };
      if (failed.length > 0) doc.status = 'failing';
    }
    return doc;
  }

  async forMetrics(): Promise<Map<string, ServerChecks>> {
    const servers = this.deps.servers();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), METRICS_CHECK_WAIT_MS);
    });
    const run = (await Promise.race([this.run(servers, METRICS_CHECK_MAX_AGE_MS), timedOut])) ?? this.last;
    clearTimeout(timer);
    const tasks = this.tasks();
    const out = new Map<string, ServerChecks>();
    for (const server of servers) {
      const results = run?.results.get(server.name);
      const checks = withReceiver(results ?? [], tasks.get(server.name));
      if (results || checks.length > 0) out.set(server.name, { checkedAt: results && run ? run.finishedAt : Date.now(), checks });
    }
    return out;
  }

  private tasks(): Map<string, ServerTaskState> {
    return new Map(this.deps.state().map((t) => [t.server, t]));
  }

  private run(servers: ServerConfig[], maxAgeMs: number): Promise<CheckRun> {
    const key = servers
      .map((s) => s.name)
      .sort()
      .join('\0');
    if (this.last && this.last.key === key && Date.now() - this.last.finishedAt < maxAgeMs) return Promise.resolve(this.last);
    if (this.inflight && this.inflight.key === key) return this.inflight.promise;
    const promise: Promise<CheckRun> = Promise.all(servers.map(async (s) => [s.name, await this.checkOne(s)] as const)).then((entries) => {
      const run = { key, finishedAt: Date.now(), results: new Map(entries) };
      this.last = run;
      if (this.inflight?.promise === promise) this.inflight = null;
      return run;
    });
    this.inflight = { key, promise };
    return promise;
  }

  /** Never rejects: a check that throws or hangs is itself a failing check. */
  private async checkOne(server: ServerConfig): Promise<CheckResult[]> {
    // checkServer bounds itself by check_timeout; this only catches a run that ignores it.
    const limit = server.settings.check_timeout;
    const backstopMs = (limit !== null && limit > 0 ? limit + 15 : 300) * 1000;
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<CheckResult[]>((resolve) => {
      timer = setTimeout(() => resolve([{ name: 'check timeout', ok: false, hint: `checks did not return within ${backstopMs / 1000} seconds` }]), backstopMs);
    });
    try {
      return await Promise.race([this.deps.check(server).then((report) => report.checks), hung]);
    } catch (err) {
      this.deps.logger.warn({ server: server.name, err: errorText(err) }, 'checks could not run');
      return [{ name: 'checks', ok: false, hint: `checks could not run: ${errorText(err)}` }];
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The check results plus the receiver task's own state: a receiver retrying in a loop fails /health. */
export function withReceiver(results: CheckResult[], task: ServerTaskState | undefined): CheckResult[] {
  if (task?.receiver.phase !== 'retrying') return results;
  const { lastError, restarts } = task.receiver;
  const why = lastError ? `retrying after: ${lastError}` : 'retrying';
  return [...results, { name: RECEIVER_CHECK, ok: false, hint: `${why} (${restarts} restart${restarts === 1 ? '' : 's'})` }];
}

/**
 * Hints are for operators, and /health may be read by anything that reaches the
 * port: a connection string quoted in an error message loses its password here.
 */
export function scrub(text: string, servers: readonly ServerConfig[]): string {
  let out = text;
  for (const server of servers) {
    for (const conninfo of [server.settings.conninfo, server.settings.streaming_conninfo]) {
      if (conninfo) out = out.split(conninfo).join(maskConninfo(conninfo));
    }
  }
  return out
    .replace(/(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)/gi, '$1***')
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)[^@\s]*@/gi, '$1***@');
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
