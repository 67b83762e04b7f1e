import type { SqlClient } from './connect.ts';

// What `replication-status` reads from a server: one row per WAL sender in
// pg_stat_replication with the physical slot it streams from, plus the
// server's own position. Values keep the shapes Barman's output is built
// from (LSNs and timestamps as text, counters as numbers).

export type ReplicationTarget = 'all' | 'hot-standby' | 'wal-streamer';

export interface StreamingClient {
  pid: number;
  usename: string | null;
  applicationName: string;
  clientAddr: string | null;
  clientHostname: string | null;
  clientPort: number | null;
  /** As Python prints an aware datetime: `2026-11-21 16:04:09.512363+00:00`. */
  backendStart: string | null;
  backendXmin: string | null;
  state: string;
  sentLsn: string | null;
  writeLsn: string | null;
  flushLsn: string | null;
  /** Null for WAL streamers (pg_receivewal, barkeep's receiver), set for standbys. */
  replayLsn: string | null;
  syncPriority: number;
  syncState: string;
  slotName: string | null;
  /** The position the client's LSNs are compared with (receive LSN on a standby). */
  currentLsn: string | null;
}

export interface ReplicationStatus {
  /** Current LSN on a primary, last replayed LSN on a standby (Barman's `current_xlog_location`). */
  serverLsn: string | null;
  isInRecovery: boolean;
  clients: StreamingClient[];
  /**
   * WAL senders of other roles whose details PostgreSQL hides from roles
   * without pg_read_all_stats: they are left out of `clients`.
   */
  hidden: number;
}

export class ReplicationStatusUnsupported extends Error {}

// Barman's query (postgres.py get_replication_stats) for PostgreSQL 10+,
// without its target filter: rows hidden by the privilege rules have a null
// replay_lsn too, so filtering in SQL would misfile them as WAL streamers.
const CLIENTS_SQL = `
SELECT r.pid, r.usename, r.application_name, host(r.client_addr) AS client_addr,
       r.client_hostname, r.client_port,
       to_char(r.backend_start, 'YYYY-MM-DD HH24:MI:SS.USOF') AS backend_start,
       r.backend_xmin::text AS backend_xmin, r.state,
       r.sent_lsn::text AS sent_lsn, r.write_lsn::text AS write_lsn,
       r.flush_lsn::text AS flush_lsn, r.replay_lsn::text AS replay_lsn,
       r.sync_priority, r.sync_state, rs.slot_name,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END::text AS current_lsn
  FROM pg_stat_replication r
  LEFT JOIN pg_replication_slots rs ON (r.pid = rs.active_pid)
 WHERE (rs.slot_type IS NULL OR rs.slot_type = 'physical')
 ORDER BY r.sync_state DESC, r.sync_priority`;

const SERVER_SQL = `
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text AS lsn,
       current_setting('server_version_num')::int AS version`;

interface ClientRow {
  pid: number;
  usename: string | null;
  application_name: string | null;
  client_addr: string | null;
  client_hostname: string | null;
  client_port: number | null;
  backend_start: string | null;
  backend_xmin: string | null;
  state: string | null;
  sent_lsn: string | null;
  write_lsn: string | null;
  flush_lsn: string | null;
  replay_lsn: string | null;
  sync_priority: number | null;
  sync_state: string | null;
  slot_name: string | null;
  current_lsn: string | null;
}

export async function readReplicationStatus(client: SqlClient, target: ReplicationTarget): Promise<ReplicationStatus> {
  const server = (await client.query<{ in_recovery: boolean; lsn: string | null; version: number }>(SERVER_SQL)).rows[0]!;
  if (server.version < 100000) throw new ReplicationStatusUnsupported('replication-status needs PostgreSQL 10 or newer');
  const rows = (await client.query<ClientRow>(CLIENTS_SQL)).rows;
  // Every visible WAL sender has a state; PostgreSQL nulls it (with all the
  // positions) for other roles' connections unless we may read all stats.
  const visible = rows.filter((r) => r.state !== null);
  const clients = visible.map(toClient).filter((c) => matchesTarget(c, target));
  return { serverLsn: server.lsn, isInRecovery: server.in_recovery, clients, hidden: rows.length - visible.length };
}

function matchesTarget(c: StreamingClient, target: ReplicationTarget): boolean {
  if (target === 'hot-standby') return c.replayLsn !== null;
  if (target === 'wal-streamer') return c.replayLsn === null;
  return true;
}

function toClient(r: ClientRow): StreamingClient {
  return {
    pid: Number(r.pid),
    usename: r.usename,
    applicationName: r.application_name ?? '',
    clientAddr: r.client_addr,
    clientHostname: r.client_hostname,
    clientPort: r.client_port === null ? null : Number(r.client_port),
    backendStart: r.backend_start === null ? null : pythonTimestamp(r.backend_start),
    backendXmin: r.backend_xmin,
    state: r.state!,
    sentLsn: r.sent_lsn,
    writeLsn: r.write_lsn,
    flushLsn: r.flush_lsn,
    replayLsn: r.replay_lsn,
    syncPriority: Number(r.sync_priority ?? 0),
    syncState: r.sync_state ?? '',
    slotName: r.slot_name,
    currentLsn: r.current_lsn,
  };
}

// Python's str(datetime) leaves out a zero microsecond part and always
// writes the offset as hours:minutes; to_char's OF gives "+00" or "+05:30".
function pythonTimestamp(text: string): string {
  return text.replace(/\.000000(?=[+-])/, '').replace(/([+-]\d\d)$/, '$1:00');
}
