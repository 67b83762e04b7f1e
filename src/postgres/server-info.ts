import type pg from 'pg';

// What check, status and show-server need to know about a live PostgreSQL
// server, gathered from an ordinary SQL connection. Each query that may
// fail for lack of privileges is isolated so that one missing grant does not
// hide everything else.

export interface ServerInfo {
  serverVersion: number;
  serverTxtVersion: string;
  isSuperuser: boolean;
  isInRecovery: boolean;
  settings: Record<string, string>;
  currentLsn: string | null;
  currentWal: string | null;
  timeline: number | null;
  currentSize: number | null;
  systemId: string | null;
}

const SETTINGS = [
  'data_directory', 'config_file', 'hba_file', 'ident_file', 'wal_level', 'data_checksums',
  'max_wal_senders', 'max_replication_slots', 'wal_keep_size', 'synchronous_standby_names',
  'hot_standby', 'archive_mode', 'archive_command', 'archive_timeout', 'checkpoint_timeout',
  'wal_compression', 'wal_segment_size', 'wal_sender_timeout', 'max_slot_wal_keep_size',
];

export async function gatherServerInfo(client: pg.Client): Promise<ServerInfo> {
  const base = await client.query<{ num: string; txt: string; su: string; rec: boolean }>(
    `SELECT current_setting('server_version_num') AS num,
            current_setting('server_version') AS txt,
            current_setting('is_superuser') AS su,
            pg_is_in_recovery() AS rec`,
  );
  const row = base.rows[0]!;
  const settingsRows = await client.query<{ name: string; setting: string; unit: string | null }>(
    'SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)',
    [SETTINGS],
  );
  const settings: Record<string, string> = {};
  for (const r of settingsRows.rows) settings[r.name] = r.setting;
  // current_setting gives the human form ("16MB") that Barman shows.
  for (const name of ['wal_keep_size', 'wal_segment_size', 'max_slot_wal_keep_size']) {
    if (name in settings) settings[name] = (await optional(client, `SELECT current_setting('${name}') AS v`)) ?? settings[name]!;
  }

  const info: ServerInfo = {
    serverVersion: Number(row.num),
    serverTxtVersion: row.txt.split(' ')[0]!,
    isSuperuser: row.su === 'on',
    isInRecovery: row.rec,
    settings,
    currentLsn: null,
    currentWal: null,
    timeline: null,
    currentSize: null,
    systemId: null,
  };

  const lsnQuery = info.isInRecovery
    ? `SELECT pg_last_wal_receive_lsn()::text AS lsn, NULL AS wal, NULL AS tli`
    : `SELECT pg_current_wal_lsn()::text AS lsn, pg_walfile_name(pg_current_wal_lsn()) AS wal,
              (SELECT timeline_id FROM pg_control_checkpoint())::text AS tli`;
  const lsn = await optionalRow<{ lsn: string | null; wal: string | null; tli: string | null }>(client, lsnQuery);
  if (lsn) {
    info.currentLsn = lsn.lsn;
    info.currentWal = lsn.wal;
    if (lsn.wal) info.timeline = parseInt(lsn.wal.slice(0, 8), 16);
    else if (lsn.tli) info.timeline = Number(lsn.tli);
  }
  const size = await optional(client, 'SELECT sum(pg_database_size(oid))::text AS v FROM pg_database WHERE datallowconn');
  info.currentSize = size === null ? null : Number(size);
  info.systemId = await optional(client, 'SELECT system_identifier::text AS v FROM pg_control_system()');
  return info;
}

async function optional(client: pg.Client, sql: string): Promise<string | null> {
  const row = await optionalRow<{ v: string | null }>(client, sql);
  return row?.v ?? null;
}

async function optionalRow<T extends pg.QueryResultRow>(client: pg.Client, sql: string): Promise<T | null> {
  try {
    const res = await client.query<T>(sql);
    return res.rows[0] ?? null;
  } catch {
    return null;
  }
}

export interface BackupPrivileges {
  ok: boolean;
  missing: string[];
}

/**
 * Barman's rule: a superuser, or a user who can read settings and statistics
 * (pg_monitor, or pg_read_all_settings + pg_read_all_stats) and run the
 * backup start/stop functions.
 */
export async function checkBackupPrivileges(client: pg.Client, serverVersion: number): Promise<BackupPrivileges> {
  const [start, stop] = serverVersion >= 150000
    ? ['pg_backup_start(text, boolean)', 'pg_backup_stop(boolean)']
    : ['pg_start_backup(text, boolean, boolean)', 'pg_stop_backup(boolean, boolean)'];
  const res = await client.query<{ su: boolean; monitor: boolean; settings: boolean; stats: boolean; start: boolean; stop: boolean }>(
    `SELECT r.rolsuper AS su,
            pg_has_role(current_user, 'pg_monitor', 'USAGE') AS monitor,
            pg_has_role(current_user, 'pg_read_all_settings', 'USAGE') AS settings,
            pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS stats,
            has_function_privilege(current_user, $1, 'EXECUTE') AS start,
            has_function_privilege(current_user, $2, 'EXECUTE') AS stop
       FROM pg_roles r WHERE r.rolname = current_user`,
    [start, stop],
  );
  const r = res.rows[0]!;
  if (r.su) return { ok: true, missing: [] };
  const missing: string[] = [];
  if (!r.monitor && !(r.settings && r.stats)) missing.push('membership in pg_monitor (or pg_read_all_settings and pg_read_all_stats)');
  if (!r.start) missing.push(`EXECUTE on ${start}`);
  if (!r.stop) missing.push(`EXECUTE on ${stop}`);
  return { ok: missing.length === 0, missing };
}

export interface SlotInfo {
  slotName: string;
  slotType: string;
  active: boolean;
  restartLsn: string | null;
  walStatus: string | null;
}

export async function readReplicationSlot(client: pg.Client, slotName: string, serverVersion: number): Promise<SlotInfo | null> {
  const walStatus = serverVersion >= 130000 ? 'wal_status' : 'NULL::text AS wal_status';
  const res = await client.query<{ slot_name: string; slot_type: string; active: boolean; restart_lsn: string | null; wal_status: string | null }>(
    `SELECT slot_name, slot_type, active, restart_lsn::text, ${walStatus} FROM pg_replication_slots WHERE slot_name = $1`,
    [slotName],
  );
  const r = res.rows[0];
  if (!r) return null;
  return { slotName: r.slot_name, slotType: r.slot_type, active: r.active, restartLsn: r.restart_lsn, walStatus: r.wal_status };
}
