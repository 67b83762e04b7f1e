import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkHostKey, hostFieldMatches, keyTypeOfBlob, knownHostsName, knownKeyTypes, sha256Fingerprint, type HostKeyTarget } from '../../src/recovery/ssh/known-hosts.ts';

// Keys come from ssh-keygen, hashed names from `ssh-keygen -H`, fingerprints are
// compared with `ssh-keygen -l`: the files are the ones OpenSSH writes and reads.

interface Key {
  type: string;
  b64: string;
  blob: Buffer;
  fingerprint: string;
}

let dir: string;
let seq = 0;

function newKey(type: 'ed25519' | 'ecdsa' = 'ed25519'): Key {
  const file = join(dir, `key${++seq}`);
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', '', '-f', file], { stdio: 'ignore' });
  const [kt, b64] = readFileSync(`${file}.pub`, 'utf8').trim().split(/\s+/);
  const fingerprint = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`], { encoding: 'utf8' }).split(/\s+/)[1]!;
  return { type: kt!, b64: b64!, blob: Buffer.from(b64!, 'base64'), fingerprint };
}

function knownHosts(text: string): string {
  const file = join(dir, `known_hosts${++seq}`);
  writeFileSync(file, text);
  return file;
}

function target(host: string, port: number, files: string[], strict: HostKeyTarget['strictHostKeyChecking'] = 'yes'): HostKeyTarget {
  return { host, port, knownHostsFiles: files, strictHostKeyChecking: strict };
}

const check = (t: HostKeyTarget, k: Key) => checkHostKey(t, k.type, k.blob);

let a: Key;
let b: Key;
let e: Key;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'barkeep-known-hosts-'));
  a = newKey();
  b = newKey();
  e = newKey('ecdsa');
});

describe('key helpers', () => {
  it('reads the key type from the blob and prints fingerprints as ssh-keygen does', () => {
    expect(keyTypeOfBlob(a.blob)).toBe('ssh-ed25519');
    expect(keyTypeOfBlob(e.blob)).toBe('ecdsa-sha2-nistp256');
    expect(keyTypeOfBlob(Buffer.from([0, 0]))).toBeNull();
    expect(sha256Fingerprint(a.blob)).toBe(a.fingerprint);
    expect(sha256Fingerprint(e.blob)).toBe(e.fingerprint);
  });

  it('names hosts as OpenSSH does: bare on port 22, [host]:port otherwise', () => {
    expect(knownHostsName('db', 22)).toBe('db');
    expect(knownHostsName('db', 2222)).toBe('[db]:2222');
  });
});

describe('checkHostKey', () => {
  it('plain names, comma lists, comments, blank lines, other keys', () => {
    const file = knownHosts(`# a comment\n\n   \nother ${b.type} ${b.b64}\nDB,db.example.com,10.0.0.5 ${a.type} ${a.b64} a comment\n`);
    expect(check(target('db', 22, [file]), a)).toEqual({ ok: true, how: 'known' });
    expect(check(target('db.example.com', 22, [file]), a)).toEqual({ ok: true, how: 'known' });
    expect(check(target('10.0.0.5', 22, [file]), a)).toEqual({ ok: true, how: 'known' });
    expect(check(target('other', 22, [file]), b)).toEqual({ ok: true, how: 'known' });
  });

  it('[host]:port entries are for that port only; bare names only for port 22', () => {
    const file = knownHosts(`[db]:2222 ${a.type} ${a.b64}\nplain ${a.type} ${a.b64}\n`);
    expect(check(target('db', 2222, [file]), a)).toEqual({ ok: true, how: 'known' });
    expect(check(target('db', 22, [file]), a).ok).toBe(false);
    expect(check(target('plain', 2222, [file]), a).ok).toBe(false);
    expect(check(target('plain', 22, [file]), a).ok).toBe(true);
  });

  it('hashed names, as ssh-keygen -H writes them', () => {
    const file = knownHosts(`db ${a.type} ${a.b64}\n[db]:2222 ${b.type} ${b.b64}\n`);
    execFileSync('ssh-keygen', ['-H', '-f', file], { stdio: 'ignore' });
    const text = readFileSync(file, 'utf8');
    expect(text).toMatch(/^\|1\|[^|]+\|[^ ]+ ssh-ed25519 /m);
    // No name left in clear (a base64 hash may contain 'db' by chance: look at the name field).
    expect(text.split('\n').filter(Boolean).map((l) => l.split(' ')[0]!.startsWith('|1|'))).toEqual([true, true]);
    expect(check(target('db', 22, [file]), a)).toEqual({ ok: true, how: 'known' });
    expect(check(target('db', 2222, [file]), b)).toEqual({ ok: true, how: 'known' });
    expect(check(target('db', 2222, [file]), a).ok).toBe(false);
    expect(check(target('other', 22, [file]), a).ok).toBe(false);
  });

  it('wildcards and negation (a negated match vetoes the line whatever the order)', () => {
    const file = knownHosts(
      [`*.example.com,!bad.example.com ${a.type} ${a.b64}`, `!worse.example.com,*.example.com ${a.type} ${a.b64}`, `db?.internal ${a.type} ${a.b64}`, `[*.example.org]:2222 ${a.type} ${a.b64}`, ''].join('\n'),
    );
    expect(check(target('db.example.com', 22, [file]), a).ok).toBe(true);
    expect(check(target('bad.example.com', 22, [file]), a).ok).toBe(true); // the second line still names it
    expect(hostFieldMatches('*.example.com,!bad.example.com', 'bad.example.com')).toBe(false);
    expect(hostFieldMatches('!worse.example.com,*.example.com', 'worse.example.com')).toBe(false);
    expect(check(target('db1.internal', 22, [file]), a).ok).toBe(true);
    expect(check(target('db12.internal', 22, [file]), a).ok).toBe(false);
    expect(check(target('x.example.org', 2222, [file]), a).ok).toBe(true);
    // `*.example.com` does not match the bracketed name used off port 22.
    expect(check(target('db.example.com', 2222, [file]), a).ok).toBe(false);
    expect(hostFieldMatches('DB.Example.COM', 'db.example.com')).toBe(true);
    expect(hostFieldMatches('db.example.com', 'dbxexample.com')).toBe(false);
  });

  it('a key marked @revoked is refused even when also listed, and even with StrictHostKeyChecking=no', () => {
    const revokedFile = knownHosts(`@revoked * ${a.type} ${a.b64}\n`);
    const file = knownHosts(`db ${a.type} ${a.b64}\n`);
    for (const strict of ['yes', 'accept-new', 'no'] as const) {
      const r = check(target('db', 22, [file, revokedFile], strict), a);
      expect(r).toEqual({ ok: false, reason: `the server's ssh-ed25519 key ${a.fingerprint} is marked @revoked at ${revokedFile}:1` });
    }
    // A revoked line for another key does not matter.
    expect(check(target('db', 22, [file, knownHosts(`@revoked * ${b.type} ${b.b64}\n`)]), a)).toEqual({ ok: true, how: 'known' });
  });

  it('a changed key is refused with the known entry file:line and the offered fingerprint, except with StrictHostKeyChecking=no', () => {
    const file = knownHosts(`# header\nother ${a.type} ${a.b64}\ndb ${a.type} ${a.b64}\n`);
    for (const strict of ['yes', 'accept-new'] as const) {
      const r = check(target('db', 22, [file], strict), b);
      expect(r.ok).toBe(false);
      const reason = (r as { reason: string }).reason;
      expect(reason).toContain(`the server offered the ssh-ed25519 key ${b.fingerprint}, but db is known with a different ssh-ed25519 key at ${file}:3`);
      expect(reason).toContain(`ssh-keygen -R 'db' -f ${file}`);
      expect(reason).not.toContain('\n');
    }
    expect(check(target('db', 22, [file], 'no'), b)).toEqual({ ok: true, how: 'unchecked' });
    // Known with a key of another type only: still refused (OpenSSH would call it new).
    expect(check(target('db', 22, [file], 'accept-new'), e).ok).toBe(false);
  });

  it('an unknown host: refused with yes, accepted (not written) with accept-new and no', () => {
    const file = knownHosts(`other ${a.type} ${a.b64}\n`);
    const before = readFileSync(file, 'utf8');
    const refused = check(target('db', 2222, [file, join(dir, 'missing')], 'yes'), a);
    expect(refused).toEqual({
      ok: false,
      reason:
        `no host key is known for [db]:2222 in ${file}, ${join(dir, 'missing')}; the server offered the ssh-ed25519 key ${a.fingerprint}. ` +
        `Add the host's key to known_hosts (e.g. ssh-keyscan -p 2222 db, after checking the fingerprint), or use -o StrictHostKeyChecking=accept-new`,
    });
    expect(check(target('db', 2222, [file], 'accept-new'), a)).toEqual({ ok: true, how: 'new' });
    expect(check(target('db', 2222, [file], 'no'), a)).toEqual({ ok: true, how: 'new' });
    expect(readFileSync(file, 'utf8')).toBe(before);
  });

  it('missing files, /dev/null and no files at all mean no entries', () => {
    expect(check(target('db', 22, ['/nonexistent/known_hosts', '/dev/null'], 'accept-new'), a)).toEqual({ ok: true, how: 'new' });
    expect((check(target('db', 22, []), a) as { reason: string }).reason).toMatch(/^no host key is known for db in no known_hosts file;/);
  });

  it('@cert-authority lines are skipped, and said so when they were all that matched', () => {
    const file = knownHosts(`@cert-authority *.example.com ${a.type} ${a.b64}\n@unknown-marker db.example.com ${a.type} ${a.b64}\n`);
    const r = check(target('db.example.com', 22, [file]), a);
    expect(r.ok).toBe(false);
    expect((r as { reason: string }).reason).toContain('(only @cert-authority lines match db.example.com, and host certificates are not supported)');
    expect(check(target('db.example.com', 22, [file], 'accept-new'), a)).toEqual({ ok: true, how: 'new' });
  });

  it('broken lines are skipped', () => {
    const file = knownHosts(`db ssh-ed25519\ndb ssh-ed25519 !!!notbase64\ndb ssh-rsa ${a.b64}\ndb ${a.type} ${a.b64}\n`);
    expect(check(target('db', 22, [file]), a)).toEqual({ ok: true, how: 'known' });
  });

  it('knownKeyTypes lists the types held for the host (to ask the server for those first)', () => {
    const file = knownHosts(`db ${e.type} ${e.b64}\ndb ${a.type} ${a.b64}\nother ${b.type} ${b.b64}\n@revoked db ${b.type} ${b.b64}\n`);
    expect(knownKeyTypes({ host: 'db', port: 22, knownHostsFiles: [file] })).toEqual(['ecdsa-sha2-nistp256', 'ssh-ed25519']);
    expect(knownKeyTypes({ host: 'nobody', port: 22, knownHostsFiles: [file] })).toEqual([]);
  });
});
