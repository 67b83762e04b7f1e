import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { readManifest } from '../../src/backup/manifest.ts';
import { verifyBackup, type VerifyBackupOptions } from '../../src/backup/verify-backup.ts';
import { requiredSegments } from '../../src/backup/verify/wal.ts';
import { makeTempDir } from '../support/tmp.ts';
import { copyTree, dirWalLookup, makeBackupFixtures, PG_BIN, run, type BackupFixtures } from './fixtures.ts';

// verifyBackup against real pg_basebackup output: it passes on every format and
// checksum algorithm (and agrees with pg_verifybackup), and each kind of damage is
// reported, naming the file.

let fx: BackupFixtures;
let scratch: string;
let copies = 0;

beforeAll(async () => {
  fx = await makeBackupFixtures();
  scratch = makeTempDir('verify-scratch');
});

function plainOptions(dataDir = fx.plain.dir, tablespaceDir = fx.plain.tablespaceDir): VerifyBackupOptions {
  return {
    dataDir,
    format: 'plain',
    manifestPath: join(dataDir, 'backup_manifest'),
    tablespaceDirs: new Map([[fx.tablespaceOid, tablespaceDir]]),
    walLookup: dirWalLookup(fx.walDir),
    systemIdentifier: fx.systemIdentifier,
    pgMajor: 15,
  };
}

function tarOptions(dir: string): VerifyBackupOptions {
  return { dataDir: dir, format: 'tar', manifestPath: join(dir, 'backup_manifest'), walLookup: dirWalLookup(fx.walDir), systemIdentifier: fx.systemIdentifier, pgMajor: 15 };
}

/** A private copy of the plain backup: data/ and the tablespace beside it. */
async function plainCopy(): Promise<{ data: string; ts: string; opts: VerifyBackupOptions }> {
  const dir = join(scratch, `plain-${++copies}`);
  mkdirSync(dir);
  await copyTree(fx.plain.dir, join(dir, 'data'));
  await copyTree(fx.plain.tablespaceDir, join(dir, String(fx.tablespaceOid)));
  const data = join(dir, 'data');
  const ts = join(dir, String(fx.tablespaceOid));
  return { data, ts, opts: plainOptions(data, ts) };
}

async function tarCopy(kind: keyof BackupFixtures['tars']): Promise<{ dir: string; opts: VerifyBackupOptions }> {
  const dir = join(scratch, `tar-${kind}-${++copies}`);
  await copyTree(fx.tars[kind].dir, dir);
  return { dir, opts: tarOptions(dir) };
}

/** The biggest relation file of a directory, relative to it. */
function biggestFile(dir: string, sub: string): string {
  const files = readdirSync(join(dir, sub)).map((n) => ({ n, size: statSync(join(dir, sub, n)).size }));
  files.sort((a, b) => b.size - a.size);
  return `${sub}/${files[0]!.n}`;
}

function flipByte(path: string, offset: number): void {
  const buf = readFileSync(path);
  buf[offset] = buf[offset]! ^ 0xff;
  writeFileSync(path, buf);
}

const messages = (r: { problems: { message: string }[] }) => r.problems.map((p) => p.message);

