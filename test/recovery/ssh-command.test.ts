import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseSshCommand, SshCommandError, splitCommandLine, type SshTarget } from '../../src/recovery/ssh/ssh-command.ts';
import { shellJoin, shellQuote } from '../../src/recovery/ssh/shell-quote.ts';

// parseSshCommand reads an OpenSSH command line the way ssh does; the expected
// values below were checked against `ssh -F /dev/null -G ...` (OpenSSH 9.2).

// Made at load time: the tables below use it.
const home = mkdtempSync(join(tmpdir(), 'barkeep-ssh-command-'));
const env = () => ({ home, user: 'alice', authSock: '' });
const parse = (line: string, extra: { authSock?: string } = {}) => parseSshCommand(line, { ...env(), ...extra });

beforeAll(() => {
  mkdirSync(join(home, '.ssh'));
  // Only some default keys exist: the defaults list only those.
  writeFileSync(join(home, '.ssh', 'id_rsa'), 'x');
  writeFileSync(join(home, '.ssh', 'id_ed25519'), 'x');
});

describe('parseSshCommand: accepted forms', () => {
  it('a bare host: defaults as OpenSSH', () => {
    const t = parse('ssh db');
    expect(t).toEqual<SshTarget>({
      host: 'db',
      port: 22,
      username: 'alice',
      identityFiles: [join(home, '.ssh/id_ed25519'), join(home, '.ssh/id_rsa')],
      strictHostKeyChecking: 'yes',
      knownHostsFiles: [join(home, '.ssh/known_hosts'), join(home, '.ssh/known_hosts2'), '/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'],
      connectTimeoutSeconds: null,
      useAgent: false,
      commandLine: 'ssh db',
    });
  });

  it.each<[string, Partial<SshTarget>]>([
    ['ssh postgres@db', { username: 'postgres', host: 'db' }],
    ['/usr/bin/ssh postgres@DB.Example.COM', { username: 'postgres', host: 'db.example.com' }],
    ['ssh -p 2222 postgres@db', { port: 2222 }],
    ['ssh -p2222 db', { port: 2222 }],
    ['ssh db -p 2222', { port: 2222 }],
    ['ssh -l postgres db', { username: 'postgres' }],
    ['ssh -lpostgres db', { username: 'postgres' }],
    // The first user given wins, whichever spelling: as `ssh -G` shows.
    ['ssh -l a b@db', { username: 'a' }],
    ['ssh b@db -l a', { username: 'b' }],
    ['ssh -o User=c -l a db', { username: 'c' }],
    ['ssh -o User=c b@db', { username: 'c' }],
    ['ssh -p 1 -p 2 db', { port: 1 }],
    ['ssh -o Port=3 -p 2 db', { port: 3 }],
    ['ssh db -p 2 -o Port=3', { port: 2 }],
    ['ssh ssh://u@h:5', { username: 'u', host: 'h', port: 5 }],
    ['ssh -l a ssh://u@h:5', { username: 'a', host: 'h', port: 5 }],
    ['ssh ssh://[::1]:2200', { host: '::1', port: 2200 }],
    ['ssh -i /k/one -i/k/two db', { identityFiles: ['/k/one', '/k/two'] }],
    ['ssh -o StrictHostKeyChecking=no db', { strictHostKeyChecking: 'no' }],
    ['ssh -o StrictHostKeyChecking=off db', { strictHostKeyChecking: 'no' }],
    ['ssh -o StrictHostKeyChecking=ask db', { strictHostKeyChecking: 'yes' }],
    ['ssh -o StrictHostKeyChecking=accept-new db', { strictHostKeyChecking: 'accept-new' }],
    ['ssh -o "StrictHostKeyChecking no" db', { strictHostKeyChecking: 'no' }],
    ['ssh -oStrictHostKeyChecking=No db', { strictHostKeyChecking: 'no' }],
    ['ssh -o "stricthostkeychecking = accept-new" db', { strictHostKeyChecking: 'accept-new' }],
    ['ssh -o StrictHostKeyChecking=no -o StrictHostKeyChecking=yes db', { strictHostKeyChecking: 'no' }],
    ['ssh -o UserKnownHostsFile=/dev/null db', { knownHostsFiles: ['/dev/null', '/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'] }],
    ['ssh -o "UserKnownHostsFile /a /b" -o GlobalKnownHostsFile=/g db', { knownHostsFiles: ['/a', '/b', '/g'] }],
    ['ssh -o UserKnownHostsFile=none -o GlobalKnownHostsFile=none db', { knownHostsFiles: [] }],
    ['ssh -o UserKnownHostsFile=/a -o UserKnownHostsFile=/b -o GlobalKnownHostsFile=/dev/null db', { knownHostsFiles: ['/a', '/dev/null'] }],
    ['ssh -o ConnectTimeout=10 db', { connectTimeoutSeconds: 10 }],
    ['ssh -o ConnectTimeout=1m30s db', { connectTimeoutSeconds: 90 }],
    ['ssh -o ConnectTimeout=0 db', { connectTimeoutSeconds: null }],
    ['ssh -qTnx -4 -6 -C -v db', { host: 'db' }],
    ['ssh -o BatchMode=yes -o LogLevel=ERROR -o PasswordAuthentication=no -o ServerAliveInterval=30 -o ServerAliveCountMax=3 -o Compression=yes db', { host: 'db' }],
    ["ssh 'postgres@db'", { username: 'postgres' }],
    ['ssh -i "/path with/space" db', { identityFiles: ['/path with/space'] }],
    ['ssh -i /path\\ with\\ space db', { identityFiles: ['/path with space'] }],
    ['ssh -o IdentityFile=%d/k-%r@%h:%p-%u-%% -l pg db', { identityFiles: [`${home}/k-pg@db:22-alice-%`] }],
    ['ssh -- db', { host: 'db' }],
  ])('%s', (line, expected) => {
    const t = parse(line);
    for (const [k, v] of Object.entries(expected)) expect(t[k as keyof SshTarget]).toEqual(v);
  });

  it('expands ~ in file options, and resolves relative paths', () => {
    const t = parse('ssh -i ~/key -o IdentityFile=~/.ssh/other -i rel/key -o UserKnownHostsFile=~/kh db');
    expect(t.identityFiles).toEqual([join(home, 'key'), join(home, '.ssh/other'), resolve('rel/key')]);
    expect(t.knownHostsFiles[0]).toBe(join(home, 'kh'));
    expect(parse('ssh -i ~root/k db').identityFiles).toEqual(['/root/k']);
  });

  it('explicit identity files replace the defaults, even missing ones', () => {
    expect(parse('ssh -i /nowhere db').identityFiles).toEqual(['/nowhere']);
    const bare = mkdtempSync(join(tmpdir(), 'barkeep-ssh-empty-home-'));
    expect(parseSshCommand('ssh db', { home: bare, user: 'x', authSock: '' }).identityFiles).toEqual([]);
  });

  it('uses the agent when SSH_AUTH_SOCK is set, unless IdentitiesOnly', () => {
    expect(parse('ssh db', { authSock: '/run/agent.sock' }).useAgent).toBe(true);
    expect(parse('ssh -o IdentitiesOnly=yes db', { authSock: '/run/agent.sock' }).useAgent).toBe(false);
    expect(parse('ssh -o IdentitiesOnly=no db', { authSock: '/run/agent.sock' }).useAgent).toBe(true);
    expect(parse('ssh db').useAgent).toBe(false);
  });
});

