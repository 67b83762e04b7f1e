import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';

// The ssh side of barkeep-wal-archive and barkeep-wal-restore. Like Barman's
// tools they run the system `ssh` (so the calling user's ~/.ssh/config, keys
// and known_hosts apply) with -q -T, and hand it one remote command line,
// which the remote login shell splits: every value we put in it is quoted.

export interface SshTarget {
  user: string;
  host: string;
  port?: string;
  /** The remote program, e.g. `barkeep`, `barman`, or `sudo -u barman barman`: used as written. */
  remoteCommand: string;
  /** Configuration file on the backup server (-c/--config). */
  config?: string;
}

/** ssh exits 255 when the connection itself failed, never for the remote command's own status. */
export const SSH_FAILURE = 255;

/** POSIX shell single-quoting. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Problems with a target that would change the meaning of the ssh command line; null when fine. */
export function targetProblem(t: Pick<SshTarget, 'user' | 'host' | 'port'>): string | null {
  // A leading '-' would make ssh read the destination as an option.
  if (!/^[^\s@-][^\s@]*$/.test(t.user)) return `invalid user name '${t.user}'`;
  if (!/^[^\s@-]\S*$/.test(t.host)) return `invalid host '${t.host}'`;
  if (t.port !== undefined) {
    const n = Number(t.port);
    if (!/^\d+$/.test(t.port) || n < 1 || n > 65535) return `invalid port '${t.port}': use a number from 1 to 65535`;
  }
  return null;
}

/** `ssh [-p PORT] -q -T USER@HOST <remote> [--config='CONFIG'] <words...>`. */
export function sshArgs(t: SshTarget, words: readonly string[]): string[] {
  const remote = [t.remoteCommand];
  if (t.config) remote.push(`--config=${shellQuote(t.config)}`);
  remote.push(...words);
  return [...(t.port !== undefined ? ['-p', t.port] : []), '-q', '-T', `${t.user}@${t.host}`, remote.join(' ')];
}

export function spawnSsh(t: SshTarget, words: readonly string[], stdio: StdioOptions): ChildProcess {
  return spawn('ssh', sshArgs(t, words), { stdio });
}

export interface SshOutcome {
  /** Exit status; a signal death counts as an ssh failure. */
  code: number;
  /** Set when ssh could not be started at all. */
  spawnError: Error | null;
}

export function waitForExit(child: ChildProcess): Promise<SshOutcome> {
  return new Promise((resolve) => {
    let spawnError: Error | null = null;
    child.once('error', (e) => {
      spawnError = e;
    });
    child.once('close', (code) => resolve({ code: spawnError ? SSH_FAILURE : (code ?? SSH_FAILURE), spawnError }));
  });
}

/**
 * Runs a remote command with no input and returns everything it printed
 * (stdout and stderr in arrival order, as Barman's tools merge them for --test).
 */
export async function sshCapture(t: SshTarget, words: readonly string[], opts: { mergeStderr: boolean }): Promise<SshOutcome & { output: string }> {
  const child = spawnSsh(t, words, ['ignore', 'pipe', opts.mergeStderr ? 'pipe' : 'inherit']);
  const chunks: Buffer[] = [];
  child.stdout?.on('data', (d: Buffer) => chunks.push(d));
  child.stderr?.on('data', (d: Buffer) => chunks.push(d));
  const outcome = await waitForExit(child);
  return { ...outcome, output: Buffer.concat(chunks).toString('utf8') };
}
