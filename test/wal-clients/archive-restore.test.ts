import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { gunzipSync, gzipSync, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startSshd, type SshClientSetup, type Sshd } from '../support/sshd.ts';
import { makeTempDir } from '../support/tmp.ts';
import { ARCHIVE_BIN, clientDir, remoteFor, RESTORE_BIN, runOurs, writeServerConfig, writeShim } from './support.ts';
import { closedSegments } from './support-wal.ts';

// barkeep-wal-archive and barkeep-wal-restore end to end, as PostgreSQL runs
// them: as the postgres OS user, over a real sshd, into a backup server whose
// remote command is the default `barkeep` (found on the session's PATH). The
// remote is the real `barkeep put-wal`/`get-wal` once the build has them,
// otherwise a stub that applies Barman's put-wal rules (stub-remote.ts).

const putWal = remoteFor('put-wal');
const getWal = remoteFor('get-wal');

describe('barkeep-wal-archive and barkeep-wal-restore over ssh', () => {
  let cluster: PgCluster;
  let sshd: Sshd;
  let ssh: SshClientSetup;
  let conf: string;
  let home: string;
  let remoteBin: string;
  let wals: string[];
  let base: string[];

  const incoming = (name = '') => join(home, 'pg', 'incoming', name);
  const archive = (args: string[]) => runOurs(ARCHIVE_BIN, [...base, ...args], { ssh });
  const restore = (args: string[]) => runOurs(RESTORE_BIN, [...base, ...args], { ssh });
  // One `barkeep` on the remote PATH; put-wal and get-wal may come from different builds.
  const useRemote = (command: string) => writeShim(remoteBin, 'barkeep', command);

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    wals = await closedSegments(cluster, 3, clientDir('pg_wal'));
    remoteBin = makeTempDir('remote-bin');
    useRemote(putWal.command);
    sshd = await startSshd({ users: ['root'], env: { PATH: `${remoteBin}:/usr/local/bin:/usr/bin:/bin` } });
    ssh = sshd.clientSetup('root', 'postgres');
    ({ conf, home } = writeServerConfig(makeTempDir('backup-server')));
    mkdirSync(incoming(), { recursive: true });
    base = ['-U', 'root', '--port', String(sshd.port), '-c', conf];
  });

  afterAll(async () => {
    await sshd?.stop();
    await cluster?.destroy();
  });

  describe(`archive (remote put-wal: ${putWal.real ? 'barkeep' : 'stub'})`, () => {
    beforeAll(() => useRemote(putWal.command));

    it('sends a real WAL segment that arrives byte for byte in incoming/', async () => {
      const r = await archive(['127.0.0.1', 'pg', wals[0]!]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(readFileSync(incoming(basename(wals[0]!))).equals(readFileSync(wals[0]!))).toBe(true);
      if (!putWal.real) expect(JSON.parse(readFileSync(join(home, 'pg', 'last-put-wal.json'), 'utf8'))).toEqual({ algorithm: 'sha256', files: [basename(wals[0]!)] });
    });

    it('--md5 sends MD5SUMS instead', async () => {
      const r = await archive(['--md5', '127.0.0.1', 'pg', wals[1]!]);
      expect(r.code).toBe(0);
      expect(readFileSync(incoming(basename(wals[1]!))).equals(readFileSync(wals[1]!))).toBe(true);
      if (!putWal.real) expect(JSON.parse(readFileSync(join(home, 'pg', 'last-put-wal.json'), 'utf8')).algorithm).toBe('md5');
    });

    it('--test asks put-wal --test and prints its answer', async () => {
      const r = await archive(['--test', '127.0.0.1', 'pg', 'DUMMY']);
      expect(r).toEqual({ code: 0, stdout: 'Ready to accept WAL files for the server pg\n\n', stderr: '' });
    });

    it.each([
      ['-z', (b: Buffer) => gunzipSync(b), '1f8b'],
      ['--zstd', (b: Buffer) => zstdDecompressSync(b), '28b52ffd'],
    ] as const)('%s compresses on the client', async (flag, decompress, magic) => {
      const dir = clientDir('compressed');
      const copy = join(dir, basename(wals[2]!));
      writeFileSync(copy, readFileSync(wals[2]!));
      const spare = join(home, 'pg', 'incoming', basename(copy));
      // put-wal keeps an existing different file and sets the newcomer aside in errors/.
      rmSync(spare, { force: true });
      const r = await archive([flag, '--compression-level', 'high', '127.0.0.1', 'pg', copy]);
      expect(r.code).toBe(0);
      const stored = readFileSync(spare);
      expect(stored.subarray(0, magic.length / 2).toString('hex')).toBe(magic);
      expect(decompress(stored).equals(readFileSync(wals[2]!))).toBe(true);
      // Leave incoming/ as the restore tests expect it: this WAL uncompressed.
      writeFileSync(spare, readFileSync(wals[2]!));
    });

    it('a missing or directory WAL_PATH fails with status 2 before connecting', async () => {
      const missing = await archive(['127.0.0.1', 'pg', '/nonexistent/000000010000000000000042']);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toBe("ERROR: Cannot read WAL_PATH '/nonexistent/000000010000000000000042': no such file\n");
      const dir = await archive(['127.0.0.1', 'pg', '/tmp']);
      expect(dir).toEqual({ code: 2, stdout: '', stderr: 'ERROR: WAL_PATH cannot be a directory: /tmp\n' });
    });

    it('an unreachable backup server is status 3; a failing put-wal passes its status on', async () => {
      const closed = await runOurs(ARCHIVE_BIN, ['-U', 'root', '--port', '1', '127.0.0.1', 'pg', wals[0]!], { ssh });
      expect(closed).toEqual({ code: 3, stdout: '', stderr: 'ERROR: Connection problem with ssh\n' });
      const unknown = await archive(['127.0.0.1', 'nosuchserver', wals[0]!]);
      expect(unknown.code).not.toBe(0);
      expect(unknown.code).not.toBe(3);
      expect(unknown.stderr).toContain("ERROR: Remote 'barkeep put-wal' command has failed!\n");
    });

    it('usage errors exit 2, like argparse', async () => {
      expect((await runOurs(ARCHIVE_BIN, ['127.0.0.1'], { ssh })).code).toBe(2);
      expect((await runOurs(ARCHIVE_BIN, ['-z', '--lz4', '127.0.0.1', 'pg', wals[0]!], { ssh })).code).toBe(2);
      const bad = await runOurs(ARCHIVE_BIN, ['-U', '-oProxyCommand=touch /tmp/x', '127.0.0.1', 'pg', wals[0]!], { ssh });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain('invalid user name');
    });
  });

  describe(`restore (remote get-wal: ${getWal.real ? 'barkeep' : 'stub'})`, () => {
    let spool: string;
    beforeAll(async () => {
      useRemote(putWal.command);
      // Every segment in the archive, however the archive tests went.
      for (const wal of wals) {
        if (!existsSync(incoming(basename(wal)))) expect((await archive(['127.0.0.1', 'pg', wal])).code).toBe(0);
      }
      useRemote(getWal.command);
      spool = join(clientDir('spool-parent'), 'walrestore');
    });

    it('fetches a WAL into %p byte for byte (and clears what a killed run left)', async () => {
      const dir = clientDir('pg_wal-restore');
      const dest = join(dir, 'RECOVERYXLOG');
      writeFileSync(join(dir, '.RECOVERYXLOG.tmp-1-0123456789ab'), 'cut short');
      const r = await restore(['127.0.0.1', 'pg', basename(wals[0]!), dest]);
      expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
      expect(readFileSync(dest).equals(readFileSync(wals[0]!))).toBe(true);
      expect(readdirSync(dir)).toEqual(['RECOVERYXLOG']);
    });

    it.each([
      ['gzip', '0000000100000000000000E0', (b: Buffer) => gzipSync(b)],
      ['zstd', '0000000100000000000000E1', (b: Buffer) => zstdCompressSync(b)],
    ] as const)('--keep-compression: a %s-compressed WAL is decompressed on arrival', async (_format, name, compress) => {
      writeFileSync(incoming(name), compress(readFileSync(wals[1]!)));
      const dest = join(clientDir('pg_wal-compressed'), 'RECOVERYXLOG');
      const r = await restore(['--keep-compression', '127.0.0.1', 'pg', name, dest]);
      expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
      expect(readFileSync(dest).equals(readFileSync(wals[1]!))).toBe(true);
    });

    it('corrupt compressed data fails with status 2 and leaves nothing at %p', async () => {
      writeFileSync(incoming('0000000100000000000000E2'), Buffer.concat([Buffer.from('1f8b0800000000000003', 'hex'), Buffer.alloc(4096, 0x55)]));
      const dir = clientDir('pg_wal-corrupt');
      const r = await restore(['--keep-compression', '127.0.0.1', 'pg', '0000000100000000000000E2', join(dir, 'RECOVERYXLOG')]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^ERROR: Cannot restore '0000000100000000000000E2' to '.*RECOVERYXLOG': /);
      expect(readdirSync(dir)).toEqual([]);
    });

    it('-z (deprecated): get-wal sends gzip, the client decompresses', async () => {
      const dest = join(clientDir('pg_wal-gzip'), 'RECOVERYXLOG');
      const r = await restore(['-z', '127.0.0.1', 'pg', basename(wals[2]!), dest]);
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/^WARNING: `gzip` option is deprecated/);
      expect(readFileSync(dest).equals(readFileSync(wals[2]!))).toBe(true);
    });

    it('a WAL the archive does not have exits 1 and leaves nothing at %p', async () => {
      const dir = clientDir('pg_wal-missing');
      const dest = join(dir, 'RECOVERYXLOG');
      const r = await restore(['127.0.0.1', 'pg', '0000000100000000000000FE', dest]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("ERROR: Remote 'barkeep get-wal' command has failed!\n");
      expect(readdirSync(dir)).toEqual([]);
    });

    it('an unreachable server exits 2 (after --sleep), WAL_DEST problems exit 3', async () => {
      const dest = join(clientDir('pg_wal-ssh'), 'RECOVERYXLOG');
      const started = Date.now();
      const closed = await runOurs(RESTORE_BIN, ['-U', 'root', '--port', '1', '-s', '1', '127.0.0.1', 'pg', basename(wals[0]!), dest], { ssh });
      expect(closed).toEqual({ code: 2, stdout: '', stderr: 'ERROR: Connection problem with ssh\nSleeping for 1 seconds.\n' });
      expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
      const dir = clientDir('pg_wal-dir');
      expect(await restore(['127.0.0.1', 'pg', basename(wals[0]!), dir])).toEqual({ code: 3, stdout: '', stderr: `ERROR: WAL_DEST cannot be a directory: ${dir}\n` });
      const unwritable = await restore(['127.0.0.1', 'pg', basename(wals[0]!), '/RECOVERYXLOG']);
      expect(unwritable.code).toBe(3);
      expect(unwritable.stderr).toMatch(/^ERROR: Cannot open '\/RECOVERYXLOG' \(WAL_DEST\) for writing: /);
    });

    it('--test asks get-wal --test and prints its answer', async () => {
      const r = await restore(['--test', '127.0.0.1', 'pg', 'DUMMY', 'DUMMY']);
      expect(r).toEqual({ code: 0, stdout: 'Ready to retrieve WAL files from the server pg\n\n', stderr: '' });
    });

    it('--parallel prefetches the next WALs into the spool and serves them from there', async () => {
      const dir = clientDir('pg_wal-parallel');
      const first = await restore(['-p', '3', '--spool-dir', spool, '127.0.0.1', 'pg', basename(wals[0]!), join(dir, 'RECOVERYXLOG')]);
      expect(first).toEqual({ code: 0, stdout: '', stderr: '' });
      expect(readFileSync(join(dir, 'RECOVERYXLOG')).equals(readFileSync(wals[0]!))).toBe(true);
      expect(readdirSync(spool).sort()).toEqual([basename(wals[1]!), basename(wals[2]!)]);
      // The next ones come from the spool: no server needed.
      for (const wal of wals.slice(1)) {
        const dest = join(dir, `${basename(wal)}.restored`);
        const r = await runOurs(RESTORE_BIN, ['-U', 'root', '--port', '1', '--spool-dir', spool, '127.0.0.1', 'pg', basename(wal), dest], { ssh });
        expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
        expect(readFileSync(dest).equals(readFileSync(wal))).toBe(true);
      }
      expect(readdirSync(spool)).toEqual([]);
    });

    it('--parallel for a WAL the archive lacks exits 2 (as barman-wal-restore does)', async () => {
      const dest = join(clientDir('pg_wal-parallel-missing'), 'RECOVERYXLOG');
      const r = await restore(['-p', '2', '--spool-dir', spool, '127.0.0.1', 'pg', '0000000100000000000000FE', dest]);
      expect(r).toEqual({ code: 2, stdout: '', stderr: 'ERROR: The required file is not available: 0000000100000000000000FE\n' });
    });

    it('usage errors exit 2', async () => {
      expect((await restore(['-p', 'many', '127.0.0.1', 'pg', 'x', '/tmp/y'])).code).toBe(2);
      expect((await restore(['-z', '-j', '127.0.0.1', 'pg', 'x', '/tmp/y'])).code).toBe(2);
      expect((await restore(['127.0.0.1', 'pg', '../../etc/passwd', '/tmp/y'])).code).toBe(2);
    });
  });
});
