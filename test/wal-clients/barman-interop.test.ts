import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startSshd, type SshClientSetup, type Sshd } from '../support/sshd.ts';
import { makeTempDir } from '../support/tmp.ts';
import {
  ARCHIVE_BIN,
  barmanAvailable,
  clientDir,
  REMOTE_BARMAN,
  remoteFor,
  RESTORE_BIN,
  runOurs,
  runTheirs,
  writeServerConfig,
  writeShim,
} from './support.ts';
import { closedSegments } from './support-wal.ts';

// Interoperability with the real thing, Debian's barman-cli 3.4 and Barman
// 3.4 itself (python3-barman, which barman-cli depends on):
// - the tar barman-wal-archive sends and the one we send are read by the
//   same put-wal, and GNU tar sees the same layout in both;
// - our clients talk to Barman's own put-wal/get-wal (--remote-command barman);
// - barman-wal-restore fetches from barkeep's get-wal;
// - for the same situations both restore tools exit with the same status.

const putWal = remoteFor('put-wal');
const getWal = remoteFor('get-wal');
const HAVE_BARMAN_CLI = (() => {
  try {
    execFileSync('/usr/bin/barman-wal-archive', ['--version'], { stdio: 'ignore' });
    return barmanAvailable();
  } catch {
    return false;
  }
})();

