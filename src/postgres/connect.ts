import pg from 'pg';
import { toClientConfig, type PgOptions } from './conninfo.ts';
import { staticReadSocket } from './static-read-socket.ts';

// Opening connections. Every client gets an 'error' listener at once: a
// server shutdown or network drop arrives as an event, and without a
// listener Node would crash the whole process (seen with replication
// clients). Replication clients never get a query_timeout: it would also
// apply to START_REPLICATION and kill the stream.

export type SqlClient = pg.Client;

export async function connectSql(conninfo: string, opts: PgOptions = {}): Promise<pg.Client> {
  return open(conninfo, { ...opts, replication: false });
}

/**
 * `staticReads`: for a connection that streams a lot (BASE_BACKUP), read into
 * one reused buffer (static-read-socket.ts); ignored with TLS.
 */
export async function connectReplication(conninfo: string, opts: PgOptions = {}, o: { staticReads?: boolean } = {}): Promise<pg.Client> {
  return open(conninfo, { ...opts, replication: true }, o.staticReads ?? false);
}

async function open(conninfo: string, opts: PgOptions, staticReads = false): Promise<pg.Client> {
  const config = toClientConfig(conninfo, opts);
  if (staticReads && !config.ssl) config.stream = () => staticReadSocket();
  const client = new pg.Client(config);
  let lastError: Error | undefined;
  client.on('error', (e) => {
    lastError = e;
  });
  try {
    await client.connect();
  } catch (e) {
    await client.end().catch(() => {});
    throw lastError ?? e;
  }
  return client;
}

export async function closeQuietly(client: pg.Client | undefined): Promise<void> {
  if (!client) return;
  await client.end().catch(() => {});
}

/** One-line description of a connection error, without secrets. */
export function describePgError(e: unknown): string {
  const err = e as Error & { code?: string };
  let msg = (err?.message ?? String(e)).split('\n')[0]!;
  if (/client password must be a (non-empty )?string/.test(msg)) {
    msg = 'no password supplied: the server asks for one; put it in ~/.pgpass (or the file PGPASSFILE names) or PGPASSWORD';
  }
  return err?.code && /^[0-9A-Z]{5}$/.test(err.code) ? `${msg} (SQLSTATE ${err.code})` : msg;
}
