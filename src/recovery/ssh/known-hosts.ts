// Host key checking against OpenSSH known_hosts files, with OpenSSH's rules:
// the name looked up is `host`, or `[host]:port` off port 22; a line's names may
// be patterns (`*`, `?`, `!negated`) or one hashed name (`|1|salt|hmac`); a key
// marked @revoked is refused whatever else the files say. Host certificates are
// not supported (ssh2 has no certificate support), so @cert-authority lines are
// skipped. The files are never written: a key accepted under accept-new or 'no'
// is trusted for this connection only, so the next run checks it afresh.
import { createHash, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { SshTarget } from './ssh-command.ts';

export type HostKeyTarget = Pick<SshTarget, 'host' | 'port' | 'knownHostsFiles' | 'strictHostKeyChecking'>;

export type HostKeyCheck = { ok: true; how: 'known' | 'unchecked' | 'new' } | { ok: false; reason: string };

export interface KnownHostEntry {
  file: string;
  line: number;
  marker: 'revoked' | 'cert-authority' | null;
  /** The host field as written: patterns, or one hashed name. */
  hosts: string;
  keyType: string;
  keyBlob: Buffer;
}

/** The name OpenSSH looks up in known_hosts (put_host_port). */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** The key type a public key blob names in its first string, or null if malformed. */
export function keyTypeOfBlob(blob: Buffer): string | null {
  if (blob.length < 4) return null;
  const len = blob.readUInt32BE(0);
  if (len === 0 || len > 64 || 4 + len > blob.length) return null;
  return blob.subarray(4, 4 + len).toString('latin1');
}

/** `SHA256:...` as ssh-keygen -l and ssh print it. */
export function sha256Fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

export function readKnownHosts(files: readonly string[]): { entries: KnownHostEntry[]; unreadable: string[] } {
  const entries: KnownHostEntry[] = [];
  const unreadable: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      // A missing file simply has no entries (OpenSSH's defaults often do not exist).
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') unreadable.push(`${file} (${code ?? (err as Error).message})`);
      continue;
    }
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const entry = parseLine(lines[i]!, file, i + 1);
      if (entry) entries.push(entry);
    }
  }
  return { entries, unreadable };
}

function parseLine(raw: string, file: string, line: number): KnownHostEntry | null {
  const fields = raw.trim().split(/\s+/);
  if (fields[0] === undefined || fields[0] === '' || fields[0].startsWith('#')) return null;
  let marker: KnownHostEntry['marker'] = null;
  if (fields[0].startsWith('@')) {
    if (fields[0] === '@revoked') marker = 'revoked';
    else if (fields[0] === '@cert-authority') marker = 'cert-authority';
    else return null;
    fields.shift();
  }
  const [hosts, keyType, b64] = fields;
  if (hosts === undefined || keyType === undefined || b64 === undefined) return null;
  if (!/^[A-Za-z0-9+/]+=*$/.test(b64)) return null;
  const keyBlob = Buffer.from(b64, 'base64');
  // Lines whose blob does not carry their type are broken; OpenSSH skips them too.
  if (keyTypeOfBlob(keyBlob) !== keyType) return null;
  return { file, line, marker, hosts, keyType, keyBlob };
}

/** Whether a line's host field names `name` (already in known_hosts form). */
export function hostFieldMatches(hosts: string, name: string): boolean {
  const lname = name.toLowerCase();
  if (hosts.startsWith('|1|')) {
    const [, , salt, hash] = hosts.split('|');
    if (!salt || !hash) return false;
    const mac = createHmac('sha1', Buffer.from(salt, 'base64')).update(lname).digest();
    return mac.equals(Buffer.from(hash, 'base64'));
  }
  // OpenSSH's match_hostname: any negated match vetoes the line, whatever the order.
  let positive = false;
  for (const sub of hosts.split(',')) {
    const negated = sub.startsWith('!');
    const pattern = (negated ? sub.slice(1) : sub).toLowerCase();
    if (pattern === '' || !globMatch(pattern, lname)) continue;
    if (negated) return false;
    positive = true;
  }
  return positive;
}

function globMatch(pattern: string, text: string): boolean {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 's').test(text);
}

/** Key types known_hosts holds for this host, to ask the server for one of those first (as OpenSSH does). */
export function knownKeyTypes(target: Pick<SshTarget, 'host' | 'port' | 'knownHostsFiles'>): string[] {
  const name = knownHostsName(target.host, target.port);
  const types: string[] = [];
  for (const e of readKnownHosts(target.knownHostsFiles).entries) {
    if (e.marker === null && !types.includes(e.keyType) && hostFieldMatches(e.hosts, name)) types.push(e.keyType);
  }
  return types;
}

export function checkHostKey(target: HostKeyTarget, keyType: string, keyBlob: Buffer): HostKeyCheck {
  const name = knownHostsName(target.host, target.port);
  const offered = `${keyType} key ${sha256Fingerprint(keyBlob)}`;
  const { entries, unreadable } = readKnownHosts(target.knownHostsFiles);
  const sameKey = (e: KnownHostEntry) => e.keyType === keyType && e.keyBlob.equals(keyBlob);

  let known = false;
  let mismatch: KnownHostEntry | undefined;
  let caOnly = false;
  for (const e of entries) {
    if (!hostFieldMatches(e.hosts, name)) continue;
    if (e.marker === 'revoked') {
      if (sameKey(e)) return { ok: false, reason: `the server's ${offered} is marked @revoked at ${e.file}:${e.line}` };
    } else if (e.marker === 'cert-authority') {
      caOnly = true;
    } else if (sameKey(e)) {
      known = true;
    } else {
      mismatch ??= e;
    }
  }
  if (known) return { ok: true, how: 'known' };

  if (mismatch) {
    // OpenSSH with StrictHostKeyChecking=no also goes on after a changed key.
    // Stricter than OpenSSH otherwise: a host known only with keys of another type
    // is refused too, not treated as new (we ask for the known types first, so a
    // server that still has its old key offers it).
    if (target.strictHostKeyChecking === 'no') return { ok: true, how: 'unchecked' };
    return {
      ok: false,
      reason:
        `the server offered the ${offered}, but ${name} is known with a different ${mismatch.keyType} key at ${mismatch.file}:${mismatch.line}: ` +
        `the host key has changed or someone is intercepting the connection; if the change is expected, remove that line (ssh-keygen -R '${name}' -f ${mismatch.file})`,
    };
  }

  if (target.strictHostKeyChecking !== 'yes') return { ok: true, how: 'new' };
  const where = target.knownHostsFiles.length > 0 ? target.knownHostsFiles.join(', ') : 'no known_hosts file';
  const notes = [
    caOnly ? `only @cert-authority lines match ${name}, and host certificates are not supported` : '',
    unreadable.length > 0 ? `could not read ${unreadable.join(', ')}` : '',
  ].filter((n) => n !== '');
  return {
    ok: false,
    reason:
      `no host key is known for ${name} in ${where}${notes.length > 0 ? ` (${notes.join('; ')})` : ''}; the server offered the ${offered}. ` +
      `Add the host's key to known_hosts (e.g. ssh-keyscan${target.port === 22 ? '' : ` -p ${target.port}`} ${target.host}, after checking the fingerprint), or use -o StrictHostKeyChecking=accept-new`,
  };
}
