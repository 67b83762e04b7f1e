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
