import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pack } from 'tar-stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { BARKEEP_BIN, barkeep } from '../support/cli.ts';
import { makeTempDir } from '../support/tmp.ts';
import { makeArchiveHome, makeWalSegments, type ArchiveHome, type WalFixture } from './fixtures.ts';

// `barkeep put-wal` receiving what barman-wal-archive sends: a PAX tar stream with
// the WAL and a SHA256SUMS (or MD5SUMS) member, written by Python's tarfile.

let wal: WalFixture;
const seg = (i: number) => wal.names[i]!;
const segPath = (i: number) => join(wal.dir, seg(i));

const PYTHON = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['--version']).status === 0);

// ChecksumTarFile from barman/clients/walarchive.py (Barman 3.17), driven the way
// RemotePutWal drives it: tarfile.open(mode="w|") on a pipe, PAX format, one WAL
// added with tar.add(wal_path, basename), the checksum member appended on close.
// argv: hash algorithm, checksum file name, WAL path, [checksum to write instead].
const WALARCHIVE_PY = `
import copy, hashlib, os, sys, tarfile
from io import BytesIO
BUFSIZE = 16 * 1024
algo, sums_name, wal_path = sys.argv[1:4]
forced = sys.argv[4] if len(sys.argv) > 4 else None

def hashCopyfileobj(src, dst, length=None, hash_algorithm="sha256"):
    checksum = hashlib.new(hash_algorithm)
    if length == 0:
        return checksum.hexdigest()
    blocks, remainder = divmod(length, BUFSIZE)
    for _ in range(blocks):
        buf = src.read(BUFSIZE)
        checksum.update(buf)
        dst.write(buf)
    if remainder != 0:
        buf = src.read(remainder)
        checksum.update(buf)
        dst.write(buf)
    return checksum.hexdigest()

class ChecksumTarInfo(tarfile.TarInfo):
    def __init__(self, *args, **kwargs):
        super(ChecksumTarInfo, self).__init__(*args, **kwargs)
        self.data_checksum = None

class ChecksumTarFile(tarfile.TarFile):
    def __init__(self, *args, **kwargs):
        super(ChecksumTarFile, self).__init__(*args, **kwargs)
        self.hash_algorithm = "sha256"
        self.HASHSUMS_FILE = "SHA256SUMS"
    tarinfo = ChecksumTarInfo
    format = tarfile.PAX_FORMAT
    def addfile(self, tarinfo, fileobj=None):
        self._check("aw")
        tarinfo = copy.copy(tarinfo)
        buf = tarinfo.tobuf(self.format, self.encoding, self.errors)
        self.fileobj.write(buf)
        self.offset += len(buf)
        if fileobj is not None:
            tarinfo.data_checksum = hashCopyfileobj(fileobj, self.fileobj, tarinfo.size, self.hash_algorithm)
            blocks, remainder = divmod(tarinfo.size, tarfile.BLOCKSIZE)
            if remainder > 0:
                self.fileobj.write(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))
                blocks += 1
            self.offset += blocks * tarfile.BLOCKSIZE
        self.members.append(tarinfo)
    def close(self):
        if self.closed:
            return
        if self.mode in "aw":
            with BytesIO() as hashsums:
                for tarinfo in self.members:
                    line = "%s *%s\\n" % (forced or tarinfo.data_checksum, tarinfo.name)
                    hashsums.write(line.encode())
                hashsums.seek(0, os.SEEK_END)
                size = hashsums.tell()
                hashsums.seek(0, os.SEEK_SET)
                tarinfo = self.tarinfo(self.HASHSUMS_FILE)
                tarinfo.size = size
                self.addfile(tarinfo, hashsums)
        super(ChecksumTarFile, self).close()

out = sys.stdout.buffer
tar = ChecksumTarFile.open(mode="w|", fileobj=out)
tar.hash_algorithm = algo
tar.HASHSUMS_FILE = sums_name
tar.add(wal_path, os.path.basename(wal_path))
tar.close()
out.flush()
`;

function walArchiveTar(walPath: string, opts: { md5?: boolean; forcedChecksum?: string } = {}): Buffer {
  const args = ['-c', WALARCHIVE_PY, opts.md5 ? 'md5' : 'sha256', opts.md5 ? 'MD5SUMS' : 'SHA256SUMS', walPath];
  if (opts.forcedChecksum) args.push(opts.forcedChecksum);
  return execFileSync(PYTHON!, args, { maxBuffer: 64 << 20 });
}

function putWal(conf: string, input: Buffer, env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BARKEEP_BIN, '-c', conf, 'put-wal', 'pg'], { env: { ...process.env, ...env }, cwd: '/tmp' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.on('error', () => undefined); // put-wal may refuse before reading everything
    child.stdin.end(input);
  });
}