describe('parseSshCommand: refusals, one line each', () => {
  const SUPPORTED = /; supported: -i FILE, -p PORT, -l USER, -o KEY=VALUE \(StrictHostKeyChecking, .*\), -q, -T, .*ssh:\/\/\[user@\]host\[:port\]$/;

  it.each([
    ['ssh -J bastion postgres@db', '-J'],
    ['ssh -F /etc/other.conf db', '-F'],
    ['ssh -L 5432:localhost:5432 db', '-L'],
    ['ssh -A db', '-A'],
    ['ssh -qA db', '-A'],
    ['ssh -o ProxyCommand=nc\\ %h\\ %p db', '-o ProxyCommand'],
    ['ssh -oProxyJump=bastion db', '-o ProxyJump'],
    ['ssh -o "HostName other" db', '-o HostName'],
    ['ssh -o Bogus=1 db', '-o Bogus'],
  ])('%s', (line, option) => {
    let err: unknown;
    try {
      parse(line);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SshCommandError);
    const message = (err as Error).message;
    expect(message.startsWith(`--remote-ssh-command: unsupported ssh option '${option}' in ${JSON.stringify(line)}; supported: `)).toBe(true);
    expect(message).toMatch(SUPPORTED);
    expect(message).not.toContain('\n');
  });

  it.each([
    ['ssh', /^--remote-ssh-command: no host given \(expected \[user@\]host\) in "ssh"$/],
    ['ssh -p 2222 -q', /no host given/],
    ['', /empty command/],
    ['rsync db', /the command must be ssh \(got 'rsync'\)/],
    ['PGHOST=x ssh db', /the command must be ssh/],
    ['ssh -p 0 db', /^--remote-ssh-command: bad port '0' \(-p\) in "ssh -p 0 db"$/],
    ['ssh -p 65536 db', /bad port '65536'/],
    ['ssh -p ssh db', /bad port 'ssh'/],
    ['ssh -o Port=x db', /bad port 'x' \(-o Port\)/],
    ['ssh ssh://db:99999', /bad port '99999' \(destination\)/],
    ['ssh -p', /ssh option '-p' needs a value/],
    ['ssh db ls -l', /^--remote-ssh-command: unexpected remote command 'ls -l' after the host .* in "ssh db ls -l"$/],
    ['ssh -- db -p 22', /unexpected remote command '-p 22'/],
    ['ssh a b', /unexpected remote command 'b'/],
    ['ssh @db', /empty user name/],
    ['ssh postgres@', /no host in destination 'postgres@'/],
    ['ssh ssh://db/path', /takes no path/],
    ['ssh -o StrictHostKeyChecking=maybe db', /bad value 'maybe' for ssh option StrictHostKeyChecking .*expected yes, no, accept-new, ask or off/],
    ['ssh -o StrictHostKeyChecking db', /no value for ssh option StrictHostKeyChecking/],
    ['ssh -o "Port 22 23" db', /ssh option Port takes one value/],
    ['ssh -o ConnectTimeout=soon db', /bad value 'soon' for ssh option ConnectTimeout/],
    ['ssh -o BatchMode=perhaps db', /bad value 'perhaps' for ssh option BatchMode/],
    ['ssh -o IdentityFile=%C db', /unsupported token '%C'/],
    ['ssh -i ~nosuchuserhere/k db', /unknown user '~nosuchuserhere'/],
    ["ssh 'db", /unterminated single quote/],
    ['ssh "db', /unterminated double quote/],
    ['ssh $HOST', /shell expansion \('\$'\) is not supported/],
    ['ssh "`hostname`"', /shell expansion/],
    ['ssh db; rm -rf /', /shell operator ';' is not supported/],
    ['ssh db | cat', /shell operator '\|'/],
  ])('%j', (line, pattern) => {
    let err: unknown;
    try {
      parse(line);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SshCommandError);
    expect((err as Error).message).toMatch(pattern);
    expect((err as Error).message).not.toContain('\n');
  });
});

