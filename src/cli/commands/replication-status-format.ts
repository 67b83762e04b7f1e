import { parseLsn } from '../../postgres/lsn.ts';
import type { ReplicationStatus, ReplicationTarget, StreamingClient } from '../../postgres/replication-status.ts';
import { prettySize } from '../../util/human.ts';

// Barman's replication-status rendering (output.py, result_replication_status
// of the console and JSON writers), line for line and key for key, so that
// scripts written against Barman keep parsing it.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function title(target: ReplicationTarget): string {
  if (target === 'hot-standby') return 'hot standby servers';
  if (target === 'wal-streamer') return 'WAL streamers';
  return 'streaming clients';
}

function titleKey(target: ReplicationTarget): string {
  return title(target).toLowerCase().replace(/[ -]/g, '_').replace(/\./g, '');
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1).toLowerCase();
}

function diff(lsn: string | null, current: string | null): number | null {
  if (lsn === null || current === null) return null;
  return Number(parseLsn(lsn) - parseLsn(current));
}

interface Diffs {
  sent: number | null;
  write: number | null;
  flush: number | null;
  replay: number | null;
}

function diffs(c: StreamingClient): Diffs {
  return {
    sent: diff(c.sentLsn, c.currentLsn),
    write: diff(c.writeLsn, c.currentLsn),
    flush: diff(c.flushLsn, c.currentLsn),
    replay: diff(c.replayLsn, c.currentLsn),
  };
}

function isStreamer(c: StreamingClient): boolean {
  return !c.replayLsn;
}

/** The client kind and how far it has got: the highest level it has caught up to. */
function classify(c: StreamingClient, d: Diffs): { clientType: string; syncStage: string } {
  if (isStreamer(c)) return { clientType: 'WAL streamer', syncStage: lowerStage(d, 3) };
  if (d.replay === 0) return { clientType: 'standby', syncStage: '5/5 Hot standby (max)' };
  if (d.flush === 0) return { clientType: 'standby', syncStage: '4/5 2-safe' };
  return { clientType: 'standby', syncStage: lowerStage(d, 5) };
}

function lowerStage(d: Diffs, max: number): string {
  if (d.write === 0) return `3/${max} Remote write`;
  if (d.sent === 0) return `2/${max} WAL Sent (min)`;
  return `1/${max} 1-safe`;
}

function clientName(c: StreamingClient, clientType: string): string {
  return c.syncPriority > 0 ? `#${c.syncPriority} ${capitalize(c.syncState)} ${clientType}` : `${capitalize(c.syncState)} ${clientType}`;
}

/** A value as Python's %s prints it (Barman formats rows with it): None for null. */
function py(value: string | number | null): string {
  return value === null ? 'None' : String(value);
}

function pretty(n: number | null): string {
  return n === null ? 'None' : prettySize(n);
}

