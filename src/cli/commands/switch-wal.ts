import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { walPath } from '../../catalog/layout.ts';
import type { ServerConfig } from '../../config/load.ts';
import { closeQuietly, connectSql, describePgError } from '../../postgres/connect.ts';
import { xlogDbHasEntry } from '../../wal/xlog-db-access.ts';
import type { CommandHost } from '../command-host.ts';
import { CliError, type CliContext } from '../context.ts';
import { runArchiveWal } from './wal-archive.ts';

// `barkeep switch-wal [--force] [--archive] [--archive-timeout S] SERVER...|all`:
// close the current WAL segment, and with --archive wait until it is in the archive.

interface SwitchWalOptions {
  force?: boolean;
  archive?: boolean;
  archiveTimeout: string;
}

export function register(host: CommandHost): void {
  host.program
    .command('switch-wal')
    .alias('switch-xlog')
    .description('close the current WAL segment of servers (pg_switch_wal), optionally waiting until it is archived')
    .argument('<server...>', "server names, or 'all'")
    .option('--force', 'issue a CHECKPOINT first, so there is always something to switch (needs pg_checkpoint or superuser)')
    .option('--archive', 'wait until the closed WAL segment is archived by barkeep')
    .option('--archive-timeout <seconds>', 'how long --archive waits', '30')
    .action(async (names: string[], opts: SwitchWalOptions) => {
      host.setExitCode(await switchWal(host.context(), names, opts));
    });
}

async function switchWal(ctx: CliContext, names: string[], opts: SwitchWalOptions): Promise<number> {
  const timeout = Number(opts.archiveTimeout);
  if (!Number.isInteger(timeout) || timeout < 1) throw new CliError(`--archive-timeout '${opts.archiveTimeout}': use a whole number of seconds >= 1`);
  let failed = false;
  for (const server of ctx.selectServers(names)) {
    const closed = await switchOne(ctx, server, opts.force === true);
    if (closed === false) failed = true;
    else if (closed !== null && opts.archive && !(await waitArchived(ctx, server, closed, timeout))) failed = true;
  }
  return failed || ctx.hadErrors ? 1 : 0;
}

/** The name of the closed segment, null when nothing was switched, false on error. */
async function switchOne(ctx: CliContext, server: ServerConfig, force: boolean): Promise<string | null | false> {
  let sql;
  try {
    sql = await connectSql(server.settings.conninfo!, { applicationName: 'barkeep', connectTimeout: server.settings.check_timeout ?? 30 });
    if ((await sql.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r) {
      ctx.print(`No switch performed because server '${server.name}' is a standby.`);
      return null;
    }
    if (force) {
      try {
        await sql.query('CHECKPOINT');
      } catch (e) {
        ctx.error(`switch-wal --force on server '${server.name}' needs the pg_checkpoint role or superuser rights: ${describePgError(e)}`);
        return false;
      }
    }
    // pg_switch_wal() returns the end of the segment it closed, or, when
    // there was nothing to switch, the start of the current one: only a real
    // switch returns a position past where WAL was before. (Comparing file
    // names fails: pg_walfile_name() of a segment boundary names the segment
    // before it.)
    const res = await sql.query<{ switched: boolean; closed: string }>(
      `WITH b AS (SELECT pg_current_wal_lsn() AS before), s AS (SELECT pg_switch_wal() AS sw FROM b)
       SELECT s.sw > b.before AS switched, pg_walfile_name(s.sw) AS closed FROM s, b`,
    );
    const { switched, closed } = res.rows[0]!;
    if (!switched) {
      ctx.print(`No switch required for server '${server.name}'`);
      return null;
    }
    ctx.print(`The WAL file ${closed} has been closed on server '${server.name}'`);
    ctx.logger.info({ server: server.name, wal: closed }, 'WAL switched');
    return closed;
  } catch (e) {
    ctx.error(`Cannot switch WAL on server '${server.name}': ${describePgError(e)}`);
    return false;
  } finally {
    await closeQuietly(sql);
  }
}

async function waitArchived(ctx: CliContext, server: ServerConfig, wal: string, timeout: number): Promise<boolean> {
  ctx.print(`Waiting for the WAL file ${wal} from server '${server.name}' (max: ${timeout} seconds)`);
  const deadline = Date.now() + timeout * 1000;
  const queued = () =>
    existsSync(join(server.paths.streamingWalsDirectory, wal)) || existsSync(join(server.paths.incomingWalsDirectory, wal));
  while (Date.now() < deadline) {
    if (queued()) await runArchiveWal(ctx, server.name);
    if (existsSync(walPath(server.paths, wal)) && (await xlogDbHasEntry(server.paths, wal))) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  ctx.error(`The WAL file ${wal} has not been received in ${timeout} seconds`);
  return false;
}