/** A tar built member by member, for the malformed cases Python's client never sends. */
async function customTar(members: { name: string; data?: Buffer | string; type?: 'file' | 'symlink' | 'directory'; linkname?: string }[]): Promise<Buffer> {
  const p = pack();
  for (const m of members) {
    const data = m.data === undefined ? undefined : Buffer.from(m.data);
    await new Promise<void>((resolve, reject) => {
      const header = { name: m.name, type: m.type ?? 'file', ...(m.linkname ? { linkname: m.linkname } : {}), ...(data ? { size: data.length } : {}) };
      if (data) p.entry(header, data, (err) => (err ? reject(err) : resolve()));
      else p.entry(header, (err) => (err ? reject(err) : resolve()));
    });
  }
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of p) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const visible = (dir: string) => readdirSync(dir);

beforeAll(async () => {
  wal = await makeWalSegments(3);
});

describe.skipIf(!PYTHON)('put-wal with the tar barman-wal-archive makes', () => {
  let h: ArchiveHome;
  beforeAll(() => {
    h = makeArchiveHome({ compression: 'gzip', streaming_archiver: 'off' });
  });

  it('stores the WAL in incoming/ with its mtime, and archive-wal takes it from there', async () => {
    const r = await putWal(h.conf, walArchiveTar(segPath(0)));
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(visible(h.incoming)).toEqual([seg(0)]);
    const stored = join(h.incoming, seg(0));
    expect(readFileSync(stored).equals(readFileSync(segPath(0)))).toBe(true);
    // PAX keeps sub-second mtimes; the archiver records this time in xlog.db.
    expect(Math.abs(statSync(stored).mtimeMs - statSync(segPath(0)).mtimeMs)).toBeLessThan(0.01);
    const a = await barkeep(['-c', h.conf, 'archive-wal', 'pg']);
    expect(a.stdout).toBe(`Processing xlog segments from file archival for pg\n\t${seg(0)}\n`);
  });

  it('accepts the MD5SUMS variant (--md5, and Barman before 3.13)', async () => {
    const r = await putWal(h.conf, walArchiveTar(segPath(1), { md5: true }));
    expect(r.code).toBe(0);
    expect(readFileSync(join(h.incoming, seg(1))).equals(readFileSync(segPath(1)))).toBe(true);
  });

  it('an identical re-delivery is accepted silently; different content goes to errors/ and still exits 0', async () => {
    let r = await putWal(h.conf, walArchiveTar(segPath(1)));
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(visible(h.errors)).toEqual([]);

    const impostor = join(makeTempDir('impostor'), seg(1));
    copyFileSync(segPath(2), impostor);
    r = await putWal(h.conf, walArchiveTar(impostor));
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      `\tError: Duplicate Files Detected with Mismatched Checksums. File ${seg(1)} already exists on server pg with checksum ${sha256(readFileSync(segPath(1)))}, but the checksum of the incoming file is${sha256(readFileSync(segPath(2)))}. The file has been moved to the errors directory.\n`,
    );
    expect(readFileSync(join(h.incoming, seg(1))).equals(readFileSync(segPath(1)))).toBe(true);
    const errors = visible(h.errors);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(new RegExp(`^${seg(1)}\\.\\d{8}T\\d{6}Z\\.duplicate$`));
    expect(readFileSync(join(h.errors, errors[0]!)).equals(readFileSync(segPath(2)))).toBe(true);
  });

  it('refuses a file whose checksum does not match, leaving nothing in incoming/', async () => {
    const c = makeArchiveHome();
    const r = await putWal(c.conf, walArchiveTar(segPath(2), { forcedChecksum: 'a'.repeat(64) }));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`ERROR: Bad file checksum '${sha256(readFileSync(segPath(2)))}' (should be ${'a'.repeat(64)}) for file '${seg(2)}' in put-wal for server 'pg'\n`);
    expect(readdirSync(c.incoming)).toEqual([]);
  });

  it('refuses a tar cut short in transit, leaving nothing behind', async () => {
    const c = makeArchiveHome();
    const tar = walArchiveTar(segPath(0));
    const r = await putWal(c.conf, tar.subarray(0, 5 * 1024 * 1024));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ERROR: Invalid tar stream in put-wal for server 'pg'/);
    expect(readdirSync(c.incoming)).toEqual([]);
  });
});

