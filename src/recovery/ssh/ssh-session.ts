// One SSH connection (ssh2) to the host a remote recovery restores onto: commands
// with their output, and channels whose stdin streams an archive into a remote
// `tar -x`. Several channels may be open at once (OpenSSH's sshd allows 10 by
// default, MaxSessions). Keys only, never passwords; private key material stays in
// ssh2's parsed key objects and never reaches a message.
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import ssh2, { type AnyAuthMethod, type AuthenticationType, type ClientChannel, type ConnectConfig, type ParsedKey, type ServerHostKeyAlgorithm } from 'ssh2';
import { checkHostKey, keyTypeOfBlob, knownKeyTypes, sha256Fingerprint } from './known-hosts.ts';
import type { SshTarget } from './ssh-command.ts';

const { Client, utils } = ssh2;
type Client = InstanceType<typeof Client>;

import { SshError } from './ssh-error.ts';

export { SshError };

export interface RemoteResult {
  code: number | null;
  signal: string | null;
  stdout: Buffer;
  stderr: string;
}

export interface RemoteWritable {
  stdin: Writable;
  /** Settles once the remote command has ended; stdout and stderr are kept up to 64 KiB each. */
  done: Promise<RemoteResult>;
}

export interface SshHostKeyInfo {
  type: string;
  fingerprint: string;
  /** 'new': unknown host accepted (accept-new, no); 'unchecked': a changed key accepted under StrictHostKeyChecking=no. */
  how: 'known' | 'unchecked' | 'new';
}

export interface SshSession {
  readonly target: SshTarget;
  /** The server's host key and how it was trusted (for a warning when it was not known). */
  readonly hostKey?: SshHostKeyInfo;
  run(command: string, opts?: { input?: Buffer | string; timeoutMs?: number }): Promise<RemoteResult>;
  openWritable(command: string): Promise<RemoteWritable>;
  close(): Promise<void>;
}

export interface OpenSshSessionOptions {
  /** Connect, key exchange and login; default ConnectTimeout, else 30 s. */
  readyTimeoutMs?: number;
  /** Default 15 s; three unanswered keepalives end the connection. */
  keepaliveIntervalMs?: number;
  /** ssh-agent's socket when target.useAgent; default SSH_AUTH_SOCK. */
  agentSocket?: string;
}

interface ExitRecord {
  code: number | null;
  signal: string | null;
}
const channelExits = new WeakMap<ClientChannel, ExitRecord>();

const DEFAULT_READY_TIMEOUT_MS = 30_000;
const DEFAULT_KEEPALIVE_MS = 15_000;
const KEEPALIVE_COUNT_MAX = 3;
const CAPTURE_LIMIT = 64 * 1024;
// ssh2's own order; the algorithms of keys known_hosts holds for the host go first.
const HOST_KEY_ALGORITHMS: ServerHostKeyAlgorithm[] = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];

function hostPort(target: SshTarget): string {
  return `${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}`;
}

function who(target: SshTarget): string {
  return `${target.username}@${hostPort(target)}`;
}

function shortCommand(command: string): string {
  const one = command.replace(/\s+/g, ' ').trim();
  return one.length > 120 ? `${one.slice(0, 117)}...` : one;
}

