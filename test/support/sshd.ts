// A private OpenSSH server on loopback for tests that cross an ssh hop (WAL
// clients, SSH recovery): its own host key, a free port, authorized keys in
// its own directory, only the given users. Nothing of the machine's own sshd
// setup is used or changed; stop() ends only the sshd started here.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { freePort } from './free-port.ts';
import { installExitCleanup, IS_ROOT } from './run-root.ts';
import { makeTempDir } from './tmp.ts';

export const SSHD_BIN = '/usr/sbin/sshd';
const SSH_KEYGEN = 'ssh-keygen';
const HOST = '127.0.0.1';

export interface StartSshdOptions {
  /** OS users allowed to log in (AllowUsers). */
  users: string[];
  /** Prefix of the scratch directory's name. */
  name?: string;
  /** Environment of every session (sshd's SetEnv), e.g. a PATH that finds test programs. */
  env?: Record<string, string>;
}

export interface ClientKey {
  /** Private key file, mode 0600, owned by the OS user that will use it. */
  privateKey: string;
  publicKey: string;
  /** The public key line (`ssh-ed25519 AAAA... comment`). */
  publicKeyLine: string;
}

export interface SshClientSetup {
  key: ClientKey;
  /** ssh_config with the key, the known_hosts file, strict host checking and batch mode. */
  configFile: string;
  knownHostsFile: string;
  /** A directory holding an `ssh` wrapper that uses configFile: put it first on PATH for programs that run plain `ssh`. */
  binDir: string;
  /** `ssh` arguments up to and including the destination, e.g. for spawn('ssh', [...args, 'true']). */
  args(user: string): string[];
}

export interface Sshd {
  readonly host: typeof HOST;
  readonly port: number;
  readonly dir: string;
  readonly pid: number;
  /** The `[127.0.0.1]:PORT ssh-ed25519 ...` line clients must trust. */
  readonly knownHostsLine: string;
  /** Lets `publicKeyLine` log in as `user`. */
  authorize(user: string, publicKeyLine: string): void;
  /** A fresh key pair owned by `owner` (default: the test runner's user). */
  clientKey(owner?: string): ClientKey;
  /** A key authorized for `loginUser`, plus config, known_hosts and wrapper, all usable by OS user `clientUser`. */
  clientSetup(loginUser: string, clientUser?: string): SshClientSetup;
  logTail(lines?: number): string;
  stop(): Promise<void>;
}

export function sshdAvailable(): boolean {
  return IS_ROOT && existsSync(SSHD_BIN);
}

let keySeq = 0;

function ids(user: string): { uid: number; gid: number } {
  return {
    uid: Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim()),
  };
}

function giveTo(path: string, owner: string | undefined): void {
  if (!owner || !IS_ROOT) return;
  const { uid, gid } = ids(owner);
  chownSync(path, uid, gid);
}

function keygen(file: string, comment: string): void {
  execFileSync(SSH_KEYGEN, ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], { stdio: 'ignore' });
}

