import { Command, CommanderError, Option } from 'commander';
import { register as registerBackupCatalog } from './commands/catalog.ts';
import { register as registerRecover } from './commands/recover.ts';
import { register as registerCron } from './commands/cron.ts';
import { register as registerDaemon } from './commands/daemon.ts';
import { register as registerBackup } from './commands/backup.ts';
import { runCheck } from './commands/check.ts';
import { register as registerReceiveWal } from './commands/receive-wal.ts';
import { register as registerReplicationStatus } from './commands/replication-status.ts';
import { runDiagnose } from './commands/diagnose.ts';
import { runListServer, runShowServer } from './commands/servers.ts';
import { runStatus } from './commands/status.ts';
import { register as registerSwitchWal } from './commands/switch-wal.ts';
import { register as registerVerifyBackup } from './commands/verify-backup.ts';
import { register as registerWalArchive } from './commands/wal-archive.ts';
import { CliContext, CliError, type GlobalOptions } from './context.ts';
import type { CommandHost } from './command-host.ts';
import { VERSION } from './version.ts';

// Command groups in their own modules register themselves here.
const GROUPS: ((host: CommandHost) => void)[] = [registerBackup, registerRecover, registerCron, registerDaemon, registerReceiveWal, registerSwitchWal, registerReplicationStatus, registerWalArchive, registerVerifyBackup, registerBackupCatalog];

// The command line: Barman's global options and command names (with its
// aliases), parsed by commander.

export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const program = new Command('barkeep')
    .description('PostgreSQL backup and recovery server, compatible with Barman')
    .addOption(new Option('-c, --config <file>', 'configuration file (default: ~/.barkeep.conf, /etc/barkeep.conf, ~/.barman.conf, /etc/barman.conf, /etc/barman/barman.conf)'))
    .addOption(new Option('-f, --format <format>', 'output format').choices(['console', 'json']).default('console'))
    .option('-q, --quiet', 'be quiet: print only errors', false)
    .option('-d, --debug', 'debug output: log at DEBUG level, also to stderr', false)
    .addOption(new Option('--log-level <level>', 'override log_level').choices(['NOTSET', 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL']))
    .addOption(new Option('--color <when>', 'accepted for Barman compatibility; barkeep does not colour output').choices(['never', 'always', 'auto']).hideHelp())
    .version(`${VERSION} barkeep`, '-v, --version', 'print the version')
    .showHelpAfterError()
    .exitOverride();

  const ctx = (): CliContext => {
    const o = program.opts<{ config?: string; format: 'console' | 'json'; quiet: boolean; debug: boolean; logLevel?: string }>();
    const opts: GlobalOptions = { config: o.config, format: o.format, quiet: o.quiet, debug: o.debug, logLevel: o.logLevel };
    return new CliContext(opts);
  };
  const run = (fn: () => Promise<number> | number) => async () => {
    exitCode = await fn();
  };

  program
    .command('list-server')
    .alias('list-servers')
    .description('list the configured servers')
    .option('--minimal', 'machine readable output: server names only')
    .action(async (opts: { minimal?: boolean }) => {
      await run(() => runListServer(ctx(), opts))();
    });

  program
    .command('show-server')
    .alias('show-servers')
    .description('show the configuration and live details of servers')
    .argument('<server...>', "server names, or 'all'")
    .action(async (names: string[]) => {
      await run(() => runShowServer(ctx(), names))();
    });

  program
    .command('check')
    .description('check the configuration, the PostgreSQL connections and the catalog of servers')
    .argument('<server...>', "server names, or 'all'")
    .option('--nagios', 'Nagios plugin output (exit code 2 on failure)')
    .option('--check-timeout <seconds>', 'override check_timeout for this run')
    .action(async (names: string[], opts: { nagios?: boolean; checkTimeout?: string }) => {
      await run(() => runCheck(ctx(), names, opts))();
    });

  program
    .command('status')
    .description('show the status of servers')
    .argument('<server...>', "server names, or 'all'")
    .action(async (names: string[]) => {
      await run(() => runStatus(ctx(), names))();
    });

  program
    .command('diagnose')
    .description('print one JSON document describing the configuration (secrets masked), versions and servers, for support')
    .action(async () => {
      await run(() => runDiagnose(ctx()))();
    });

  const host: CommandHost = { program, context: ctx, setExitCode: (code) => void (exitCode = code) };
  for (const register of GROUPS) register(host);

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version exit with code 0; usage errors were already printed.
      return e.exitCode;
    }
    if (e instanceof CliError) {
      process.stderr.write(`ERROR: ${e.message}\n`);
      return e.exitCode;
    }
    process.stderr.write(`ERROR: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
  return exitCode;
}
