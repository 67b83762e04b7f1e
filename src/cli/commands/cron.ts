import { maintenancePass, type MaintenanceEvent, type MaintenanceReport } from '../../daemon/maintenance.ts';
import { ServerHooks } from '../../hooks/server-hooks.ts';
import type { CommandHost } from '../command-host.ts';
import type { CliContext } from '../context.ts';

// `barkeep cron`: one maintenance pass over every active server, with the lines
// `barman cron` and the commands it spawns print. The daemon runs the same pass
// every minute; this command is for setups still driven by a crontab.

export function register(host: CommandHost): void {
  host.program
    .command('cron')
    .description(
      'run the maintenance of every active server once: archive the WAL in incoming/ and streaming/, ' +
        'update WAITING_FOR_WALS backups, delete OBSOLETE backups and the WAL no remaining backup needs. ' +
        'Unlike Barman it starts no receive-wal: the barkeep daemon supervises the WAL receivers ' +
        "(without the daemon, run 'barkeep receive-wal SERVER' as a service)",
    )
    .option('--keep-descriptors', 'accepted for Barman compatibility: barkeep runs every task in this process, so there are no subprocess streams to keep')
    .action(async () => host.setExitCode(await runCron(host.context())));
}

export async function runCron(ctx: CliContext): Promise<number> {
  // Inactive and disabled servers are skipped silently, as Barman's cron does.
  const names = [...ctx.config.servers.values()]
    .filter((s) => s.settings.active !== false && !s.disabled)
    .map((s) => s.name)
    .sort();
  const servers = ctx.selectServers(names);
  const json = ctx.opts.format === 'json';
  const doc: Record<string, MaintenanceReport> = {};
  let failed = false;
  for (const server of servers) {
    try {
      const hooks = ServerHooks.forServer(server, { configFile: ctx.config.file, logger: ctx.logger });
      const report = await maintenancePass(server, { logger: ctx.logger, hooks, ...(json ? {} : { onEvent: (e: MaintenanceEvent) => show(ctx, e) }) });
      // From the report, not from what was printed: -f json prints no messages.
      if (report.outcome === 'failed' || report.messages.some((m) => m.level === 'error')) failed = true;
      doc[server.name] = report;
    } catch (err) {
      // A pass reports its own failures; this only protects the other servers from a bug.
      failed = true;
      ctx.logger.error({ server: server.name, err }, 'maintenance pass crashed');
      ctx.error(`Unable to run cron on server '${server.name}', please look in the barkeep log file for more details. (${(err as Error).message})`);
    }
  }
  if (json) ctx.printJson(doc);
  return failed || ctx.hadErrors ? 1 : 0;
}

function show(ctx: CliContext, e: MaintenanceEvent): void {
  if (e.type !== 'message') return;
  if (e.level === 'info') ctx.print(e.text);
  else if (e.level === 'warning') ctx.warning(e.text);
  else ctx.error(e.text);
}