/** Keeps the first `limit` bytes of a stream and counts the rest. */
class Capture {
  readonly #limit: number;
  readonly #chunks: Buffer[] = [];
  #kept = 0;
  #dropped = 0;
  constructor(limit: number) {
    this.#limit = limit;
  }
  add(chunk: Buffer): void {
    const room = this.#limit - this.#kept;
    if (room <= 0) {
      this.#dropped += chunk.length;
      return;
    }
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.#chunks.push(part);
    this.#kept += part.length;
    this.#dropped += chunk.length - part.length;
  }
  buffer(): Buffer {
    return Buffer.concat(this.#chunks);
  }
  text(): string {
    const s = this.buffer().toString('utf8');
    return this.#dropped > 0 ? `${s}\n... (${this.#dropped} more bytes)` : s;
  }
}

interface Identity {
  file: string;
  key: ParsedKey;
}

function loadIdentities(files: readonly string[]): { usable: Identity[]; skipped: string[] } {
  const usable: Identity[] = [];
  const skipped: string[] = [];
  for (const file of files) {
    let data: Buffer;
    try {
      data = readFileSync(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      skipped.push(`${file} (${code === 'ENOENT' ? 'missing' : `cannot read it: ${code ?? (err as Error).message}`})`);
      continue;
    }
    const parsed = utils.parseKey(data) as ParsedKey | ParsedKey[] | Error;
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    // ssh2's parse errors are fixed texts, never key material; only the passphrase case gets its own advice.
    if (key === undefined || key instanceof Error) {
      const encrypted = (key instanceof Error && /passphrase/i.test(key.message)) || /^Proc-Type: 4,ENCRYPTED|BEGIN ENCRYPTED PRIVATE KEY/m.test(data.toString('latin1', 0, 4096));
      skipped.push(encrypted ? `${file} is protected by a passphrase: use ssh-agent (SSH_AUTH_SOCK)` : `${file} (not a private key barkeep can read${key instanceof Error ? `: ${key.message}` : ''})`);
      continue;
    }
    if (!key.isPrivateKey()) {
      skipped.push(`${file} (a public key, not a private key)`);
      continue;
    }
    usable.push({ file, key });
  }
  return { usable, skipped };
}

export async function openSshSession(target: SshTarget, opts: OpenSshSessionOptions = {}): Promise<SshSession> {
  const { usable, skipped } = loadIdentities(target.identityFiles);
  const agentSock = target.useAgent ? (opts.agentSocket ?? process.env.SSH_AUTH_SOCK ?? '') : '';
  if (usable.length === 0 && agentSock === '') {
    const why =
      skipped.length > 0
        ? skipped.join('; ')
        : 'no identity file (give one with -i; the defaults ~/.ssh/id_ed25519, id_ecdsa, id_rsa do not exist) and no ssh-agent (SSH_AUTH_SOCK)';
    throw new SshError(`Cannot log in to ${who(target)}: ${why}`);
  }

  const methods: { label: string; method: AnyAuthMethod }[] = usable.map((id) => ({
    label: id.file,
    method: { type: 'publickey', username: target.username, key: id.key },
  }));
  if (agentSock !== '') methods.push({ label: `the keys of ssh-agent (${agentSock})`, method: { type: 'agent', username: target.username, agent: agentSock } });

  const readyTimeoutMs = opts.readyTimeoutMs ?? (target.connectTimeoutSeconds !== null ? target.connectTimeoutSeconds * 1000 : DEFAULT_READY_TIMEOUT_MS);
  const preferred = knownKeyTypes(target)
    .flatMap((t): string[] => (t === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [t]))
    .filter((a): a is ServerHostKeyAlgorithm => (HOST_KEY_ALGORITHMS as string[]).includes(a));

  return new Promise<SshSession>((resolve, reject) => {
    const client = new Client();
    let settled = false;
    let hostRefusal: string | null = null;
    let hostKey: SshHostKeyInfo | undefined;
    let authGaveUp: string | null = null;
    const tried: string[] = [];
    const authNotes: string[] = [];
    let lastError: Error | null = null;

    const authSummary = () => {
      const parts = [tried.length > 0 ? `tried ${tried.join(', ')}` : 'no key was tried', ...skipped.map((s) => `skipped ${s}`), ...authNotes];
      return parts.join('; ');
    };
    const fail = (message: string) => {
      if (settled) return;
      settled = true;
      client.destroy();
      reject(new SshError(message));
    };

    client.on('error', (err: Error & { level?: string }) => {
      lastError = err;
      if (settled) return;
      switch (err.level) {
        case 'agent':
          // A dead agent socket must not end the login: the next method is tried.
          authNotes.push(`ssh-agent (${agentSock}) failed: ${err.message}`);
          return;
        case 'client-authentication':
          if (authGaveUp !== null) fail(`Authentication failed for ${who(target)}: ${authGaveUp}`);
          else authNotes.push(err.message);
          return;
        case 'handshake':
          if (hostRefusal !== null) return fail(`Host key verification failed for ${hostPort(target)}: ${hostRefusal}`);
          return fail(`SSH connection to ${who(target)} failed during key exchange: ${err.message}`);
        case 'client-socket':
          return fail(`Unable to connect to ${who(target)}: ${err.message}`);
        case 'client-timeout':
          return fail(`Unable to connect to ${who(target)}: no login within ${readyTimeoutMs / 1000} s (${err.message})`);
        default:
          return fail(`SSH connection to ${who(target)} failed: ${err.message}${tried.length > 0 ? ` (${authSummary()})` : ''}`);
      }
    });
    client.once('ready', () => {
      if (settled) return;
      settled = true;
      resolve(new Session(client, target, hostKey));
    });
    client.on('close', () => {
      if (authGaveUp !== null) fail(`Authentication failed for ${who(target)}: ${authGaveUp}`);
      fail(`Unable to connect to ${who(target)}: the connection was closed before login${lastError ? ` (${lastError.message})` : ''}`);
    });

    const config: ConnectConfig = {
      host: target.host,
      port: target.port,
      username: target.username,
      readyTimeout: readyTimeoutMs,
      keepaliveInterval: opts.keepaliveIntervalMs ?? DEFAULT_KEEPALIVE_MS,
      keepaliveCountMax: KEEPALIVE_COUNT_MAX,
      hostVerifier: (key: Buffer): boolean => {
        const type = keyTypeOfBlob(key) ?? 'unknown';
        const check = checkHostKey(target, type, key);
        if (!check.ok) {
          hostRefusal = check.reason;
          return false;
        }
        hostKey = { type, fingerprint: sha256Fingerprint(key), how: check.how };
        return true;
      },
      // ssh2 takes one privateKey per connect; a handler offers each key, then the agent.
      authHandler: (methodsLeft: AuthenticationType[] | null) => {
        if (methodsLeft && !methodsLeft.includes('publickey')) {
          authGaveUp = `the server does not accept public keys (it offers: ${methodsLeft.join(', ') || 'nothing'}); barkeep logs in with keys only`;
          return false;
        }
        const next = methods.shift();
        if (!next) {
          authGaveUp = `the server accepted none of the keys (${authSummary()})`;
          return false;
        }
        tried.push(next.label);
        return next.method;
      },
    };
    if (preferred.length > 0) config.algorithms = { serverHostKey: [...preferred, ...HOST_KEY_ALGORITHMS.filter((a) => !preferred.includes(a))] };
    try {
      client.connect(config);
    } catch (err) {
      fail(`Unable to connect to ${who(target)}: ${(err as Error).message}`);
    }
  });
}

interface Operation {
  command: string;
  fail(err: SshError): void;
}

function describeExit(code: number | null, signal: string | null): string {
  if (code !== null) return `exit status ${code}`;
  if (signal !== null) return `killed by ${signal}`;
  return 'no exit status';
}

class Session implements SshSession {
  readonly target: SshTarget;
  readonly hostKey: SshHostKeyInfo | undefined;
  readonly #client: Client;
  readonly #ops = new Set<Operation>();
  readonly #closed: Promise<void>;
  #closing = false;
  #ended = false;
  #lastError: Error | null = null;

  constructor(client: Client, target: SshTarget, hostKey: SshHostKeyInfo | undefined) {
    this.#client = client;
    this.target = target;
    this.hostKey = hostKey;
    client.on('error', (err: Error) => {
      this.#lastError ??= err;
    });
    this.#closed = new Promise((resolve) => {
      client.once('close', () => {
        this.#ended = true;
        for (const op of [...this.#ops]) op.fail(this.#endError(op.command));
        this.#ops.clear();
        resolve();
      });
    });
  }

  #endError(command: string): SshError {
    if (this.#closing) return new SshError(`the SSH session to ${hostPort(this.target)} was closed while running '${shortCommand(command)}'`);
    const why = this.#lastError ? this.#lastError.message : 'closed by the server';
    return new SshError(`connection to ${hostPort(this.target)} lost while running '${shortCommand(command)}' (${why})`);
  }

  #unusable(command: string): SshError | null {
    if (this.#closing) return new SshError(`cannot run '${shortCommand(command)}': the SSH session to ${hostPort(this.target)} is closed`);
    if (this.#ended) {
      const why = this.#lastError ? this.#lastError.message : 'closed by the server';
      return new SshError(`cannot run '${shortCommand(command)}': the connection to ${hostPort(this.target)} was lost (${why})`);
    }
    return null;
  }

  #exec(command: string): Promise<ClientChannel> {
    return new Promise((resolve, reject) => {
      const unusable = this.#unusable(command);
      if (unusable) return reject(unusable);
      const op: Operation = { command, fail: reject };
      this.#ops.add(op);
      try {
        this.#client.exec(command, (err, channel) => {
          this.#ops.delete(op);
          if (this.#ended) return reject(this.#endError(command));
          if (err) {
            const hint = /open failed/i.test(err.message) ? ' (too many commands at once? sshd allows MaxSessions, 10 by default, per connection)' : '';
            return reject(new SshError(`cannot start '${shortCommand(command)}' on ${hostPort(this.target)}: ${err.message}${hint}`));
          }
          // ssh2 parses every packet of a socket read in one go: a quick
          // command's exit-status can arrive with the exec reply, before the
          // caller's listeners exist. Record it here, from the first moment.
          const record: ExitRecord = { code: null, signal: null };
          channelExits.set(channel, record);
          channel.on('exit', (c: number | null, sig?: string) => {
            record.code = c ?? null;
            record.signal = sig ?? null;
          });
          resolve(channel);
        });
      } catch (err) {
        this.#ops.delete(op);
        reject(new SshError(`cannot start '${shortCommand(command)}' on ${hostPort(this.target)}: ${(err as Error).message}`));
      }
    });
  }

