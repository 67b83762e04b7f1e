import type { ServerConfig } from '../../config/load.ts';
import { formatIssue } from '../../config/issues.ts';
import { isSecretKey, SERVER_KEYS } from '../../config/keys.ts';
import { formatRetentionPolicy, type RetentionPolicy } from '../../config/retention-policy.ts';
import { maskConninfo } from '../../postgres/conninfo.ts';
import { probeServer, type ProbeResult } from '../../postgres/probe.ts';
import type { CliContext } from '../context.ts';

// list-server and show-server, in Barman's formats.

export function runListServer(ctx: CliContext, opts: { minimal?: boolean }): number {
  const servers = [...ctx.config.servers.values()];
  if (ctx.opts.format === 'json') {
    const doc: Record<string, { description: string | null }> = {};
    for (const s of servers) doc[s.name] = { description: s.settings.description };
    ctx.printJson(doc);
    return ctx.hadErrors ? 1 : 0;
  }
  for (const s of servers) {
    if (opts.minimal) {
      ctx.print(s.name);
      continue;
    }
    let description = s.settings.description ?? '';
    if (s.settings.active === false) description += ' (inactive)';
    else if (s.disabled) description += ' (WARNING: disabled)';
    ctx.print(description ? `${s.name} - ${description.trim()}` : s.name);
  }
  return ctx.hadErrors ? 1 : 0;
}

export async function runShowServer(ctx: CliContext, names: string[]): Promise<number> {
  const servers = ctx.selectServers(names, { allowInactive: true, allowDisabled: true });
  const shown = await Promise.all(
    servers.map(async (s) => {
      const probe = s.settings.active === false ? null : await probeServer({
        conninfo: s.settings.conninfo,
        streamingConninfo: s.settings.streaming_conninfo,
        slotName: s.settings.slot_name,
        timeoutSeconds: s.settings.check_timeout ?? 30,
      });
      return { server: s, values: serverValues(ctx, s, probe) };
    }),
  );
  if (ctx.opts.format === 'json') {
    const doc: Record<string, Record<string, unknown>> = {};
    for (const { server, values } of shown) doc[server.name] = Object.fromEntries(Object.entries(values).map(([k, v]) => [k, jsonValue(v)]));
    ctx.printJson(doc);
  } else {
    for (const { server, values } of shown) {
      ctx.print(`Server ${server.name}:`);
      for (const key of Object.keys(values).sort()) ctx.print(`\t${key}: ${pythonish(values[key])}`);
    }
  }
  return ctx.hadErrors ? 1 : 0;
}

type ShowValue = string | number | boolean | null | string[] | RetentionPolicy | { python: string; json: unknown };

function serverValues(ctx: CliContext, s: ServerConfig, probe: ProbeResult | null): Record<string, ShowValue> {
  const v: Record<string, ShowValue> = {};
  for (const key of Object.keys(SERVER_KEYS) as (keyof typeof SERVER_KEYS)[]) {
    const value = s.settings[key];
    if (isSecretKey(key) && typeof value === 'string') {
      v[key] = key.endsWith('conninfo') ? maskConninfo(value) : '***';
    } else if (key === 'backup_options') {
      const set = (value as string[] | null) ?? [];
      v[key] = { python: `BackupOptions({${set.map((x) => `'${x}'`).join(', ')}})`, json: set.join(',') };
    } else if (key === 'recovery_options') {
      const set = (value as string[] | null) ?? [];
      v[key] = { python: set.length ? `RecoveryOptions({${set.map((x) => `'${x}'`).join(', ')}})` : 'RecoveryOptions()', json: set.join(',') };
    } else if (key === 'wal_retention_policy' && typeof value === 'string') {
      v[key] = value.toUpperCase();
    } else if (value !== null && typeof value === 'object' && 'seconds' in value) {
      v[key] = value.text;
    } else {
      v[key] = value as ShowValue;
    }
  }
  v['name'] = s.name;
  v['barman_home'] = ctx.config.global.barman_home;
  v['barman_lock_directory'] = s.paths.lockDirectory;
  v['disabled'] = s.disabled;
  v['msg_list'] = s.issues.filter((i) => i.level === 'error').map(formatIssue);
  if (probe) Object.assign(v, liveValues(s, probe));
  return v;
}

