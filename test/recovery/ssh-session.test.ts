import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSshCommand, type SshTarget } from '../../src/recovery/ssh/ssh-command.ts';
import { openSshSession, SshError, type SshSession } from '../../src/recovery/ssh/ssh-session.ts';
import { freePort } from '../support/free-port.ts';
import { sshdAvailable, startSshd, type ClientKey, type Sshd } from '../support/sshd.ts';
import { descendants, signalAll } from '../support/processes.ts';
import { makeTempDir } from '../support/tmp.ts';

// The SSH transport of remote recovery against a real OpenSSH sshd on loopback.

const MiB = 1024 * 1024;

/** A target logging in as postgres to the test sshd with `key`, host key checked. */
function loginTarget(sshd: Sshd, key: ClientKey, knownHosts: string, over: Partial<SshTarget> = {}): SshTarget {
  return {
    host: '127.0.0.1',
    port: sshd.port,
    username: 'postgres',
    identityFiles: [key.privateKey],
    strictHostKeyChecking: 'yes',
    knownHostsFiles: [knownHosts],
    connectTimeoutSeconds: 10,
    useAgent: false,
    commandLine: 'ssh (test)',
    ...over,
  };
}

/** `total` bytes of a repeating random pattern, produced only as fast as they are consumed. */
function pattern(total: number, counter?: { produced: number }): Readable {
  const block = randomBytes(MiB);
  let left = total;
  return new Readable({
    highWaterMark: 64 * 1024,
    read() {
      if (left <= 0) return void this.push(null);
      const n = Math.min(left, 256 * 1024);
      const offset = (total - left) % MiB;
      const chunk = Buffer.alloc(n);
      for (let copied = 0; copied < n; ) {
        const start = (offset + copied) % MiB;
        copied += block.copy(chunk, copied, start, Math.min(MiB, start + n - copied));
      }
      left -= n;
      if (counter) counter.produced += n;
      this.push(chunk);
    },
  });
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe.skipIf(!sshdAvailable())('openSshSession against a real sshd', () => {
  let sshd: Sshd;
  let key: ClientKey;
  let knownHosts: string;
  let outDir: string;
  const sessions: SshSession[] = [];

  const target = (over: Partial<SshTarget> = {}): SshTarget => loginTarget(sshd, key, knownHosts, over);
  const open = async (over: Partial<SshTarget> = {}, opts = {}) => {
    const s = await openSshSession(target(over), opts);
    sessions.push(s);
    return s;
  };
  const accepted = () => (sshd.logTail(10_000).match(/Accepted publickey/g) ?? []).length;

  beforeAll(async () => {
    sshd = await startSshd({ name: 'ssh-session', users: ['postgres', 'root'], env: { PATH: '/usr/local/bin:/usr/bin:/bin' } });
    key = sshd.clientKey();
    sshd.authorize('postgres', key.publicKeyLine);
    sshd.authorize('root', key.publicKeyLine);
    knownHosts = join(makeTempDir('ssh-session-kh'), 'known_hosts');
    writeFileSync(knownHosts, `${sshd.knownHostsLine}\n`);
    outDir = makeTempDir('ssh-session-out', { owner: 'postgres' });
  });

  afterAll(async () => {
    for (const s of sessions) await s.close().catch(() => undefined);
    await sshd?.stop();
  });

  it('parses an ssh command line and runs a command as postgres', async () => {
    const t = parseSshCommand(`ssh -q -i ${key.privateKey} -p ${sshd.port} -o UserKnownHostsFile=${knownHosts} -o GlobalKnownHostsFile=/dev/null postgres@127.0.0.1`, {
      authSock: '',
    });
    const s = await openSshSession(t);
    sessions.push(s);
    expect(await s.run('id -un')).toEqual({ code: 0, signal: null, stdout: Buffer.from('postgres\n'), stderr: '' });
    const hostPub = sshd.knownHostsLine.split(' ').slice(1);
    expect(s.hostKey).toEqual({ type: 'ssh-ed25519', fingerprint: `SHA256:${createHash('sha256').update(Buffer.from(hostPub[1]!, 'base64')).digest('base64').replace(/=+$/, '')}`, how: 'known' });
    expect((await s.run('id -un', {})).stdout.toString()).toBe('postgres\n');
  });

  it('passes input, and reports exit codes, stderr and signals', async () => {
    const s = await open();
    expect((await s.run('cat', { input: 'hello' })).stdout.toString()).toBe('hello');
    const big = randomBytes(3 * MiB);
    expect((await s.run('sha256sum', { input: big })).stdout.toString()).toBe(`${sha256(big)}  -\n`);
    expect(await s.run('echo out; echo oops >&2; exit 3')).toEqual({ code: 3, signal: null, stdout: Buffer.from('out\n'), stderr: 'oops\n' });
    expect(await s.run('kill -TERM $$')).toMatchObject({ code: null, signal: 'SIGTERM' });
    // The command gets EOF on stdin when there is no input, rather than hanging.
    expect((await s.run('wc -c')).stdout.toString().trim()).toBe('0');
  });

  it('a command that outlives timeoutMs is stopped', async () => {
    const s = await open();
    const started = Date.now();
    const err = await rejection(s.run('sleep 30', { timeoutMs: 300 }));
    expect(err).toBeInstanceOf(SshError);
    expect(err.message).toBe(`'sleep 30' on 127.0.0.1:${sshd.port} did not finish within 0.3 s`);
    expect(Date.now() - started).toBeLessThan(5000);
    expect((await s.run('true')).code).toBe(0);
  });

  it('openWritable streams bytes that arrive identical', async () => {
    const s = await open();
    const file = join(outDir, 'streamed');
    const data = randomBytes(5 * MiB + 123);
    const w = await s.openWritable(`cat > ${file}`);
    await pipeline(Readable.from([data.subarray(0, 1000), data.subarray(1000, 3 * MiB), data.subarray(3 * MiB)]), w.stdin);
    expect(await w.done).toEqual({ code: 0, signal: null, stdout: Buffer.alloc(0), stderr: '' });
    expect(sha256(readFileSync(file))).toBe(sha256(data));
  });

  it('respects back-pressure: a remote that does not read stalls the writer, and 64 MiB pass in bounded memory', async () => {
    const s = await open();
    const counter = { produced: 0 };
    const w = await s.openWritable('sleep 2; cat > /dev/null');
    const rssBefore = process.memoryUsage().rss;
    let rssMax = rssBefore;
    const sampler = setInterval(() => (rssMax = Math.max(rssMax, process.memoryUsage().rss)), 20);
    const piping = pipeline(pattern(64 * MiB, counter), w.stdin);
    await new Promise((r) => setTimeout(r, 1500));
    // While the remote sleeps only the SSH window (2 MiB) and a few buffers fill up.
    expect(counter.produced).toBeLessThan(8 * MiB);
    await piping;
    expect((await w.done).code).toBe(0);
    clearInterval(sampler);
    expect(counter.produced).toBe(64 * MiB);
    expect(rssMax - rssBefore).toBeLessThan(64 * MiB);
  });

  it('runs several channels at once on one session', async () => {
    const s = await open();
    const inputs = Array.from({ length: 6 }, () => randomBytes(MiB + 17));
    const writers = await Promise.all(inputs.map((_, i) => s.openWritable(`cat > ${join(outDir, `parallel-${i}`)}`)));
    const runs = [s.run('sleep 0.2; echo a'), s.run('echo b')];
    await Promise.all(writers.map((w, i) => pipeline(Readable.from([inputs[i]!]), w.stdin)));
    const results = await Promise.all(writers.map((w) => w.done));
    expect(results.map((r) => r.code)).toEqual([0, 0, 0, 0, 0, 0]);
    expect((await Promise.all(runs)).map((r) => r.stdout.toString())).toEqual(['a\n', 'b\n']);
    inputs.forEach((data, i) => expect(sha256(readFileSync(join(outDir, `parallel-${i}`)))).toBe(sha256(data)));
  });

  it('reports the exit status of quick commands run while other channels stream (no status lost)', async () => {
    const s = await open();
    const writers = await Promise.all([s.openWritable('cat > /dev/null'), s.openWritable('cat > /dev/null')]);
    let stop = false;
    const blob = Buffer.alloc(MiB);
    const pumps = writers.map(async (w) => {
      while (!stop) if (!w.stdin.write(blob)) await new Promise((r) => w.stdin.once('drain', r));
      w.stdin.end();
      return w.done;
    });
    const codes: (number | null)[] = [];
    for (let i = 0; i < 150; i++) codes.push((await s.run(i % 2 ? 'true' : 'false')).code);
    stop = true;
    await Promise.all(pumps);
    // ssh2 can deliver exit-status in the same read as the exec reply: it used to be missed (null) now and then.
    expect(codes).toEqual(Array.from({ length: 150 }, (_, i) => (i % 2 ? 0 : 1)));
  });

  it('more channels than sshd allows (MaxSessions 10) fail with a hint', async () => {
    const s = await open();
    const writers = await Promise.allSettled(Array.from({ length: 11 }, () => s.openWritable('cat > /dev/null')));
    const failed = writers.filter((r) => r.status === 'rejected');
    expect(failed).toHaveLength(1);
    expect(((failed[0] as PromiseRejectedResult).reason as Error).message).toMatch(
      new RegExp(`^cannot start 'cat > /dev/null' on 127\\.0\\.0\\.1:${sshd.port}: .*open failed.*MaxSessions, 10 by default`),
    );
    for (const r of writers) if (r.status === 'fulfilled') r.value.stdin.end();
    for (const r of writers) if (r.status === 'fulfilled') expect((await r.value.done).code).toBe(0);
  });

  it('a remote command that stops reading fails the writer and reports its exit', async () => {
    const s = await open();
    const w = await s.openWritable('head -c 10 > /dev/null; echo "tar: Unexpected EOF" >&2; exit 2');
    const err = await rejection(pipeline(pattern(32 * MiB), w.stdin));
    expect(err).toBeInstanceOf(SshError);
    expect(err.message).toBe(`'head -c 10 > /dev/null; echo "tar: Unexpected EOF" >&2; exit 2' on 127.0.0.1:${sshd.port} ended (exit status 2) before reading all its input: tar: Unexpected EOF`);
    expect(await w.done).toMatchObject({ code: 2, stderr: 'tar: Unexpected EOF\n' });
  });

  it('a writer destroyed mid-stream stops the remote command', async () => {
    const s = await open();
    const w = await s.openWritable('cat > /dev/null; echo finished');
    w.stdin.write(Buffer.alloc(1000));
    w.stdin.destroy(new Error('source failed'));
    const r = await w.done;
    expect(r.stdout.toString()).not.toContain('finished');
    expect(r.code === null ? r.signal : 'exited').toBe('SIGTERM');
  });

  it('a wrong host key is refused before anything runs', async () => {
    const other = sshd.clientKey();
    const kh = join(makeTempDir('ssh-session-kh'), 'known_hosts');
    writeFileSync(kh, `# comment\n[127.0.0.1]:${sshd.port} ${other.publicKeyLine}\n`);
    const offered = readFileSync(join(sshd.dir, 'ssh_host_ed25519_key.pub'), 'utf8').split(' ')[1]!;
    const fp = `SHA256:${createHash('sha256').update(Buffer.from(offered, 'base64')).digest('base64').replace(/=+$/, '')}`;
    const logins = accepted();
    for (const strict of ['yes', 'accept-new'] as const) {
      const err = await rejection(open({ knownHostsFiles: [kh], strictHostKeyChecking: strict }));
      expect(err).toBeInstanceOf(SshError);
      expect(err.message).toMatch(
        new RegExp(`^Host key verification failed for 127\\.0\\.0\\.1:${sshd.port}: the server offered the ssh-ed25519 key ${fp.replace(/[+/]/g, '\\$&')}, but \\[127\\.0\\.0\\.1\\]:${sshd.port} is known with a different ssh-ed25519 key at ${kh}:2: `),
      );
    }
    expect(accepted()).toBe(logins);
    // StrictHostKeyChecking=no goes on, and says how the key was taken.
    const s = await open({ knownHostsFiles: [kh], strictHostKeyChecking: 'no' });
    expect(s.hostKey?.how).toBe('unchecked');
  });

  it('an unknown host is refused with yes, accepted with accept-new (known_hosts untouched)', async () => {
    const kh = join(makeTempDir('ssh-session-kh'), 'known_hosts');
    writeFileSync(kh, '');
    const err = await rejection(open({ knownHostsFiles: [kh, '/dev/null'] }));
    expect(err.message).toMatch(new RegExp(`^Host key verification failed for 127\\.0\\.0\\.1:${sshd.port}: no host key is known for \\[127\\.0\\.0\\.1\\]:${sshd.port} in ${kh}, /dev/null;`));
    const s = await open({ knownHostsFiles: [kh], strictHostKeyChecking: 'accept-new' });
    expect(s.hostKey?.how).toBe('new');
    expect((await s.run('id -un')).stdout.toString()).toBe('postgres\n');
    expect(readFileSync(kh, 'utf8')).toBe('');
  });

  it('authentication failure names the user and the keys tried', async () => {
    const stranger = sshd.clientKey();
    const err = await rejection(open({ identityFiles: [stranger.privateKey, '/nonexistent/id_rsa', stranger.publicKey] }));
    expect(err).toBeInstanceOf(SshError);
    expect(err.message).toBe(
      `Authentication failed for postgres@127.0.0.1:${sshd.port}: the server accepted none of the keys (tried ${stranger.privateKey}; ` +
        `skipped /nonexistent/id_rsa (missing); skipped ${stranger.publicKey} (a public key, not a private key))`,
    );
    // A user sshd does not let in fails the same way.
    const nobody = await rejection(open({ username: 'nobody' }));
    expect(nobody.message).toBe(`Authentication failed for nobody@127.0.0.1:${sshd.port}: the server accepted none of the keys (tried ${key.privateKey})`);
    // The right key after a wrong one still logs in.
    const s = await open({ identityFiles: [stranger.privateKey, key.privateKey] });
    expect((await s.run('id -un')).stdout.toString()).toBe('postgres\n');
  });

  it('a passphrase-protected key is named, with the advice to use ssh-agent, and its contents never shown', async () => {
    const dir = makeTempDir('ssh-session-enc');
    const file = join(dir, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret phrase', '-C', '', '-f', file], { stdio: 'ignore' });
    const err = await rejection(open({ identityFiles: [file] }));
    expect(err.message).toBe(`Cannot log in to postgres@127.0.0.1:${sshd.port}: ${file} is protected by a passphrase: use ssh-agent (SSH_AUTH_SOCK)`);
    const body = readFileSync(file, 'utf8').split('\n')[1]!;
    expect(err.message).not.toContain(body.slice(0, 20));
    const none = await rejection(open({ identityFiles: [] }));
    expect(none.message).toMatch(/^Cannot log in to postgres@127\.0\.0\.1:\d+: no identity file \(give one with -i/);
    // With a usable key next to it, the encrypted one is skipped and named only if login fails.
    const s = await open({ identityFiles: [file, key.privateKey] });
    expect((await s.run('true')).code).toBe(0);
  });

  it('logs in with ssh-agent keys, after the key files; a dead agent is only noted', async () => {
    const dir = makeTempDir('ssh-session-agent');
    const sock = join(dir, 'agent.sock');
    const agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 20));
      execFileSync('ssh-add', ['-q', key.privateKey], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: 'ignore' });
      const stranger = sshd.clientKey();
      const s = await openSshSession(target({ identityFiles: [stranger.privateKey], useAgent: true }), { agentSocket: sock });
      sessions.push(s);
      expect((await s.run('id -un')).stdout.toString()).toBe('postgres\n');
      const dead = join(dir, 'no-agent.sock');
      const err = await rejection(openSshSession(target({ identityFiles: [stranger.privateKey], useAgent: true }), { agentSocket: dead }));
      expect(err.message).toMatch(
        new RegExp(`^Authentication failed for postgres@127\\.0\\.0\\.1:${sshd.port}: the server accepted none of the keys \\(tried ${stranger.privateKey}, the keys of ssh-agent \\(${dead}\\); ssh-agent \\(${dead}\\) failed: Failed to connect to agent\\)$`),
      );
      const ok = await openSshSession(target({ useAgent: true }), { agentSocket: dead });
      sessions.push(ok);
      expect((await ok.run('true')).code).toBe(0);
    } finally {
      agent.kill();
    }
  });

  it('connection refused says so', async () => {
    const port = await freePort();
    const err = await rejection(openSshSession(target({ port })));
    expect(err).toBeInstanceOf(SshError);
    expect(err.message).toBe(`Unable to connect to postgres@127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}`);
  });

  it('a server that never answers times out', async () => {
    const silent = createServer((socket) => socket.on('error', () => undefined));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as AddressInfo).port;
    try {
      const err = await rejection(openSshSession(target({ port }), { readyTimeoutMs: 300 }));
      expect(err.message).toBe(`Unable to connect to postgres@127.0.0.1:${port}: no login within 0.3 s (Timed out while waiting for handshake)`);
    } finally {
      silent.close();
    }
  });

  it('close() ends the session; later commands and open channels fail clearly', async () => {
    const s = await openSshSession(target());
    const w = await s.openWritable('cat > /dev/null');
    await s.close();
    const err = await rejection(w.done);
    expect(err.message).toBe(`the SSH session to 127.0.0.1:${sshd.port} was closed while running 'cat > /dev/null'`);
    expect((await rejection(s.run('true'))).message).toBe(`cannot run 'true': the SSH session to 127.0.0.1:${sshd.port} is closed`);
    await s.close();
  });
});

