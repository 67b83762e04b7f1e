import { Option } from 'commander';
import type { ServerConfig } from '../../config/load.ts';
import { maskConninfo } from '../../postgres/conninfo.ts';
import { closeQuietly, connectSql, describePgError } from '../../postgres/connect.ts';
import {
  readReplicationStatus,
  ReplicationStatusUnsupported,
  type ReplicationStatus,
  type ReplicationTarget,
} from '../../postgres/replication-status.ts';
import type { CommandHost } from '../command-host.ts';
import type { CliContext } from '../context.ts';
import { consoleLines, jsonDocument, sortKeys, type Json } from './replication-status-format.ts';

// `barkeep replication-status [--minimal] [--source backup-host|wal-host]
// [--target hot-standby|wal-streamer|all] SERVER...|all`: who streams from
// the server that conninfo (or wal_conninfo) points at.

export type ReplicationSource = 'backup-host' | 'wal-host';

export interface ReplicationStatusOptions {
  minimal?: boolean;
  source?: ReplicationSource;
  target?: ReplicationTarget;
}

export function register(host: CommandHost): void {
  host.program
    .command('replication-status')
    .description('show the streaming clients (standbys and WAL streamers) of servers')
    .argument('<server...>', "server names, or 'all'")
    .option('--minimal', 'machine readable output')
    .addOption(
      new Option('--source <source>', "'backup-host': the server conninfo points at; 'wal-host': the one wal_conninfo points at")
        .choices(['backup-host', 'wal-host'])
        .default('backup-host'),
    )
    .addOption(
      new Option('--target <target>', "'hot-standby': standbys only; 'wal-streamer': WAL streamers such as pg_receivewal only; 'all'")
        .choices(['all', 'hot-standby', 'wal-streamer'])
        .default('all'),
    )
    .action(async (names: string[], opts: ReplicationStatusOptions) => {
      host.setExitCode(await runReplicationStatus(host.context(), names, opts));
    });
}

interface ServerResult {
  server: ServerConfig;
  status: ReplicationStatus | null;
  error: string | null;
}

export async function runReplicationStatus(ctx: CliContext, names: string[], opts: ReplicationStatusOptions): Promise<number> {
  const target = opts.target ?? 'all';
  const source = opts.source ?? 'backup-host';
  const servers = ctx
    .selectServers(names, { allowInactive: true })
    .filter((s) => {
      // Barman skips inactive servers with a notice, not an error.
      if (s.settings.active !== false) return true;
      if (ctx.opts.format !== 'json') ctx.print(`Skipping inactive server '${s.name}'`);
      return false;
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const results = await Promise.all(servers.map((s) => query(s, source, target)));
  const json = ctx.opts.format === 'json';
  const doc: Record<string, Json> = {};

  for (const r of results) {
    const name = r.server.name;
    const override = source === 'wal-host' ? overrideMessage(r.server) : null;
    if (override && !json) ctx.print(override);
    if (r.status === null) {
      ctx.error(`Unable to connect to server ${name}${r.error ? `: ${r.error}` : ''}`);
      if (json) doc[name] = {};
      continue;
    }
    if (r.status.hidden > 0) ctx.warning(hiddenHint(r.server, r.status.hidden, source));
    if (json) doc[name] = jsonDocument(target, r.status, opts.minimal ?? false);
    else for (const line of consoleLines(name, target, r.status, opts.minimal ?? false)) ctx.print(line);
    ctx.logger.info({ server: name, clients: r.status.clients.length, hidden: r.status.hidden }, 'replication-status');
  }
  if (json) ctx.printJson(sortKeys(doc));
  return ctx.hadErrors ? 1 : 0;
}

function conninfoFor(s: ServerConfig, source: ReplicationSource): string | null {
  if (source === 'wal-host') return s.settings.wal_conninfo ?? s.settings.wal_streaming_conninfo ?? s.settings.conninfo;
  return s.settings.conninfo;
}

async function query(server: ServerConfig, source: ReplicationSource, target: ReplicationTarget): Promise<ServerResult> {
  const conninfo = conninfoFor(server, source);
  if (!conninfo) return { server, status: null, error: `no ${source === 'wal-host' ? 'wal_conninfo or ' : ''}conninfo configured` };
  let client;
  try {
    client = await connectSql(conninfo, { connectTimeout: server.settings.check_timeout || undefined, applicationName: 'barkeep' });
    return { server, status: await readReplicationStatus(client, target), error: null };
  } catch (e) {
    return { server, status: null, error: e instanceof ReplicationStatusUnsupported ? e.message : describePgError(e) };
  } finally {
    await closeQuietly(client);
  }
}

// Barman announces which conninfo --source wal-host ends up using; the
// value is masked here because it may carry a password.
function overrideMessage(s: ServerConfig): string | null {
  const parts: string[] = [];
  if (s.settings.wal_streaming_conninfo) parts.push(`'streaming_conninfo' overridden with '${maskConninfo(s.settings.wal_streaming_conninfo)}'`);
  const conninfo = s.settings.wal_conninfo ?? s.settings.wal_streaming_conninfo;
  if (conninfo) parts.push(`'conninfo' overridden with '${maskConninfo(conninfo)}'`);
  return parts.length ? `Configuration overrides applied: ${parts.join(' and ')}` : null;
}

function hiddenHint(s: ServerConfig, hidden: number, source: ReplicationSource): string {
  const key = source === 'wal-host' ? 'wal_conninfo' : 'conninfo';
  const clients = hidden === 1 ? '1 streaming client of another role is' : `${hidden} streaming clients of other roles are`;
  return `${clients} not shown for server '${s.name}': the role in ${key} may not read their details; grant it pg_read_all_stats (or pg_monitor)`;
}