describe('intact backups pass', () => {
  it('plain, CRC32C: every file and the WAL check out, and pg_verifybackup agrees', async () => {
    const manifest = await readManifest(fx.plain.manifest);
    const r = await verifyBackup(plainOptions());
    expect(r.problems).toEqual([]);
    expect(r.ok).toBe(true);
    // Everything but the files pg_verifybackup ignores (postgresql.auto.conf here).
    expect(r.checkedFiles).toBe(manifest.files.size - 1);
    expect(r.checkedBytes).toBeGreaterThan(5_000_000);
    expect(r.walSegments).toEqual({ required: requiredSegments(manifest.walRanges, 16 << 20).length, verified: requiredSegments(manifest.walRanges, 16 << 20).length });
    expect(r.walSegments!.required).toBeGreaterThan(0);
    expect(manifest.files.get('pg_tblspc/' + fx.tablespaceOid)).toBeUndefined();
    expect([...manifest.files.keys()].some((k) => k.startsWith(`pg_tblspc/${fx.tablespaceOid}/`))).toBe(true);
    // The file whose name is not UTF-8 was matched by its bytes.
    expect(readFileSync(fx.plain.manifest, 'utf8')).toContain('"Encoded-Path": "65787472612de9ff"');
    expect(manifest.files.get('extra-caf\u00c3\u00a9.txt')?.path).toBe('extra-café.txt');

    const pg = await run(join(PG_BIN, 'pg_verifybackup'), ['-w', fx.walDir, fx.plain.dir]);
    expect(pg.stderr).toBe('');
    expect(pg.code).toBe(0);
  });

  it.each(['gzip', 'lz4', 'zstd', 'none'] as const)('tar %s: every member of base.tar and the tablespace tar checks out', async (kind) => {
    const names = readdirSync(fx.tars[kind].dir).sort();
    expect(names).toContain('backup_manifest');
    expect(names.some((n) => n.startsWith(`${fx.tablespaceOid}.tar`))).toBe(true);
    const manifest = await readManifest(fx.tars[kind].manifest);
    expect([...manifest.files.values()][0]!.algorithm).toBe(fx.tars[kind].algorithm);
    const r = await verifyBackup(tarOptions(fx.tars[kind].dir));
    expect(r.problems).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.checkedFiles).toBe(manifest.files.size - 1);
    expect(r.walSegments!.verified).toBe(r.walSegments!.required);
  });

  it('finds compressed WAL by its magic bytes (gzip, zstd, lz4)', async () => {
    const dir = makeTempDir('wal-compressed');
    const names = fx.walNames();
    names.forEach((name, i) => {
      const tool = ['gzip', 'zstd', 'lz4'][i % 3]!;
      writeFileSync(join(dir, name), execFileSync(tool, ['-q', '-c', join(fx.walDir, name)], { maxBuffer: 64 << 20 }));
    });
    const r = await verifyBackup({ ...tarOptions(fx.tars.none.dir), walLookup: dirWalLookup(dir) });
    expect(r.problems).toEqual([]);
  });

  it('skips the WAL check when no lookup is given', async () => {
    const r = await verifyBackup({ ...plainOptions(), walLookup: undefined });
    expect(r.ok).toBe(true);
    expect(r.walSegments).toBeNull();
  });
});