describe.skipIf(!sshdAvailable())('openSshSession when the connection drops', () => {
  let sshd: Sshd;
  let key: ClientKey;
  let knownHosts: string;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    sshd = await startSshd({ name: 'ssh-drop', users: ['postgres'] });
    key = sshd.clientKey();
    sshd.authorize('postgres', key.publicKeyLine);
    knownHosts = join(makeTempDir('ssh-drop-kh'), 'known_hosts');
    writeFileSync(knownHosts, `${sshd.knownHostsLine}\n`);
  });

  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    signalAll(descendants(sshd?.pid ?? -1), 'SIGKILL');
    await sshd?.stop();
  });

  const target = (): SshTarget => loginTarget(sshd, key, knownHosts);

  it('killing the sshd serving the session rejects done and the writer, without crashing anything', async () => {
    const s = await openSshSession(target());
    const counter = { produced: 0 };
    const w = await s.openWritable('cat > /dev/null');
    const piping = pipeline(pattern(1024 * MiB, counter), w.stdin);
    piping.catch(() => undefined);
    while (counter.produced < 4 * MiB) await new Promise((r) => setTimeout(r, 20));
    signalAll(descendants(sshd.pid), 'SIGKILL');
    const err = await rejection(w.done);
    expect(err).toBeInstanceOf(SshError);
    expect(err.message).toMatch(new RegExp(`^connection to 127\\.0\\.0\\.1:${sshd.port} lost while running 'cat > /dev/null' \\(.+\\)$`));
    const pipeErr = await rejection(piping);
    expect(pipeErr).toBeInstanceOf(SshError);
    expect(pipeErr.message).toBe(err.message);
    expect((await rejection(s.run('true'))).message).toMatch(new RegExp(`^cannot run 'true': the connection to 127\\.0\\.0\\.1:${sshd.port} was lost`));
    await s.close();
    await new Promise((r) => setTimeout(r, 100));
    expect(unhandled).toEqual([]);
  });

  it('a connection that stops answering is detected by keepalives', async () => {
    const s = await openSshSession(target(), { keepaliveIntervalMs: 300 });
    const w = await s.openWritable('cat > /dev/null');
    const running = pipeline(pattern(1024 * MiB), w.stdin);
    running.catch(() => undefined);
    const serving = descendants(sshd.pid);
    expect(serving.length).toBeGreaterThan(0);
    signalAll(serving, 'SIGSTOP');
    try {
      const started = Date.now();
      const err = await rejection(w.done);
      expect(err.message).toBe(`connection to 127.0.0.1:${sshd.port} lost while running 'cat > /dev/null' (Keepalive timeout)`);
      expect(Date.now() - started).toBeLessThan(10_000);
      expect((await rejection(running)).message).toBe(err.message);
    } finally {
      signalAll(serving, 'SIGKILL');
      signalAll(serving, 'SIGCONT');
    }
    expect(unhandled).toEqual([]);
  });
});
