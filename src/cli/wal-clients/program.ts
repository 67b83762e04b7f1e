import { Command, CommanderError, Option } from 'commander';
import { VERSION } from '../version.ts';
import { targetProblem, type SshTarget } from './ssh.ts';

// What barkeep-wal-archive and barkeep-wal-restore share: the options of
// Barman's tools for reaching the backup server, argparse's conventions
// (usage errors exit 2, which is also what PostgreSQL logs for a broken
// archive_command or restore_command), and "ERROR: ..." on failure.

export const DEFAULT_USER = 'barman';
export const DEFAULT_REMOTE_COMMAND = 'barkeep';
export const USAGE_ERROR = 2;

/** A failure with the exit status it maps to and an optional pause first (restore's --sleep). */
export class ClientExit extends Error {
  readonly status: number;
  readonly sleepSeconds: number;

  constructor(message: string, status: number, sleepSeconds = 0) {
    super(message);
    this.status = status;
    this.sleepSeconds = sleepSeconds;
  }
}

export interface ConnectionOptions {
  user: string;
  port?: string;
  config?: string;
  test?: boolean;
  remoteCommand: string;
}

export function clientProgram(name: string, description: string): Command {
  return new Command(name)
    .description(description)
    .version(`${name} ${VERSION}`, '-V, --version', "show the program's version number and exit")
    .addOption(new Option('-U, --user <user>', `the user used for the ssh connection to the backup server`).default(DEFAULT_USER))
    .option('--port <port>', 'the port used for the ssh connection to the backup server')
    .option('-c, --config <config>', 'configuration file on the backup server')
    .addOption(
      new Option('--remote-command <command>', `the program run on the backup server: '${DEFAULT_REMOTE_COMMAND}', or 'barman' to talk to Barman`).default(
        DEFAULT_REMOTE_COMMAND,
      ),
    )
    .allowExcessArguments(false)
    .showHelpAfterError('(add --help for additional information)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s), writeOut: (s) => process.stdout.write(s) });
}

/** Parses argv; returns an exit status instead when the run ends here (help, version, usage error). */
export function parseClientArgs(program: Command, argv: string[]): number | null {
  try {
    program.parse(argv, { from: 'user' });
    return null;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : USAGE_ERROR;
    throw e;
  }
}

export function sshTarget(host: string, o: ConnectionOptions): SshTarget {
  const target: SshTarget = { user: o.user, host, remoteCommand: o.remoteCommand };
  if (o.port !== undefined) target.port = o.port;
  if (o.config !== undefined) target.config = o.config;
  const problem = targetProblem(target);
  if (problem) throw new ClientExit(problem, USAGE_ERROR);
  if (o.remoteCommand.trim() === '') throw new ClientExit('--remote-command is empty', USAGE_ERROR);
  return target;
}

/** Runs a client's body and turns its outcome into the process exit status. */
export async function runClient(body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (e) {
    const exit = e instanceof ClientExit ? e : new ClientExit((e as Error)?.message ?? String(e), 2);
    process.stderr.write(`ERROR: ${exit.message}\n`);
    if (exit.sleepSeconds > 0) {
      process.stderr.write(`Sleeping for ${exit.sleepSeconds} seconds.\n`);
      await new Promise((r) => setTimeout(r, exit.sleepSeconds * 1000));
    }
    return exit.status;
  }
}
