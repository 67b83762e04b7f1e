import type pg from 'pg';

// Commands of the replication protocol that return ordinary result sets.
// pg returns int8 and text columns as strings: system identifiers overflow
// JavaScript numbers, so they stay strings.

export interface SystemIdentity {
  systemId: string;
  timeline: number;
  xlogPos: string;
}

export async function identifySystem(client: pg.Client): Promise<SystemIdentity> {
  const res = await client.query<{ systemid: string; timeline: number | string; xlogpos: string }>('IDENTIFY_SYSTEM');
  const row = res.rows[0];
  if (!row) throw new Error('IDENTIFY_SYSTEM returned no row');
  return { systemId: String(row.systemid), timeline: Number(row.timeline), xlogPos: row.xlogpos };
}

export async function showSetting(client: pg.Client, name: string): Promise<string> {
  const res = await client.query<Record<string, string>>(`SHOW ${name}`);
  const row = res.rows[0];
  const value = row ? Object.values(row)[0] : undefined;
  if (value === undefined) throw new Error(`SHOW ${name} returned nothing`);
  return value;
}

export interface ReplicationSlotPosition {
  exists: boolean;
  restartLsn: string | null;
  restartTimeline: number | null;
}

/** READ_REPLICATION_SLOT (PostgreSQL 15+): a missing slot is a row of NULLs, not an error. */
export async function readReplicationSlotPosition(client: pg.Client, slot: string): Promise<ReplicationSlotPosition> {
  const res = await client.query<{ slot_type: string | null; restart_lsn: string | null; restart_tli: string | null }>(`READ_REPLICATION_SLOT "${slot}"`);
  const row = res.rows[0];
  return {
    exists: row?.slot_type != null,
    restartLsn: row?.restart_lsn ?? null,
    restartTimeline: row?.restart_tli == null ? null : Number(row.restart_tli),
  };
}

/**
 * RESERVE_WAL makes the slot hold WAL from the moment it exists (Barman's
 * slot reserves nothing until pg_receivewal first streams).
 */
export async function createPhysicalSlot(client: pg.Client, slot: string): Promise<void> {
  await client.query(`CREATE_REPLICATION_SLOT "${slot}" PHYSICAL RESERVE_WAL`);
}

export async function dropSlot(client: pg.Client, slot: string): Promise<void> {
  await client.query(`DROP_REPLICATION_SLOT "${slot}"`);
}

export interface TimelineHistory {
  filename: string;
  content: string;
}

export async function timelineHistory(client: pg.Client, timeline: number): Promise<TimelineHistory> {
  const res = await client.query<{ filename: string; content: string | Buffer }>(`TIMELINE_HISTORY ${timeline}`);
  const row = res.rows[0];
  if (!row) throw new Error(`TIMELINE_HISTORY ${timeline} returned nothing`);
  return { filename: row.filename, content: Buffer.isBuffer(row.content) ? row.content.toString('utf8') : row.content };
}

export interface HistoryEntry {
  timeline: number;
  /** Where this timeline ended (the next one began). */
  switchLsn: string;
}

/** Lines of a .history file: "<parent tli>\t<switch LSN>\t<reason>". */
export function parseTimelineHistory(content: string): HistoryEntry[] {
  const out: HistoryEntry[] = [];
  for (const line of content.split('\n')) {
    const m = /^\s*(\d+)\s+([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/.exec(line);
    if (m) out.push({ timeline: Number(m[1]), switchLsn: m[2]! });
  }
  return out;
}
