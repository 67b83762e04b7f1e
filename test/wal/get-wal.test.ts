import { execFile, execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { archiveWal } from '../../src/wal/archiver.ts';
import { BARKEEP_BIN, barkeep } from '../support/cli.ts';
import { makeTempDir } from '../support/tmp.ts';
import { makeArchiveHome, makeWalSegments, type ArchiveHome, type WalFixture } from './fixtures.ts';

// `barkeep get-wal` as restore_command and barman-wal-restore use it: exact bytes
// whatever the stored compression, Barman's lookup order, --peek, exit codes.

let wal: WalFixture;
const seg = (i: number) => wal.names[i]!;
const original = (i: number) => readFileSync(join(wal.dir, seg(i)));

beforeAll(async () => {
  wal = await makeWalSegments(3);
});

/** get-wal with stdout captured as bytes. */
function getWal(args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BARKEEP_BIN, ...args], { encoding: 'buffer', maxBuffer: 64 << 20, cwd: '/tmp' }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr: stderr.toString() });
    });
  });
}

function put(h: ArchiveHome, dir: 'incoming' | 'streaming', index: number, as?: string): void {
  copyFileSync(join(wal.dir, seg(index)), join(h[dir], as ?? seg(index)));
}

describe.each(['none', 'gzip', 'bzip2', 'lz4', 'zstd', 'xz'])('a WAL archived with compression %s', (compression) => {
  let h: ArchiveHome;
  beforeAll(async () => {
    h = makeArchiveHome({ compression, streaming_archiver: 'off' }, `get-wal-${compression}`);
    put(h, 'incoming', 0);
    await archiveWal(h.server);
  });

  it('comes out byte-identical on stdout', async () => {
    const r = await getWal(['-c', h.conf, 'get-wal', 'pg', seg(0)]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.equals(original(0))).toBe(true);
  });

  it('and with -o into a directory, durably under its own name', async () => {
    const out = makeTempDir('get-wal-out');
    const r = await getWal(['-c', h.conf, 'get-wal', '-o', out, 'pg', seg(0)]);
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(`Sending WAL '${seg(0)}' for server 'pg' into '${join(out, seg(0))}' file\n`);
    expect(readdirSync(out)).toEqual([seg(0)]);
    expect(readFileSync(join(out, seg(0))).equals(original(0))).toBe(true);
  });

  it('-z / -j recompress for the client; --keep-compression sends the stored bytes', async () => {
    const gz = await getWal(['-c', h.conf, 'get-wal', '-z', 'pg', seg(0)]);
    expect(execFileSync('gzip', ['-dc'], { input: gz.stdout, maxBuffer: 64 << 20 }).equals(original(0))).toBe(true);
    const bz = await getWal(['-c', h.conf, 'get-wal', '-j', 'pg', seg(0)]);
    expect(execFileSync('bzip2', ['-dc'], { input: bz.stdout, maxBuffer: 64 << 20 }).equals(original(0))).toBe(true);
    const kept = await getWal(['-c', h.conf, 'get-wal', '--keep-compression', 'pg', seg(0)]);
    expect(kept.stdout.equals(readFileSync(join(h.wals, seg(0).slice(0, 16), seg(0))))).toBe(true);
  });
});