function liveValues(s: ServerConfig, p: ProbeResult): Record<string, ShowValue> {
  const v: Record<string, ShowValue> = {
    connection_error: p.connectionError,
    streaming: p.streamingOk,
    streaming_systemid: p.streamingSystemId,
  };
  if (p.streamingError) v['streaming_error'] = p.streamingError;
  const info = p.info;
  if (!info) return v;
  const st = info.settings;
  Object.assign(v, {
    server_txt_version: info.serverTxtVersion,
    version_supported: info.serverVersion >= 140000,
    is_superuser: info.isSuperuser,
    is_in_recovery: info.isInRecovery,
    has_backup_privileges: p.hasBackupPrivileges,
    postgres_systemid: info.systemId,
    current_xlog: info.currentWal,
    current_lsn: info.currentLsn,
    xlogpos: info.currentLsn,
    timeline: info.timeline,
    current_size: info.currentSize,
    data_directory: st['data_directory'] ?? null,
    config_file: st['config_file'] ?? null,
    hba_file: st['hba_file'] ?? null,
    ident_file: st['ident_file'] ?? null,
    wal_level: st['wal_level'] ?? null,
    data_checksums: st['data_checksums'] ?? null,
    hot_standby: st['hot_standby'] ?? null,
    max_wal_senders: numOrNull(st['max_wal_senders']),
    max_replication_slots: numOrNull(st['max_replication_slots']),
    wal_keep_size: st['wal_keep_size'] ?? null,
    wal_compression: st['wal_compression'] ?? null,
    checkpoint_timeout: numOrNull(st['checkpoint_timeout']),
    archive_timeout: numOrNull(st['archive_timeout']),
    xlog_segment_size: segmentBytes(st['wal_segment_size']),
    synchronous_standby_names: { python: `[${(st['synchronous_standby_names'] ?? '').split(',').map((x) => `'${x.trim()}'`).join(', ')}]`, json: (st['synchronous_standby_names'] ?? '').split(',').map((x) => x.trim()) },
    replication_slot_support: true,
  });
  if (s.settings.slot_name) {
    const slot = p.slot;
    v['replication_slot'] = slot
      ? { python: `Record(slot_name='${slot.slotName}', active=${slot.active ? 'True' : 'False'}, restart_lsn=${slot.restartLsn === null ? 'None' : `'${slot.restartLsn}'`})`, json: { slot_name: slot.slotName, active: slot.active, restart_lsn: slot.restartLsn } }
      : null;
  }
  return v;
}

function numOrNull(x: string | undefined): number | null {
  return x === undefined || x === '' || Number.isNaN(Number(x)) ? null : Number(x);
}

function segmentBytes(x: string | undefined): number | null {
  if (!x) return null;
  const m = /^(\d+)\s*(kB|MB|GB)?$/.exec(x);
  if (!m) return null;
  return Number(m[1]) * ({ kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[m[2] as 'kB' | 'MB' | 'GB'] ?? 1);
}

/** Values rendered the way Barman (Python) prints them. */
function pythonish(value: ShowValue | undefined): string {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (Array.isArray(value)) return `[${value.map((x) => `'${x}'`).join(', ')}]`;
  if (typeof value === 'object') return 'python' in value ? value.python : formatRetentionPolicy(value);
  return String(value);
}

function jsonValue(value: ShowValue | undefined): unknown {
  if (value === undefined) return null;
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    return 'python' in value ? value.json : formatRetentionPolicy(value);
  }
  return value;
}