describe('damage is reported, naming the file', () => {
  it('plain: one flipped byte in a data file and in a tablespace file', async () => {
    const { data, ts, opts } = await plainCopy();
    const rel = biggestFile(data, 'base/5');
    flipByte(join(data, rel), 5000);
    const tsSub = readdirSync(ts)[0]!;
    const tsRel = biggestFile(ts, `${tsSub}/5`);
    flipByte(join(ts, tsRel), 100);
    const r = await verifyBackup(opts);
    expect(r.ok).toBe(false);
    expect(r.problems.map((p) => p.path).sort()).toEqual([rel, `pg_tblspc/${fx.tablespaceOid}/${tsRel}`].sort());
    expect(messages(r).every((m) => m.startsWith('checksum mismatch for file "'))).toBe(true);
    expect(messages(r).join('\n')).toContain(`"${rel}"`);
    // pg_verifybackup sees the same thing (its tablespace symlink points at the original, so only the base file).
    const pg = await run(join(PG_BIN, 'pg_verifybackup'), ['-n', data]);
    expect(pg.code).toBe(1);
    expect(pg.stderr).toContain(`checksum mismatch for file "${rel}"`);
  });

  it('plain: a truncated file, a missing file and an extra file; ignored files are not reported', async () => {
    const { data, opts } = await plainCopy();
    const truncated = biggestFile(data, 'base/1');
    truncateSync(join(data, truncated), 8192);
    rmSync(join(data, 'PG_VERSION'));
    writeFileSync(join(data, 'base/5/999999'), 'not in the manifest');
    // pg_verifybackup's ignore list: these may legitimately change or appear.
    appendFileSync(join(data, 'postgresql.auto.conf'), "restore_command = 'x'\n");
    writeFileSync(join(data, 'recovery.signal'), '');
    writeFileSync(join(data, 'pg_wal', 'junk'), 'x');
    const r = await verifyBackup(opts);
    expect(r.problems).toHaveLength(3);
    const byPath = Object.fromEntries(r.problems.map((p) => [p.path, p.message]));
    expect(byPath[truncated]).toMatch(new RegExp(`^"${truncated}" has size 8192 on disk but size \\d+ in the manifest$`));
    expect(byPath['PG_VERSION']).toBe('"PG_VERSION" is present in the manifest but not on disk');
    expect(byPath['base/5/999999']).toBe('"base/5/999999" is present on disk but not in the manifest');
  });

  it('plain: a missing tablespace directory is one problem, not one per file', async () => {
    const { data, ts, opts } = await plainCopy();
    rmSync(ts, { recursive: true });
    rmSync(join(data, 'pg_tblspc', String(fx.tablespaceOid)));
    const r = await verifyBackup({ ...opts, tablespaceDirs: new Map() });
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]!.path).toBe(`pg_tblspc/${fx.tablespaceOid}`);
    expect(r.problems[0]!.message).toMatch(/tablespace \d+ is missing/);
  });

  it('tar: one flipped byte inside a member, uncompressed and gzip-compressed', async () => {
    const { dir, opts } = await tarCopy('none');
    const tar = readFileSync(join(dir, 'base.tar'));
    const member = findMember(tar, (name, size) => name.startsWith('base/5/') && size >= 16384);
    tar[member.dataOffset + 1234] = tar[member.dataOffset + 1234]! ^ 0x01;
    writeFileSync(join(dir, 'base.tar'), tar);
    let r = await verifyBackup(opts);
    expect(r.problems).toEqual([{ path: member.name, message: expect.stringMatching(new RegExp(`^checksum mismatch for file "${member.name}" in archive "base.tar"`)) as unknown }]);

    // The same damage inside a gzip'd archive (found by magic, whatever its name).
    const gz = await tarCopy('gzip');
    const inner = gunzipSync(readFileSync(join(gz.dir, 'base.tar.gz')));
    const m2 = findMember(inner, (name) => name === member.name);
    inner[m2.dataOffset + 1234] = inner[m2.dataOffset + 1234]! ^ 0x01;
    writeFileSync(join(gz.dir, 'base.tar.gz'), gzipSync(inner, { level: 1 }));
    r = await verifyBackup(gz.opts);
    expect(r.problems).toEqual([{ path: member.name, message: expect.stringContaining(`checksum mismatch for file "${member.name}" in archive "base.tar.gz"`) as unknown }]);
  });

  it('tar: a truncated compressed archive is one problem naming it', async () => {
    const { dir, opts } = await tarCopy('zstd');
    const path = join(dir, 'base.tar.zst');
    truncateSync(path, Math.floor(statSync(path).size / 2));
    const r = await verifyBackup(opts);
    expect(r.ok).toBe(false);
    expect(r.problems.every((p) => p.path === 'base.tar.zst' || r.problems.indexOf(p) < 3)).toBe(true);
    expect(messages(r).join('\n')).toMatch(/archive "base\.tar\.zst" is damaged or truncated \(zstd\)/);
    expect(messages(r).join('\n')).toMatch(/\d+ files of the manifest could not be checked because archive "base\.tar\.zst"/);
    expect(r.problems.length).toBeLessThanOrEqual(3);
  });

  it('tar: a missing tablespace archive and an unexpected file', async () => {
    const { dir, opts } = await tarCopy('lz4');
    rmSync(join(dir, `${fx.tablespaceOid}.tar.lz4`));
    writeFileSync(join(dir, 'notes.txt'), 'hello');
    const r = await verifyBackup(opts);
    expect(r.problems.map((p) => p.path).sort()).toEqual([`${fx.tablespaceOid}.tar`, 'notes.txt']);
    expect(messages(r).join('\n')).toContain('file "notes.txt" is not expected in a tar format backup');
  });

  it('a missing, a truncated and a foreign WAL segment', async () => {
    const manifest = await readManifest(fx.plain.manifest);
    const needed = requiredSegments(manifest.walRanges, 16 << 20).map((s) => s.name);
    const dir = makeTempDir('wal-damaged');
    for (const name of fx.walNames()) copyFileSync(join(fx.walDir, name), join(dir, name));
    rmSync(join(dir, needed[0]!));
    let r = await verifyBackup({ ...plainOptions(), walLookup: dirWalLookup(dir) });
    expect(r.problems).toEqual([{ path: needed[0], message: expect.stringMatching(new RegExp(`^WAL segment ${needed[0]} is missing from the archive \\(needed for timeline 1 from`)) as unknown }]);
    expect(r.walSegments).toEqual({ required: needed.length, verified: needed.length - 1 });

    // Half a segment.
    const half = readFileSync(join(fx.walDir, needed[0]!)).subarray(0, 8 << 20);
    writeFileSync(join(dir, needed[0]!), half);
    r = await verifyBackup({ ...plainOptions(), walLookup: dirWalLookup(dir) });
    expect(messages(r)).toEqual([`WAL segment ${needed[0]} has ${8 << 20} bytes, expected ${16 << 20} (truncated or not a complete segment)`]);

    // Another segment under this name: its page addresses give it away.
    const other = fx.walNames().find((n) => n !== needed[0])!;
    copyFileSync(join(fx.walDir, other), join(dir, needed[0]!));
    r = await verifyBackup({ ...plainOptions(), walLookup: dirWalLookup(dir) });
    expect(messages(r)[0]).toMatch(new RegExp(`^WAL segment ${needed[0]}: page at offset 0: page address [0-9A-F]+/[0-9A-F]+, expected`));

    // Another cluster's segment (system identifier differs).
    const foreign = readFileSync(join(fx.walDir, needed[0]!));
    foreign.writeBigUInt64LE(foreign.readBigUInt64LE(24) + 1n, 24);
    writeFileSync(join(dir, needed[0]!), foreign);
    r = await verifyBackup({ ...plainOptions(), walLookup: dirWalLookup(dir) });
    expect(messages(r)[0]).toMatch(/: page at offset 0: system identifier \d+, expected \d+ \(WAL of another cluster\)$/);
  });

  it('a tampered manifest: a changed checksum or a changed checksum line', async () => {
    const { data, opts } = await plainCopy();
    const path = join(data, 'backup_manifest');
    const original = readFileSync(path, 'utf8');
    const entry = /"Path": "PG_VERSION", "Size": 3, [^\n]*"Checksum": "([0-9a-f]{8})"/.exec(original)!;
    writeFileSync(path, original.replace(entry[0], entry[0].replace(entry[1]!, '00000000')));
    let r = await verifyBackup(opts);
    expect(r.ok).toBe(false);
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]!.path).toBe('backup_manifest');
    expect(r.problems[0]!.message).toContain('manifest checksum mismatch');

    writeFileSync(path, original.replace(/"Manifest-Checksum": "([0-9a-f])/, (_m, c: string) => `"Manifest-Checksum": "${c === '0' ? '1' : '0'}`));
    r = await verifyBackup(opts);
    expect(messages(r)).toEqual([expect.stringContaining('manifest checksum mismatch')]);

    rmSync(path);
    r = await verifyBackup(opts);
    expect(messages(r)).toEqual([expect.stringContaining('no such file: the backup has no manifest')]);
  });

  it('a system identifier that is not the catalog’s', async () => {
    const r = await verifyBackup({ ...plainOptions(), systemIdentifier: '12345', walLookup: undefined });
    expect(r.problems).toEqual([{ path: 'global/pg_control', message: `global/pg_control: backup catalog system identifier is 12345, but control file has ${fx.systemIdentifier}` }]);
  });
});

describe('WAL pages', () => {
  /** An empty backup whose manifest needs exactly one whole segment. */
  function walOnlyBackup(segment: string): VerifyBackupOptions {
    const dir = makeTempDir('wal-only');
    const segNo = BigInt(`0x${segment.slice(8, 16)}`) * 256n + BigInt(`0x${segment.slice(16)}`);
    const start = segNo * BigInt(16 << 20);
    const lsn = (n: bigint) => `${(n >> 32n).toString(16).toUpperCase()}/${(n & 0xffffffffn).toString(16).toUpperCase()}`;
    const body = `{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n],\n"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "${lsn(start)}", "End-LSN": "${lsn(start + BigInt(16 << 20))}" }\n],\n`;
    writeFileSync(join(dir, 'backup_manifest'), `${body}"Manifest-Checksum": "${createHash('sha256').update(body).digest('hex')}"}\n`);
    return { dataDir: dir, format: 'plain', manifestPath: join(dir, 'backup_manifest'), systemIdentifier: fx.systemIdentifier, pgMajor: 15 };
  }

  it('accepts the empty pages a WAL switch leaves, and nothing after them', async () => {
    // Every archived segment here was closed by a switch (backups end with one).
    const name = fx.walNames()[1]!;
    const bytes = readFileSync(join(fx.walDir, name));
    let firstZero = -1;
    for (let off = 8192; off < bytes.length; off += 8192) {
      if (bytes.subarray(off, off + 24).every((b) => b === 0)) {
        firstZero = off;
        break;
      }
    }
    expect(firstZero).toBeGreaterThan(0);
    const dir = makeTempDir('wal-pages');
    const opts = { ...walOnlyBackup(name), walLookup: dirWalLookup(dir) };
    writeFileSync(join(dir, name), bytes);
    expect((await verifyBackup(opts)).problems).toEqual([]);

    // A page header after the padding: not what PostgreSQL writes.
    const late = Buffer.from(bytes);
    bytes.copy(late, late.length - 8192, 0, 24);
    writeFileSync(join(dir, name), late);
    expect(messages(await verifyBackup(opts))).toEqual([
      `WAL segment ${name}: page at offset ${late.length - 8192}: WAL page after the empty pages that start at offset ${firstZero} (only a WAL switch leaves empty pages, and they run to the end of the segment)`,
    ]);

    // A page from elsewhere in the middle of the WAL.
    const moved = Buffer.from(bytes);
    bytes.copy(moved, 8192, 0, 24);
    moved.writeUInt16LE(moved.readUInt16LE(8192 + 2) & ~0x0002, 8192 + 2);
    writeFileSync(join(dir, name), moved);
    expect(messages(await verifyBackup(opts))[0]).toMatch(/: page at offset 8192: page address [0-9A-F/]+, expected [0-9A-F/]+ \(the file holds another segment\)$/);

    // Another major's WAL.
    const magic = Buffer.from(bytes);
    magic.writeUInt16LE(0xd113, 0);
    writeFileSync(join(dir, name), magic);
    expect(messages(await verifyBackup(opts))[0]).toBe(`WAL segment ${name}: page at offset 0: invalid magic number 0xD113, expected 0xD110 (PostgreSQL 15)`);
  });
});

/** A tar member's name and where its data starts (ustar headers, as PostgreSQL writes them). */
function findMember(tar: Buffer, pick: (name: string, size: number) => boolean): { name: string; dataOffset: number } {
  for (let off = 0; off + 512 <= tar.length; ) {
    const header = tar.subarray(off, off + 512);
    if (header.every((b) => b === 0)) break;
    const name = header.subarray(0, 100).toString('latin1').replace(/\0.*$/s, '');
    const size = parseInt(header.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim() || '0', 8);
    const type = String.fromCharCode(header[156]!);
    if ((type === '0' || type === '\0') && pick(name, size)) return { name: name.replace(/^\.\//, ''), dataOffset: off + 512 };
    off += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error('no such member');
}