describe('splitCommandLine', () => {
  it.each<[string, string[]]>([
    ['ssh  -p 22\tdb', ['ssh', '-p', '22', 'db']],
    [`ssh -o 'A B' "C \\"D\\" \\\\" e\\ f`, ['ssh', '-o', 'A B', 'C "D" \\', 'e f']],
    [`ssh ''`, ['ssh', '']],
    ['ssh db # a comment', ['ssh', 'db']],
    ['ssh a#b', ['ssh', 'a#b']],
  ])('%j', (line, words) => {
    expect(splitCommandLine(line)).toEqual(words);
  });
});

describe('shellQuote', () => {
  it.each<[string, string]>([
    ['plain', 'plain'],
    ['/var/lib/postgresql/16/main', '/var/lib/postgresql/16/main'],
    ['', "''"],
    ['a b', "'a b'"],
    ["it's", `'it'\\''s'`],
    ['$HOME', "'$HOME'"],
    ['a=b', "'a=b'"],
    ['~', "'~'"],
    ['*', "'*'"],
    ['new\nline', "'new\nline'"],
  ])('%j', (arg, quoted) => {
    expect(shellQuote(arg)).toBe(quoted);
  });

  it('round-trips through a real shell', async () => {
    const { execFileSync } = await import('node:child_process');
    const args = ['plain', '', 'a b', "it's", '$HOME `id` $(id)', '"\\', 'new\nline', '-n', '*', '~root', 'é'];
    const out = execFileSync('sh', ['-c', `printf '%s\\0' ${shellJoin(args)}`]);
    expect(out.toString('utf8').split('\0').slice(0, -1)).toEqual(args);
  });
});
