import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PlainExtractor } from '../../src/backup/plain-extract.ts';
import { END_OF_ARCHIVE } from '../../src/cloud/backup-tar.ts';
import { tarHeader, tarPadding, type TarHeaderFields } from '../../src/cloud/tar-header.ts';

// The synchronous extractor behind plain backups: what PostgreSQL's tar holds
// must land on disk byte for byte whatever the chunking, and anything that is
// not a sound archive must fail with the archive named, never half-succeed.

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function scratch(): string {
  const d = mkdtempSync(join(tmpdir(), 'barkeep-extract-'));
  dirs.push(d);
  return d;
}

type Member = Omit<Partial<TarHeaderFields>, 'name'> & { name: string; data?: Buffer };

function archive(members: Member[], end = true): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    const data = m.data ?? Buffer.alloc(0);
    const type = m.type ?? 'file';
    parts.push(tarHeader({ uid: 0, gid: 0, mode: type === 'directory' ? 0o700 : 0o600, mtime: 1_700_000_000, size: data.length, ...m, name: Buffer.from(m.name), type, ...(m.linkname ? { linkname: m.linkname } : {}) }));
    if (type === 'file') parts.push(data, Buffer.alloc(tarPadding(data.length)));
  }
  if (end) parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

function feed(x: PlainExtractor, bytes: Buffer, chunk: number): void {
  for (let i = 0; i < bytes.length; i += chunk) x.writeNow(bytes.subarray(i, i + chunk));
}

const big = Buffer.alloc(200_000);
for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff;
const members: Member[] = [
  { name: 'backup_label', data: Buffer.from('START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n') },
  { name: 'base/', type: 'directory' },
  { name: 'base/1/', type: 'directory' },
  { name: 'base/1/1259', data: big },
  { name: 'base/1/empty', data: Buffer.alloc(0) },
  { name: 'pg_tblspc/', type: 'directory' },
  { name: 'pg_tblspc/16384', type: 'symlink', linkname: Buffer.from('/srv/tblspc') },
  { name: `global/${'x'.repeat(120)}`, data: Buffer.from('long name') },
];

