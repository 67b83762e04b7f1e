import type { CommandHost } from '../command-host.ts';
import { CliError, type CliContext } from '../context.ts';

// `barkeep daemon`: the long-running process that replaces `barman cron`
// and the backup crontab (src/daemon/). SIGHUP reloads the configuration;
// SIGTERM/SIGINT stop it within 10 s (a running scheduled backup gets
// --graceful-timeout seconds to finish, then is interrupted and marked FAILED).

const STOP_DEADLINE_MS = 10_000;

export function register(host: CommandHost): void {
  host.program
    .command('daemon')
    .description('run every server: WAL receivers, a maintenance pass every minute (archiving, backup status, retention), backup_schedule backups, /metrics and /health on http_listen')
    .option('--graceful-timeout <seconds>', 'on stop, how long a running scheduled backup may take to finish (at most 8)', '0')
    .action(async (opts: { gracefulTimeout: string }) => {
      host.setExitCode(await runDaemon(host.context(), opts));
    });
}

async function runDaemon(ctx: CliContext, opts: { gracefulTimeout: string }): Promise<number> {
  const grace = Number(opts.gracefulTimeout);
  if (!Number.isFinite(grace) || grace < 0) throw new CliError(`--graceful-timeout '${opts.gracefulTimeout}': use a number of seconds >= 0`);
  // Loaded here: the daemon's modules are not needed by any other command.
  const { Supervisor, DaemonRefused } = await import('../../daemon/supervisor.ts');
  // BARKEEP_MAINTENANCE_EVERY_MS: tests shorten the minute between maintenance passes.
  const every = Number(process.env.BARKEEP_MAINTENANCE_EVERY_MS);
  const supervisor = new Supervisor({ configFile: ctx.opts.config ?? null, logger: ctx.logger, ...(every > 0 ? { maintenanceEveryMs: every } : {}) });
  try {
    await supervisor.start();
  } catch (err) {
    if (err instanceof DaemonRefused) {
      ctx.error(err.message);
      return 1;
    }
    ctx.error(`barkeep daemon could not start: ${(err as Error).message}`);
    return 1;
  }
  const http = supervisor.httpAddress;
  const servers = supervisor.state().map((s) => `${s.server}${s.schedule.cron ? ` (backups: ${s.schedule.cron})` : ''}`);
  ctx.print(`barkeep daemon running (PID ${process.pid}): ${servers.join(', ') || 'no active server'}${http ? `; http://${http.host.includes(':') ? `[${http.host}]` : http.host}:${http.port}/metrics` : ''}`);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      ctx.logger.info({ signal }, 'daemon stopping');
      // Whatever happens, the process is gone within the deadline: nothing it
      // reported as safe depends on it staying (every WAL write is fsynced).
      const deadline = setTimeout(() => {
        ctx.logger.error('daemon did not stop within 10 s: exiting');
        process.exit(1);
      }, STOP_DEADLINE_MS);
      deadline.unref();
      supervisor.stop(Math.min(grace, 8) * 1000).then(
        () => {
          ctx.print('barkeep daemon stopped');
          resolve(0);
        },
        (err: Error) => {
          ctx.error(`stopping: ${err.message}`);
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      if (stopping) return;
      supervisor.reload().then(
        (r) => ctx.logger.info({ reload: r }, 'SIGHUP handled'),
        (err: Error) => ctx.logger.error({ err }, 'reload failed; the running configuration stays'),
      );
    });
  });
}