describe.runIf(HAVE_BARMAN_CLI)('barkeep WAL clients and Barman 3.4', () => {
  let cluster: PgCluster;
  let sshd: Sshd;
  let ssh: SshClientSetup;
  let remoteBin: string;
  let wals: string[];
  let ours: { conf: string; home: string };
  let barman: { conf: string; home: string };
  let captureDir: string;

  // The remote login finds `barman` and `barkeep` on its PATH; each test points them somewhere.
  const remote = (name: 'barman' | 'barkeep', command: string) => writeShim(remoteBin, name, command);
  const connect = (conf: string) => ['-U', 'root', '--port', String(sshd.port), '-c', conf];
  const md5 = (path: string) => createHash('md5').update(readFileSync(path)).digest('hex');
  const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    wals = await closedSegments(cluster, 6, clientDir('pg_wal'));
    remoteBin = makeTempDir('remote-bin');
    sshd = await startSshd({ users: ['root'], env: { PATH: `${remoteBin}:/usr/local/bin:/usr/bin:/bin` } });
    ssh = sshd.clientSetup('root', 'postgres');
    ours = writeServerConfig(makeTempDir('barkeep-server'));
    barman = writeServerConfig(makeTempDir('barman-server'), { barmanUser: 'root' });
    captureDir = makeTempDir('captured');
  });

  afterAll(async () => {
    await sshd?.stop();
    await cluster?.destroy();
  });

  it(`one put-wal (${putWal.real ? 'barkeep' : 'stub'}) accepts barman-wal-archive's tar (MD5SUMS) and ours (SHA256SUMS)`, async () => {
    remote('barman', putWal.command);
    remote('barkeep', putWal.command);
    const theirs = await runTheirs('barman-wal-archive', [...connect(ours.conf), '127.0.0.1', 'pg', wals[0]!], { ssh });
    expect(theirs).toEqual({ code: 0, stdout: '', stderr: '' });
    const mine = await runOurs(ARCHIVE_BIN, [...connect(ours.conf), '127.0.0.1', 'pg', wals[1]!], { ssh });
    expect(mine).toEqual({ code: 0, stdout: '', stderr: '' });
    for (const wal of wals.slice(0, 2)) expect(readFileSync(join(ours.home, 'pg', 'incoming', basename(wal))).equals(readFileSync(wal))).toBe(true);
  });

  it('GNU tar sees the same layout: the WAL, then "<hex> *<name>" checksum lines', async () => {
    const capture = (name: string) => remote('barman', `sh -c 'cat > ${join(captureDir, name)}'`) && join(captureDir, name);
    const list = (tar: string) => execFileSync('tar', ['-tf', tar], { encoding: 'utf8' }).trim().split('\n');
    const member = (tar: string, name: string) => execFileSync('tar', ['-xOf', tar, name], { maxBuffer: 64 << 20 });
    const wal = wals[2]!;
    const name = basename(wal);

    const theirs = capture('theirs.tar');
    expect((await runTheirs('barman-wal-archive', [...connect(ours.conf), '127.0.0.1', 'pg', wal], { ssh })).code).toBe(0);
    const oursMd5 = capture('ours-md5.tar');
    expect((await runOurs(ARCHIVE_BIN, [...connect(ours.conf), '--remote-command', 'barman', '--md5', '127.0.0.1', 'pg', wal], { ssh })).code).toBe(0);
    const oursSha = capture('ours-sha256.tar');
    expect((await runOurs(ARCHIVE_BIN, [...connect(ours.conf), '--remote-command', 'barman', '127.0.0.1', 'pg', wal], { ssh })).code).toBe(0);

    expect(list(theirs)).toEqual([name, 'MD5SUMS']);
    expect(list(oursMd5)).toEqual([name, 'MD5SUMS']);
    expect(list(oursSha)).toEqual([name, 'SHA256SUMS']);
    for (const tar of [theirs, oursMd5, oursSha]) expect(member(tar, name).equals(readFileSync(wal))).toBe(true);
    expect(member(oursMd5, 'MD5SUMS').toString()).toBe(member(theirs, 'MD5SUMS').toString());
    expect(member(theirs, 'MD5SUMS').toString()).toBe(`${md5(wal)} *${name}\n`);
    expect(member(oursSha, 'SHA256SUMS').toString()).toBe(`${sha256(wal)} *${name}\n`);
  });

  it("our archive client talks to Barman's own put-wal (with --md5, as Barman before 3.11 needs)", async () => {
    remote('barman', REMOTE_BARMAN);
    const base = [...connect(barman.conf), '--remote-command', 'barman'];
    const test = await runOurs(ARCHIVE_BIN, [...base, '--test', '127.0.0.1', 'pg', 'DUMMY'], { ssh });
    const theirTest = await runTheirs('barman-wal-archive', [...connect(barman.conf), '--test', '127.0.0.1', 'pg', 'DUMMY'], { ssh });
    expect(test).toEqual(theirTest);
    expect(test).toEqual({ code: 0, stdout: 'Ready to accept WAL files for the server pg\n\n', stderr: '' });

    const r = await runOurs(ARCHIVE_BIN, [...base, '--md5', '127.0.0.1', 'pg', wals[3]!], { ssh });
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(readFileSync(join(barman.home, 'pg', 'incoming', basename(wals[3]!))).equals(readFileSync(wals[3]!))).toBe(true);
    // Barman 3.4 only reads MD5SUMS: its refusal reaches PostgreSQL as put-wal's exit status.
    const sha = await runOurs(ARCHIVE_BIN, [...base, '127.0.0.1', 'pg', wals[4]!], { ssh });
    expect(sha.code).toBe(1);
    expect(sha.stderr).toContain(`Missing checksum for file '${basename(wals[4]!)}'`);
    expect(sha.stderr).toContain("ERROR: Remote 'barman put-wal' command has failed!\n");
  });

  it("our restore client fetches from Barman's get-wal, with barman-wal-restore's exit statuses", async () => {
    remote('barman', REMOTE_BARMAN);
    const wal = basename(wals[3]!);
    const dir = clientDir('pg_wal-barman');
    const oursArgs = (...a: string[]) => [...connect(barman.conf), '--remote-command', 'barman', ...a];
    const theirsArgs = (...a: string[]) => [...connect(barman.conf), ...a];

    expect(await runOurs(RESTORE_BIN, oursArgs('127.0.0.1', 'pg', wal, join(dir, 'ours')), { ssh })).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(readFileSync(join(dir, 'ours')).equals(readFileSync(wals[3]!))).toBe(true);

    const cases: [string, string[]][] = [
      ['--test', ['--test', '127.0.0.1', 'pg', 'DUMMY', 'DUMMY']],
      ['missing WAL', ['127.0.0.1', 'pg', '0000000100000000000000FD', join(dir, 'missing')]],
      ['WAL_DEST is a directory', ['127.0.0.1', 'pg', wal, dir]],
      ['--parallel, missing WAL', ['-p', '2', '--spool-dir', join(dir, 'spool'), '127.0.0.1', 'pg', '0000000100000000000000FD', join(dir, 'missing')]],
    ];
    for (const [what, args] of cases) {
      const a = await runOurs(RESTORE_BIN, oursArgs(...args), { ssh });
      const b = await runTheirs('barman-wal-restore', theirsArgs(...args), { ssh });
      expect({ what, code: a.code, stdout: a.stdout }).toEqual({ what, code: b.code, stdout: b.stdout });
    }
    const down = ['-U', 'root', '--port', '1', '127.0.0.1', 'pg', wal, join(dir, 'down')];
    const a = await runOurs(RESTORE_BIN, down, { ssh });
    const b = await runTheirs('barman-wal-restore', down, { ssh });
    expect(a.code).toBe(b.code);
    expect(a.code).toBe(2);
  });

  it(`barman-wal-restore fetches from barkeep's get-wal (${getWal.real ? 'barkeep' : 'stub'})`, async () => {
    remote('barman', putWal.command);
    expect((await runOurs(ARCHIVE_BIN, [...connect(ours.conf), '--remote-command', 'barman', '127.0.0.1', 'pg', wals[5]!], { ssh })).code).toBe(0);
    remote('barman', getWal.command);
    const dir = clientDir('pg_wal-theirs');
    const r = await runTheirs('barman-wal-restore', [...connect(ours.conf), '127.0.0.1', 'pg', basename(wals[5]!), join(dir, 'RECOVERYXLOG')], { ssh });
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(readFileSync(join(dir, 'RECOVERYXLOG')).equals(readFileSync(wals[5]!))).toBe(true);
    const missing = await runTheirs('barman-wal-restore', [...connect(ours.conf), '127.0.0.1', 'pg', '0000000100000000000000FD', join(dir, 'missing')], { ssh });
    expect(missing.code).toBe(1);
    const test = await runTheirs('barman-wal-restore', [...connect(ours.conf), '--test', '127.0.0.1', 'pg', 'DUMMY', 'DUMMY'], { ssh });
    expect(test).toEqual({ code: 0, stdout: 'Ready to retrieve WAL files from the server pg\n\n', stderr: '' });
  });
});