describe('get-wal lookups', () => {
  let h: ArchiveHome;
  beforeAll(() => {
    h = makeArchiveHome({ compression: 'gzip' });
  });

  it('finds WALs still in incoming/ and streaming/, and .partial files only with --partial', async () => {
    put(h, 'incoming', 0);
    put(h, 'streaming', 1);
    put(h, 'streaming', 2, `${seg(2)}.partial`);
    expect((await getWal(['-c', h.conf, 'get-wal', 'pg', seg(0)])).stdout.equals(original(0))).toBe(true);
    expect((await getWal(['-c', h.conf, 'get-wal', 'pg', seg(1)])).stdout.equals(original(1))).toBe(true);
    const missing = await getWal(['-c', h.conf, 'get-wal', 'pg', seg(2)]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(`ERROR: WAL file '${seg(2)}' not found in server 'pg'\n`);
    const partial = await getWal(['-c', h.conf, 'get-wal', '--partial', 'pg', seg(2)]);
    expect(partial.code).toBe(0);
    expect(partial.stdout.equals(original(2))).toBe(true);
    const out = makeTempDir('get-wal-partial');
    const r = await getWal(['-c', h.conf, 'get-wal', '-P', '-o', out, 'pg', seg(2)]);
    expect(r.stdout.toString()).toBe(`Sending WAL '${seg(2)}.partial' for server 'pg' into '${join(out, seg(2))}' file\n`);
    expect(readFileSync(join(out, seg(2))).equals(original(2))).toBe(true);
  });

  it('serves a partial archived into wals/ after a promotion, decompressed', async () => {
    const a = makeArchiveHome({ compression: 'zstd', archiver: 'off' });
    put(a, 'streaming', 0, `${seg(0)}.partial`);
    put(a, 'streaming', 1, `${seg(1).replace(/^00000001/, '00000002')}.partial`);
    await archiveWal(a.server);
    expect(existsSync(join(a.wals, seg(0).slice(0, 16), `${seg(0)}.partial`))).toBe(true);
    const r = await getWal(['-c', a.conf, 'get-wal', '-P', 'pg', seg(0)]);
    expect(r.stdout.equals(original(0))).toBe(true);
  });

  it('--peek lists existing WALs from the given one, across the end of a log', async () => {
    const p = makeArchiveHome({ streaming_archiver: 'off' });
    const names = ['0000000100000003000000FE', '0000000100000003000000FF', '000000010000000400000000', '000000010000000400000001', '000000010000000400000003'];
    for (const n of names.slice(0, 3)) {
      mkdirSync(join(p.wals, n.slice(0, 16)), { recursive: true });
      writeFileSync(join(p.wals, n.slice(0, 16), n), 'x');
    }
    writeFileSync(join(p.incoming, names[3]!), 'x');
    writeFileSync(join(p.incoming, names[4]!), 'x');
    let r = await barkeep(['-c', p.conf, 'get-wal', '--peek', '10', 'pg', names[0]!]);
    expect(r.stdout).toBe(`${names.slice(0, 4).join('\n')}\n`);
    expect(r.code).toBe(0);
    r = await barkeep(['-c', p.conf, 'get-wal', '-p', '2', 'pg', names[0]!]);
    expect(r.stdout).toBe(`${names.slice(0, 2).join('\n')}\n`);
    r = await barkeep(['-c', p.conf, 'get-wal', '-p', '3', 'pg', '000000010000000500000000']);
    expect(r.stdout).toBe('');
    expect(r.code).toBe(0);
    r = await barkeep(['-c', p.conf, 'get-wal', '-p', '0', 'pg', names[0]!]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("'0' must be a positive integer");
  });

  it('exit 3 for a bad WAL name or an unusable output directory; --test answers', async () => {
    let r = await barkeep(['-c', h.conf, 'get-wal', 'pg', '../../etc/passwd']);
    expect(r.code).toBe(3);
    expect(r.stderr).toBe("ERROR: '../../etc/passwd' is not a valid wal file name\n");
    r = await barkeep(['-c', h.conf, 'get-wal', '-o', '/nonexistent/dir', 'pg', seg(0)]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`ERROR: Unable to open '/nonexistent/dir/${seg(0)}' file`);
    r = await barkeep(['-c', h.conf, 'get-wal', '--test', 'pg', 'DUMMY']);
    expect(r.stdout).toBe('Ready to retrieve WAL files from the server pg\n');
    expect(r.code).toBe(0);
    r = await barkeep(['-c', h.conf, 'get-wal', '-z', '--keep-compression', 'pg', seg(0)]);
    expect(r.stderr).toContain('ERROR: argument `gzip` not allowed with argument `keep-compression`');
    expect(r.code).toBe(1);
  });

  it('fails with exit 1, naming the file, when the stored WAL does not decompress', async () => {
    const c = makeArchiveHome();
    const name = '000000010000000000000066';
    mkdirSync(join(c.wals, name.slice(0, 16)), { recursive: true });
    const stored = join(c.wals, name.slice(0, 16), name);
    writeFileSync(stored, Buffer.concat([Buffer.from('1f8b08', 'hex'), Buffer.alloc(200, 3)]));
    let r = await barkeep(['-c', c.conf, 'get-wal', 'pg', name]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^ERROR: Error sending WAL file '${stored}': `));
    writeFileSync(stored, Buffer.concat([Buffer.from('ff060000734e61507059', 'hex'), Buffer.alloc(20)]));
    r = await barkeep(['-c', c.conf, 'get-wal', 'pg', name]);
    expect(r.stderr).toBe('ERROR: snappy-compressed WAL files are not supported by barkeep (decompress them with python-snappy first)\n');
    expect(r.code).toBe(1);
  });

  it('names the SSH client in errors when run through SSH', async () => {
    const r = await barkeep(['-c', h.conf, 'get-wal', 'pg', '000000010000000000000077'], { env: { SSH_CONNECTION: '10.1.2.3 50000 10.1.2.4 22' } });
    expect(r.stderr).toBe("ERROR: WAL file '000000010000000000000077' not found in server 'pg' (SSH host: 10.1.2.3)\n");
  });
});