describe('PlainExtractor', () => {
  for (const chunk of [1, 511, 512, 4096, 1 << 20]) {
    it(`writes every member exactly, fed in ${chunk}-byte chunks`, async () => {
      const root = join(scratch(), 'data');
      let label: string | null = null;
      const x = new PlainExtractor(root, { archive: 'base.tar', onBackupLabel: (t) => (label = t) });
      feed(x, archive(members), chunk);
      await x.close();
      expect(readFileSync(join(root, 'base/1/1259')).equals(big)).toBe(true);
      expect(statSync(join(root, 'base/1/empty')).size).toBe(0);
      expect(readFileSync(join(root, 'global', 'x'.repeat(120)), 'utf8')).toBe('long name');
      expect(readlinkSync(join(root, 'pg_tblspc/16384'))).toBe('/srv/tblspc');
      expect(label).toBe('START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n');
      expect(statSync(join(root, 'base/1/1259')).mtimeMs).toBe(1_700_000_000_000);
      expect(statSync(join(root, 'base/1/1259')).mode & 0o777).toBe(0o600);
    });
  }

  it('refuses a member that would be written outside the backup, naming it', () => {
    const root = join(scratch(), 'data');
    const x = new PlainExtractor(root, { archive: 'base.tar' });
    expect(() => feed(x, archive([{ name: '../escape', data: Buffer.from('x') }]), 4096)).toThrow(/base\.tar .*'\.\.\/escape'/);
    expect(existsSync(join(root, '..', 'escape'))).toBe(false);
  });

  it('refuses to write through a symbolic link the archive made', () => {
    const dir = scratch();
    const root = join(dir, 'data');
    const x = new PlainExtractor(root, { archive: '16384.tar' });
    const bytes = archive([
      { name: 'evil', type: 'symlink', linkname: Buffer.from(dir) },
      { name: 'evil/owned', data: Buffer.from('x') },
    ]);
    expect(() => feed(x, bytes, 4096)).toThrow(/16384\.tar .*symbolic link 'evil'/);
    expect(existsSync(join(dir, 'owned'))).toBe(false);
    expect(lstatSync(join(root, 'evil')).isSymbolicLink()).toBe(true);
  });

  it('a truncated archive fails at close, naming the archive and the member cut short', async () => {
    const x = new PlainExtractor(join(scratch(), 'data'), { archive: 'base.tar' });
    const bytes = archive(members);
    feed(x, bytes.subarray(0, 1024 + 100_000), 4096);
    await expect(x.close()).rejects.toThrow(/base\.tar .*truncated.*'base\/1\/1259'/);
  });

  it('an archive without its end blocks fails, unless the server is older than 15', async () => {
    const bytes = archive(members, false);
    const strict = new PlainExtractor(join(scratch(), 'data'), { archive: 'base.tar' });
    feed(strict, bytes, 4096);
    await expect(strict.close()).rejects.toThrow(/base\.tar .*no end-of-archive marker/);
    const legacy = new PlainExtractor(join(scratch(), 'data'), { archive: 'base.tar', endMarkerOptional: true });
    feed(legacy, bytes, 4096);
    await expect(legacy.close()).resolves.toBeUndefined();
  });

  it('garbage instead of a tar header is an error, not a silent skip', () => {
    const x = new PlainExtractor(join(scratch(), 'data'), { archive: 'base.tar' });
    expect(() => x.writeNow(Buffer.alloc(1024, 0x41))).toThrow(/base\.tar from the server is not a valid tar archive: corrupt tar header/);
  });

  it('a member type PostgreSQL never writes (a hard link) is refused by name', () => {
    const x = new PlainExtractor(join(scratch(), 'data'), { archive: 'base.tar' });
    const bytes = archive([{ name: 'a', data: Buffer.from('x') }]);
    const link = Buffer.from(bytes.subarray(0, 512));
    link.fill(0, 0, 100).write('b', 0);
    link[156] = '1'.charCodeAt(0);
    link.write('00000000000\0', 124);
    // Re-checksum the edited header.
    link.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of link) sum += b;
    link.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    expect(() => x.writeNow(Buffer.concat([bytes.subarray(0, bytes.length - 1024), link]))).toThrow(/unexpected member 'b' \(tar type '1'\)/);
  });

  it('files synced early or written direct are complete, and no descriptor is left open', async () => {
    const openFds = () => readdirSync('/proc/self/fd').length;
    const before = openFds();
    const root = join(scratch(), 'data');
    const x = new PlainExtractor(root, { archive: 'base.tar' });
    // Large files go direct (O_DIRECT, in the background); fed with no regard
    // for whenReady, part of them goes through the page cache instead.
    const large = Buffer.alloc(20 * 1024 * 1024 + 100, 0x5a);
    large.write('end', large.length - 3);
    // Files under 1 MiB are buffered: 72 MiB of them get fdatasync'ed early.
    const small = Array.from({ length: 96 }, (_, i) => ({ name: `base/1/${i}`, data: Buffer.alloc(768 * 1024, i) }));
    feed(x, archive([{ name: 'base/1/big', data: large }, ...small, { name: 'base/1/big2', data: large }]), 1 << 20);
    await x.close();
    // The early fdatasyncs end on the thread pool; their descriptors close then.
    for (let i = 0; i < 100 && openFds() > before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(openFds()).toBe(before);
    expect(readFileSync(join(root, 'base/1/big')).equals(large)).toBe(true);
    expect(readFileSync(join(root, 'base/1/big2')).equals(large)).toBe(true);
    expect(statSync(join(root, 'base/1/big2')).mtimeMs).toBe(1_700_000_000_000);
    expect(readFileSync(join(root, 'base/1/95')).equals(Buffer.alloc(768 * 1024, 95))).toBe(true);
  });
});