export function consoleLines(server: string, target: ReplicationTarget, status: ReplicationStatus, minimal: boolean): string[] {
  const t = title(target);
  const out: string[] = [];
  if (minimal) {
    out.push(status.serverLsn ? `${capitalize(t)} for master '${server}' (LSN @ ${status.serverLsn}):` : `${capitalize(t)} for slave '${server}':`);
  } else {
    out.push(`Status of ${t} for server '${server}':`);
    if (status.serverLsn) out.push(`  Current LSN on master: ${status.serverLsn}`);
  }
  if (status.clients.length === 0) {
    out.push(`  No ${t} attached`);
    return out;
  }
  if (minimal) {
    status.clients.forEach((c, i) => {
      const who = `${py(c.usename)}@${c.clientAddr || 'socket'}`;
      out.push(
        isStreamer(c)
          ? `  ${i + 1}. W) ${who} S:${py(c.sentLsn)} W:${py(c.writeLsn)} P:${c.syncPriority} AN:${c.applicationName}`
          : `  ${i + 1}. ${c.syncState.charAt(0).toUpperCase()}) ${who} S:${py(c.sentLsn)} F:${py(c.flushLsn)} R:${py(c.replayLsn)} P:${c.syncPriority} AN:${c.applicationName}`,
      );
    });
    return out;
  }
  out.push(`  Number of ${t}: ${status.clients.length}`);
  status.clients.forEach((c, i) => {
    const d = diffs(c);
    const { clientType, syncStage } = classify(c, d);
    out.push('');
    out.push(`  ${i + 1}. ${clientName(c, clientType)}`);
    out.push(`     Application name: ${c.applicationName}`);
    out.push(`     Sync stage      : ${syncStage}`);
    if (c.clientAddr) {
      out.push('     Communication   : TCP/IP');
      out.push(`     IP Address      : ${c.clientAddr} / Port: ${c.clientPort} / Host: ${c.clientHostname || '-'}`);
    } else {
      out.push('     Communication   : Unix domain socket');
    }
    out.push(`     User name       : ${py(c.usename)}`);
    out.push(`     Current state   : ${c.state} (${c.syncState})`);
    if (c.slotName) out.push(`     Replication slot: ${c.slotName}`);
    out.push(`     WAL sender PID  : ${c.pid}`);
    out.push(`     Started at      : ${py(c.backendStart)}`);
    if (c.backendXmin) out.push(`     Standby's xmin  : ${c.backendXmin}`);
    if (c.sentLsn) out.push(`     Sent LSN   : ${c.sentLsn} (diff: ${pretty(d.sent)})`);
    if (c.writeLsn) out.push(`     Write LSN  : ${c.writeLsn} (diff: ${pretty(d.write)})`);
    if (c.flushLsn) out.push(`     Flush LSN  : ${c.flushLsn} (diff: ${pretty(d.flush)})`);
    if (c.replayLsn) out.push(`     Replay LSN : ${c.replayLsn} (diff: ${pretty(d.replay)})`);
  });
  return out;
}

/** One server's object in the `-f json` document; keys sorted as Barman's json.dump(sort_keys=True) does. */
export function jsonDocument(target: ReplicationTarget, status: ReplicationStatus, minimal: boolean): Json {
  const doc: Record<string, Json> = { server_lsn: status.serverLsn || null };
  const key = titleKey(target);
  if (status.clients.length === 0) {
    doc[key] = [];
    doc['standby_info'] = `No ${title(target)} attached`;
    return sortKeys(doc);
  }
  doc[key] = status.clients.map((c) => (minimal ? minimalJson(c) : fullJson(c)));
  return sortKeys(doc);
}

function minimalJson(c: StreamingClient): Json {
  const base: Record<string, Json> = {
    user_name: c.usename,
    client_addr: c.clientAddr || 'socket',
    sent_lsn: c.sentLsn,
    sync_priority: c.syncPriority,
    application_name: c.applicationName,
  };
  if (isStreamer(c)) return { ...base, write_lsn: c.writeLsn };
  return { ...base, sync_state: c.syncState.charAt(0).toUpperCase(), flush_lsn: c.flushLsn, replay_lsn: c.replayLsn };
}

function fullJson(c: StreamingClient): Json {
  const d = diffs(c);
  const { clientType, syncStage } = classify(c, d);
  const o: Record<string, Json> = {
    name: clientName(c, clientType),
    application_name: c.applicationName,
    sync_stage: syncStage,
  };
  if (c.clientAddr) {
    Object.assign(o, { communication: 'TCP/IP', ip_address: c.clientAddr, port: c.clientPort, host: c.clientHostname || null });
  } else {
    o['communication'] = 'Unix domain socket';
  }
  Object.assign(o, { user_name: c.usename, current_state: c.state, current_sync_state: c.syncState });
  if (c.slotName) o['replication_slot'] = c.slotName;
  Object.assign(o, { wal_sender_pid: c.pid, started_at: c.backendStart });
  if (c.backendXmin) o['standbys_xmin'] = c.backendXmin;
  const lsns: [keyof Diffs, string | null][] = [
    ['sent', c.sentLsn],
    ['write', c.writeLsn],
    ['flush', c.flushLsn],
    ['replay', c.replayLsn],
  ];
  for (const [name, lsn] of lsns) {
    if (!lsn) continue;
    o[`${name}_lsn`] = lsn;
    o[`${name}_lsn_diff`] = pretty(d[name]);
    o[`${name}_lsn_diff_bytes`] = d[name];
  }
  return o;
}

export function sortKeys(value: Json): Json {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k]!)]));
  }
  return value;
}
