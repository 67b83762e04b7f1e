// Shared setup of the WAL client tests: the clients run as the postgres OS
// user (as archive_command/restore_command do) through a private sshd to a
// backup-server side running as root, whose remote command is the real
// `barkeep` when it has put-wal/get-wal, else the stub, or the real Barman.
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BARKEEP_BIN, type CliResult } from '../support/cli.ts';
import { REPO_ROOT } from '../support/run-root.ts';
import type { SshClientSetup } from '../support/sshd.ts';
import { makeTempDir } from '../support/tmp.ts';

export const CLIENT_USER = 'postgres';
export const STUB = fileURLToPath(new URL('./stub-remote.ts', import.meta.url));
export const ARCHIVE_BIN = join(REPO_ROOT, 'dist/cli/wal-archive-bin.js');
export const RESTORE_BIN = join(REPO_ROOT, 'dist/cli/wal-restore-bin.js');
/** Debian's python3-barman (pulled in by barman-cli) runs Barman itself without its package's setup. */
export const BARMAN_PYTHON = '/usr/bin/python3';

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Whether the built barkeep has a command (put-wal and get-wal arrive in their own change). */
export function barkeepHas(command: string): boolean {
  try {
    const help = execFileSync(process.execPath, [BARKEEP_BIN, '--help'], { encoding: 'utf8' });
    return new RegExp(`^\\s+${command}\\b`, 'm').test(help);
  } catch {
    return false;
  }
}

export const REMOTE_BARKEEP = `${q(process.execPath)} ${q(BARKEEP_BIN)}`;
export const REMOTE_STUB = `${q(process.execPath)} ${q(STUB)}`;

/** Barman's own CLI, from python3-barman (a dependency of Debian's barman-cli). */
export function barmanAvailable(): boolean {
  try {
    execFileSync(BARMAN_PYTHON, ['-c', 'import barman.cli'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export const REMOTE_BARMAN = `${BARMAN_PYTHON} -c 'import sys; sys.argv[0] = "barman"; from barman.cli import main; main()'`;

/** A backup-server configuration with one server `pg` whose WALs arrive through put-wal. */
export function writeServerConfig(dir: string, opts: { barmanUser?: string } = {}): { conf: string; home: string } {
  const home = join(dir, 'home');
  mkdirSync(home, { recursive: true });
  const conf = join(dir, 'barman.conf');
  writeFileSync(
    conf,
    [
      '[barman]',
      `barman_home = ${home}`,
      `log_file = ${join(dir, 'server.log')}`,
      ...(opts.barmanUser ? [`barman_user = ${opts.barmanUser}`] : []),
      '',
      '[pg]',
      'description = "WAL client tests"',
      'conninfo = host=127.0.0.1 port=1 user=barman dbname=postgres',
      'backup_method = postgres',
      'archiver = on',
      '',
    ].join('\n'),
  );
  return { conf, home };
}

export interface ToolRun {
  asUser?: string;
  ssh: SshClientSetup;
  timeoutMs?: number;
}

/**
 * Runs one of our client binaries as `asUser` with the test ssh wrapper first
 * on PATH. Node and the modules are loaded as root (the checkout may be
 * private), then the process drops to the user before doing anything.
 */
export function runOurs(bin: string, args: string[], run: ToolRun): Promise<CliResult> {
  const user = run.asUser ?? CLIENT_USER;
  const clientModule = bin === ARCHIVE_BIN ? 'wal-archive-client.js' : 'wal-restore-client.js';
  const script = `
    const { execFileSync } = await import('node:child_process');
    const uid = Number(execFileSync('id', ['-u', ${JSON.stringify(user)}]));
    const gid = Number(execFileSync('id', ['-g', ${JSON.stringify(user)}]));
    const { main } = await import(${JSON.stringify(join(REPO_ROOT, 'dist/cli', clientModule))});
    process.setgroups([gid]);
    process.setgid(gid);
    process.setuid(uid);
    process.exitCode = await main(${JSON.stringify(args)});
  `;
  return exec(process.execPath, ['--input-type=module', '-e', script], run);
}

/** Runs Debian's barman-wal-archive / barman-wal-restore as `asUser`, for comparison. */
export function runTheirs(tool: 'barman-wal-archive' | 'barman-wal-restore', args: string[], run: ToolRun): Promise<CliResult> {
  return exec('runuser', ['-u', run.asUser ?? CLIENT_USER, '--', `/usr/bin/${tool}`, ...args], run);
}

function exec(file: string, args: string[], run: ToolRun): Promise<CliResult> {
  const env = { ...process.env, PATH: `${run.ssh.binDir}:${process.env['PATH'] ?? '/usr/bin:/bin'}` };
  return new Promise((resolve) => {
    execFile(file, args, { env, cwd: '/tmp', timeout: run.timeoutMs ?? 60_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A scratch directory the client user can write (WAL_DEST, spool). */
export function clientDir(prefix: string): string {
  return makeTempDir(prefix, { owner: 'postgres' });
}

export function hashDir(home: string, wal: string): string {
  return join(home, 'pg', 'wals', wal.slice(0, 16));
}


/** An executable `name` in `dir` that runs `command` (a shell command line) with its arguments. */
export function writeShim(dir: string, name: string, command: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\nexec ${command} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

/**
 * The command the remote `barkeep` runs: the real one once the build has the
 * command, else the stub. BARKEEP_TEST_WAL_REMOTE=stub|barkeep forces one.
 */
export function remoteFor(command: 'put-wal' | 'get-wal'): { command: string; real: boolean } {
  const forced = process.env['BARKEEP_TEST_WAL_REMOTE'];
  const real = forced === 'barkeep' || (forced !== 'stub' && barkeepHas(command));
  return real ? { command: REMOTE_BARKEEP, real: true } : { command: REMOTE_STUB, real: false };
}