describe('put-wal refuses malformed input', () => {
  let c: ArchiveHome;
  beforeAll(() => {
    c = makeArchiveHome();
  });
  const data = Buffer.from('not really a WAL');
  const sums = (name: string, content = data) => `${sha256(content)} *${name}\n`;

  it.each([
    ['a symlink', [{ name: seg0(), type: 'symlink' as const, linkname: '/etc/passwd' }], () => `Unsupported file type 'symlink' for file '${seg0()}' in put-wal for server 'pg'`],
    ['a path with a directory', [{ name: `sub/${seg0()}`, data }], () => `Unsupported filename 'sub/${seg0()}' in put-wal for server 'pg'`],
    ['a parent-directory name', [{ name: '..', data }], () => "Unsupported filename '..' in put-wal for server 'pg'"],
    ['a file without checksum', [{ name: seg0(), data }, { name: 'SHA256SUMS', data: '' }], () => `Missing checksum for file '${seg0()}' in put-wal for server 'pg'`],
    ['a checksum without file', [{ name: 'SHA256SUMS', data: sums(seg0()) }], () => `Checksum without corresponding file '${seg0()}' in put-wal for server 'pg'`],
  ])('%s', async (_what, members, message) => {
    const r = await putWal(c.conf, await customTar(members));
    expect(r.stderr).toBe(`ERROR: ${message()}\n`);
    expect(r.code).toBe(1);
    expect(readdirSync(c.incoming)).toEqual([]);
  });

  it('accepts ./-prefixed names and `sha256sum` text-mode lines, and names the SSH client', async () => {
    const name = seg0();
    const r = await putWal(c.conf, await customTar([{ name: `./${name}`, data }, { name: 'SHA256SUMS', data: `${sha256(data)}  ./${name}\n` }]), { SSH_CONNECTION: '10.9.8.7 1 2 3' });
    expect(r.code).toBe(0);
    expect(readFileSync(join(c.incoming, name)).equals(data)).toBe(true);
    const bad = await putWal(c.conf, await customTar([{ name: `${name}x`, type: 'directory' }]), { SSH_CONNECTION: '10.9.8.7 1 2 3' });
    expect(bad.stderr).toBe(`ERROR: Unsupported file type 'directory' for file '${name}x' in put-wal for server 'pg' (SSH host: 10.9.8.7)\n`);
  });

  it('--test answers', async () => {
    const r = await barkeep(['-c', c.conf, 'put-wal', '--test', 'pg']);
    expect(r.stdout).toBe('Ready to accept WAL files for the server pg\n');
  });
});

function seg0(): string {
  // Malformed tars need no real WAL; the name just has to look like one.
  return '000000010000000000000042';
}

// The real client, installed from Debian's barman-cli, with `ssh` replaced by a
// script that runs the remote command locally as sshd would (through a shell).
const WAL_ARCHIVE = '/usr/bin/barman-wal-archive';
describe.skipIf(!existsSync(WAL_ARCHIVE))('interoperability with the real barman-wal-archive', () => {
  it('archive_command = barman-wal-archive HOST SERVER %p delivers into incoming/, retries are harmless', async () => {
    const h = makeArchiveHome({ compression: 'gzip', streaming_archiver: 'off' });
    const bin = makeTempDir('fake-ssh');
    writeFileSync(
      join(bin, 'ssh'),
      '#!/bin/sh\nwhile [ $# -gt 0 ]; do\n  case "$1" in\n    -p|-l|-i|-o|-F) shift 2 ;;\n    -*) shift ;;\n    *) shift; break ;;\n  esac\ndone\nexec sh -c "$*"\n',
    );
    writeFileSync(join(bin, 'barman'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(BARKEEP_BIN)} "$@"\n`);
    chmodSync(join(bin, 'ssh'), 0o755);
    chmodSync(join(bin, 'barman'), 0o755);
    const env = { ...process.env, PATH: `${bin}:${process.env['PATH']}` };
    const run = (args: string[]) => spawnSync(WAL_ARCHIVE, args, { env, encoding: 'utf8', cwd: '/tmp' });

    const test = run(['-c', h.conf, '--test', 'backup-host', 'pg', segPath(0)]);
    expect(test.stdout).toContain('Ready to accept WAL files for the server pg');
    expect(test.status).toBe(0);
    for (const i of [0, 1, 1]) {
      const r = run(['-c', h.conf, 'backup-host', 'pg', segPath(i)]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
    expect(readdirSync(h.incoming).sort()).toEqual([seg(0), seg(1)]);
    for (const i of [0, 1]) expect(readFileSync(join(h.incoming, seg(i))).equals(readFileSync(segPath(i)))).toBe(true);
    const a = await barkeep(['-c', h.conf, 'archive-wal', 'pg']);
    expect(a.stdout).toBe(`Processing xlog segments from file archival for pg\n\t${seg(0)}\n\t${seg(1)}\n`);
    const back = spawnSync(process.execPath, [BARKEEP_BIN, '-c', h.conf, 'get-wal', 'pg', seg(1)], { maxBuffer: 64 << 20 });
    expect(back.stdout.equals(readFileSync(segPath(1)))).toBe(true);
  });
});