/** True once something on host:port speaks SSH (the banner arrived). */
function hasBanner(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: HOST, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('data', (d) => done(d.toString('latin1').startsWith('SSH-')));
    socket.once('error', () => done(false));
  });
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export async function startSshd(opts: StartSshdOptions): Promise<Sshd> {
  if (!IS_ROOT) throw new Error('startSshd needs root (sshd must switch to the login user)');
  if (!existsSync(SSHD_BIN)) throw new Error(`${SSHD_BIN} is missing: apt-get install openssh-server (.ci/run installs it)`);
  if (opts.users.length === 0) throw new Error('startSshd: give at least one user');
  // sshd's privilege separation directory; Debian creates it only when its own service starts.
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });

  const dir = makeTempDir(opts.name ?? 'sshd');
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  keygen(hostKey, 'barkeep-test-host');
  const authDir = join(dir, 'authorized_keys');
  mkdirSync(authDir, { mode: 0o755 });
  const logFile = join(dir, 'sshd.log');
  const configFile = join(dir, 'sshd_config');

  let child: ChildProcess | undefined;
  let port = 0;
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    writeFileSync(
      configFile,
      [
        `ListenAddress ${HOST}`,
        `Port ${port}`,
        `HostKey ${hostKey}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${authDir}/%u`,
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        // Debian locks service accounts such as postgres ('!' password): PAM
        // account checks accept them for key logins, sshd's own would not.
        'UsePAM yes',
        // Keys live under /tmp, a world-writable tree.
        'StrictModes no',
        `AllowUsers ${opts.users.join(' ')}`,
        'PermitRootLogin prohibit-password',
        'X11Forwarding no',
        'PrintMotd no',
        'LogLevel VERBOSE',
        // sshd takes only the first SetEnv line, so every variable goes on one.
        // SHLVL=1: bash sources the login user's ~/.bashrc for an ssh command
        // only at shell level 1, and the machine's own rc files (root's runs
        // `pyenv init`, which races with itself across parallel sessions and
        // writes to stderr) must not leak into what the tests compare.
        `SetEnv ${Object.entries({ SHLVL: '1', ...opts.env })
          .map(([k, v]) => `${k}="${v.replace(/(["\\])/g, '\\$1')}"`)
          .join(' ')}`,
        '',
      ].join('\n'),
    );
    const proc = spawn(SSHD_BIN, ['-D', '-f', configFile, '-E', logFile], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    proc.once('error', () => {});
    let up = false;
    for (let i = 0; i < 100 && !up; i++) {
      const early = await Promise.race([exited, new Promise<'running'>((r) => setTimeout(() => r('running'), 50))]);
      if (early !== 'running') break;
      up = await hasBanner(port);
    }
    if (up) {
      child = proc;
      break;
    }
    proc.kill('SIGKILL');
    const log = tail(logFile, 20);
    if (!/Address already in use|Cannot bind/.test(log) || attempt >= 5) {
      throw new Error(`sshd did not start on ${HOST}:${port}:\n${log}`);
    }
  }
  const proc = child;
  const uninstall = installExitCleanup(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  }, false);

  const hostPub = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  const knownHostsLine = `[${HOST}]:${port} ${hostPub}`;

  const sshd: Sshd = {
    host: HOST,
    port,
    dir,
    pid: proc.pid!,
    knownHostsLine,
    authorize(user, publicKeyLine) {
      appendFileSync(join(authDir, user), `${publicKeyLine.trim()}\n`, { mode: 0o644 });
    },
    clientKey(owner) {
      const keyDir = makeTempDir('ssh-key');
      giveTo(keyDir, owner);
      const privateKey = join(keyDir, `id_ed25519_${++keySeq}`);
      keygen(privateKey, `barkeep-test-${keySeq}`);
      chmodSync(privateKey, 0o600);
      giveTo(privateKey, owner);
      giveTo(`${privateKey}.pub`, owner);
      return { privateKey, publicKey: `${privateKey}.pub`, publicKeyLine: readFileSync(`${privateKey}.pub`, 'utf8').trim() };
    },
    clientSetup(loginUser, clientUser) {
      const key = sshd.clientKey(clientUser);
      sshd.authorize(loginUser, key.publicKeyLine);
      const setupDir = makeTempDir('ssh-client');
      const knownHostsFile = join(setupDir, 'known_hosts');
      writeFileSync(knownHostsFile, `${knownHostsLine}\n`, { mode: 0o644 });
      const configFile = join(setupDir, 'ssh_config');
      writeFileSync(
        configFile,
        [
          'Host *',
          `  IdentityFile ${key.privateKey}`,
          '  IdentitiesOnly yes',
          `  UserKnownHostsFile ${knownHostsFile}`,
          '  GlobalKnownHostsFile /dev/null',
          '  StrictHostKeyChecking yes',
          '  BatchMode yes',
          '  LogLevel ERROR',
          '',
        ].join('\n'),
        { mode: 0o644 },
      );
      const binDir = join(setupDir, 'bin');
      mkdirSync(binDir, { mode: 0o755 });
      const sshPath = execFileSync('sh', ['-c', 'command -v ssh'], { encoding: 'utf8' }).trim() || '/usr/bin/ssh';
      writeFileSync(join(binDir, 'ssh'), `#!/bin/sh\nexec ${sshPath} -F ${configFile} "$@"\n`, { mode: 0o755 });
      return {
        key,
        configFile,
        knownHostsFile,
        binDir,
        args: (user) => ['-F', configFile, '-p', String(port), `${user}@${HOST}`],
      };
    },
    logTail(lines = 40) {
      return tail(logFile, lines);
    },
    async stop() {
      uninstall();
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    },
  };
  return sshd;
}
