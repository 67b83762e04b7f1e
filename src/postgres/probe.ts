import { closeQuietly, connectReplication, connectSql, describePgError } from './connect.ts';
import { identifySystem } from './replication-commands.ts';
import { checkBackupPrivileges, gatherServerInfo, readReplicationSlot, type ServerInfo, type SlotInfo } from './server-info.ts';

// A one-shot look at a live server for status, show-server and diagnose:
// everything that can be learnt over both connections, with the errors
// (never secrets) of whatever could not be.

export interface ProbeRequest {
  conninfo: string | null;
  streamingConninfo: string | null;
  slotName: string | null;
  timeoutSeconds: number;
}

export interface ProbeResult {
  info: ServerInfo | null;
  connectionError: string | null;
  hasBackupPrivileges: boolean | null;
  slot: SlotInfo | null;
  streamingOk: boolean;
  streamingError: string | null;
  streamingSystemId: string | null;
}

export async function probeServer(req: ProbeRequest): Promise<ProbeResult> {
  const result: ProbeResult = {
    info: null,
    connectionError: null,
    hasBackupPrivileges: null,
    slot: null,
    streamingOk: false,
    streamingError: null,
    streamingSystemId: null,
  };
  const opts = { connectTimeout: req.timeoutSeconds || undefined, applicationName: 'barkeep' };
  await Promise.all([
    (async () => {
      if (!req.conninfo) {
        result.connectionError = 'no conninfo configured';
        return;
      }
      const client = await connectSql(req.conninfo, opts).catch((e) => {
        result.connectionError = describePgError(e);
        return undefined;
      });
      if (!client) return;
      try {
        result.info = await gatherServerInfo(client);
        result.hasBackupPrivileges = (await checkBackupPrivileges(client, result.info.serverVersion)).ok;
        if (req.slotName) result.slot = await readReplicationSlot(client, req.slotName, result.info.serverVersion);
      } catch (e) {
        result.connectionError = describePgError(e);
      } finally {
        await closeQuietly(client);
      }
    })(),
    (async () => {
      if (!req.streamingConninfo) {
        result.streamingError = 'no streaming_conninfo configured';
        return;
      }
      const client = await connectReplication(req.streamingConninfo, opts).catch((e) => {
        result.streamingError = describePgError(e);
        return undefined;
      });
      if (!client) return;
      try {
        result.streamingSystemId = (await identifySystem(client)).systemId;
        result.streamingOk = true;
      } catch (e) {
        result.streamingError = describePgError(e);
      } finally {
        await closeQuietly(client);
      }
    })(),
  ]);
  return result;
}

/**
 * A replication slot as pg_replication_slots shows it, over an ordinary
 * connection of its own (physical walsenders cannot run SQL, and
 * READ_REPLICATION_SLOT only exists from PostgreSQL 15).
 */
export async function readSlotOverSql(conninfo: string, slot: string): Promise<SlotInfo | null> {
  const sql = await connectSql(conninfo, { applicationName: 'barkeep' });
  try {
    const version = Number((await sql.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v);
    return await readReplicationSlot(sql, slot, version);
  } finally {
    await closeQuietly(sql);
  }
}