  async run(command: string, opts: { input?: Buffer | string; timeoutMs?: number } = {}): Promise<RemoteResult> {
    const channel = await this.#exec(command);
    return new Promise<RemoteResult>((resolve, reject) => {
      const stdout: Buffer[] = [];
      const stderr = new Capture(CAPTURE_LIMIT);
      let code: number | null = null;
      let signal: string | null = null;
      let timer: NodeJS.Timeout | undefined;
      let finished = false;
      const finish = (err: SshError | null) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        this.#ops.delete(op);
        if (err) reject(err);
        else resolve({ code, signal, stdout: Buffer.concat(stdout), stderr: stderr.text() });
      };
      const op: Operation = { command, fail: finish };
      this.#ops.add(op);
      channel.on('data', (d: Buffer) => stdout.push(d));
      channel.stderr.on('data', (d: Buffer) => stderr.add(d));
      // Writing input the command does not read fails once it has exited: its result tells.
      channel.on('error', () => {});
      channel.on('close', () => {
        ({ code, signal } = channelExits.get(channel) ?? { code, signal });
        finish(this.#ended ? this.#endError(command) : null);
      });
      if (opts.input !== undefined) channel.end(opts.input);
      else channel.end();
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          channel.signal('KILL');
          channel.close();
          finish(new SshError(`'${shortCommand(command)}' on ${hostPort(this.target)} did not finish within ${opts.timeoutMs! / 1000} s`));
        }, opts.timeoutMs);
      }
    });
  }

  async openWritable(command: string): Promise<RemoteWritable> {
    const channel = await this.#exec(command);
    const where = `'${shortCommand(command)}' on ${hostPort(this.target)}`;
    const stdout = new Capture(CAPTURE_LIMIT);
    const stderr = new Capture(CAPTURE_LIMIT);
    let code: number | null = null;
    let signal: string | null = null;
    let exited = false;
    let channelClosed = false;
    let inputEnded = false;
    let failure: Error | null = null;
    // The write callback still owed to the writer: ssh2 holds it while the remote
    // window is full, and never calls it if the channel dies first.
    let pending: ((err?: Error | null) => void) | null = null;
    const failInput = (err: Error) => {
      failure ??= err;
      if (pending) {
        const cb = pending;
        pending = null;
        cb(failure);
      }
    };

    let settle!: (err: SshError | null) => void;
    const done = new Promise<RemoteResult>((resolve, reject) => {
      settle = (err) => {
        this.#ops.delete(op);
        if (err) reject(err);
        else resolve({ code, signal, stdout: stdout.buffer(), stderr: stderr.text() });
      };
    });
    // A caller that awaits only the writer (or nothing yet) must not get an
    // unhandled rejection when the connection drops; awaiting `done` still throws.
    done.catch(() => {});
    let settled = false;
    const op: Operation = {
      command,
      fail: (err) => {
        failInput(err);
        if (!settled) {
          settled = true;
          settle(err);
        }
      },
    };
    this.#ops.add(op);

    channel.on('data', (d: Buffer) => stdout.add(d));
    channel.stderr.on('data', (d: Buffer) => stderr.add(d));
    const endedEarly = () => {
      const first = stderr.text().trim().split('\n')[0];
      return new SshError(`${where} ended (${describeExit(code, signal)}) before reading all its input${first ? `: ${first}` : ''}`);
    };
    // A command that exits without reading all its input leaves our write waiting
    // for window space that never comes: it fails once the channel closes, when the
    // command's stderr (the likely explanation) has arrived in full.
    channel.on('exit', (c: number | null, s?: string) => {
      code = c ?? null;
      signal = s ?? null;
      exited = true;
    });
    channel.on('error', (err: Error) => {
      if (!exited) failInput(new SshError(`${where}: ${err.message}`));
    });
    channel.on('close', () => {
      if (this.#ended || settled) return;
      channelClosed = true;
      const record = channelExits.get(channel);
      if (record && (record.code !== null || record.signal !== null)) ({ code, signal } = record);
      // Only a write still waiting means input went unread; a command may well
      // exit once it has read everything, before our end of input (tar does).
      if (pending) failInput(endedEarly());
      settled = true;
      settle(null);
    });

    const stdin = new Writable({
      write(chunk: Buffer, _encoding, cb) {
        if (failure) return cb(failure);
        if (channelClosed) {
          failure = endedEarly();
          return cb(failure);
        }
        pending = cb;
        if (exited) return;
        // One chunk at a time: ssh2 calls back once the remote window took it, which is the back-pressure.
        channel.write(chunk, (err?: Error | null) => {
          if (err) {
            if (!exited) failInput(new SshError(`${where}: ${err.message}`));
          } else if (pending === cb) {
            pending = null;
            cb();
          }
        });
      },
      final(cb) {
        if (failure) return cb(failure);
        inputEnded = true;
        if (!exited && !channelClosed) channel.end();
        cb();
      },
      destroy(err, cb) {
        // Abandoned mid-stream (the source failed): stop the remote command rather than let it see a short input as complete.
        if (!inputEnded && !settled && !exited) {
          channel.signal('TERM');
          channel.close();
        }
        cb(err);
      },
    });
    // Failures reach the caller through its own listeners and through `done`; a
    // writer without an 'error' listener must not take the process down.
    stdin.on('error', () => {});
    return { stdin, done };
  }

  async close(): Promise<void> {
    if (!this.#ended && !this.#closing) {
      this.#closing = true;
      this.#client.end();
      const force = setTimeout(() => this.#client.destroy(), 5000);
      await this.#closed;
      clearTimeout(force);
    }
    await this.#closed;
  }
}
