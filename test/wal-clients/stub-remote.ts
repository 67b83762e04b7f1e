// A stand-in for the backup server's `put-wal` and `get-wal`, run over ssh by
// the WAL client tests while barkeep's own commands are not built yet (the
// tests switch to the real `barkeep` as soon as its --help lists them). It
// follows Barman's put-wal rules (server.py put_wal): regular files with
// plain names only, a SHA256SUMS or MD5SUMS entry whose digest matches every
// file, written to incoming/ under a temporary name and renamed. get-wal
// serves from wals/<hash dir>/, incoming/ and streaming/, exits 1 when the
// WAL is missing, and implements --peek and --test.
//
//   node stub-remote.ts [--config=BARMAN_CONF] put-wal SERVER [--test]
//   node stub-remote.ts [--config=BARMAN_CONF] get-wal [--test] [--peek N] [--partial] SERVER WAL
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, renameSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';

function fail(message: string, code = 1): never {
  process.stderr.write(`ERROR: ${message}\n`);
  process.exit(code);
}

const argv = process.argv.slice(2);
let config = '/etc/barman.conf';
while (argv[0]?.startsWith('--config')) {
  const a = argv.shift()!;
  config = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv.shift()!;
}
const command = argv.shift();
const configText = readFileSync(config, 'utf8');
const home = /^\s*barman_home\s*=\s*(.+?)\s*$/m.exec(configText)?.[1] ?? fail(`no barman_home in ${config}`);

function checkServer(server: string): void {
  if (!configText.split('\n').some((l) => l.trim() === `[${server}]`)) fail(`Unknown server '${server}'`);
}

function flag(name: string): boolean {
  const i = argv.indexOf(name);
  if (i < 0) return false;
  argv.splice(i, 1);
  return true;
}

function valueOf(name: string): string | undefined {
  const i = argv.indexOf(name);
  if (i < 0) return undefined;
  const [, value] = argv.splice(i, 2);
  return value;
}

async function putWal(): Promise<void> {
  const test = flag('--test');
  const [server] = argv;
  if (!server) fail('usage: put-wal SERVER');
  checkServer(server);
  if (test) {
    process.stdout.write(`Ready to accept WAL files for the server ${server}\n`);
    return;
  }
  const incoming = join(home, server, 'incoming');
  mkdirSync(incoming, { recursive: true });
  const files = new Map<string, { tmp: string; sha256: string; md5: string }>();
  let sums: { algorithm: 'sha256' | 'md5'; lines: Map<string, string> } | null = null;
  const extract = tar.extract();
  const reading = (async () => {
    for await (const entry of extract) {
      const { name, type } = entry.header;
      if (type !== 'file') fail(`Unsupported file type '${type}' for file '${name}' in put-wal for server '${server}'`);
      if (name.includes('/')) fail(`Unsupported filename '${name}' in put-wal for server '${server}'`);
      if (name === 'SHA256SUMS' || name === 'MD5SUMS') {
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        const lines = new Map<string, string>();
        for (const line of Buffer.concat(chunks).toString('utf8').split('\n').filter(Boolean)) {
          const m = /^([0-9a-f]+) [* ](?:\.\/)?(.+)$/.exec(line);
          if (!m) fail(`Bad checksum line '${line}' found in put-wal for server '${server}'`);
          lines.set(m[2]!, m[1]!);
        }
        sums = { algorithm: name === 'MD5SUMS' ? 'md5' : 'sha256', lines };
        continue;
      }
      const tmp = join(incoming, `.${process.pid}-${name}`);
      const sha256 = createHash('sha256');
      const md5 = createHash('md5');
      const chunks: Buffer[] = [];
      for await (const c of entry) {
        sha256.update(c as Buffer);
        md5.update(c as Buffer);
        chunks.push(c as Buffer);
      }
      writeFileSync(tmp, Buffer.concat(chunks));
      files.set(name, { tmp, sha256: sha256.digest('hex'), md5: md5.digest('hex') });
    }
  })();
  await pipeline(process.stdin, extract);
  await reading;
  if (!sums) fail(`Checksum file not found in put-wal for server '${server}'`);
  const { algorithm, lines } = sums as { algorithm: 'sha256' | 'md5'; lines: Map<string, string> };
  for (const [name, f] of files) {
    const expected = lines.get(name);
    if (!expected) fail(`Checksum without corresponding file '${name}' in put-wal for server '${server}'`);
    if (f[algorithm] !== expected) fail(`Bad file checksum '${f[algorithm]}' (should be ${expected}) for file '${name}' in put-wal for server '${server}'`);
  }
  for (const name of lines.keys()) if (!files.has(name)) fail(`Checksum without corresponding file '${name}' in put-wal for server '${server}'`);
  for (const [name, f] of files) renameSync(f.tmp, join(incoming, name));
  // What the tests look at to know which checksum file came with the tar.
  writeFileSync(join(home, server, 'last-put-wal.json'), JSON.stringify({ algorithm, files: [...files.keys()] }));
}

function candidates(server: string, wal: string, partial: boolean): string[] {
  const base = join(home, server);
  const paths = [join(base, 'wals', wal.slice(0, 16), wal), join(base, 'incoming', wal), join(base, 'streaming', wal)];
  if (partial) paths.push(join(base, 'streaming', `${wal}.partial`));
  return paths;
}

function nextSegment(wal: string): string {
  const tli = wal.slice(0, 8);
  const seg = (BigInt(`0x${wal.slice(8, 16)}`) << 8n) + BigInt(`0x${wal.slice(16)}`) + 1n;
  const hex = (n: bigint) => n.toString(16).toUpperCase().padStart(8, '0');
  return `${tli}${hex(seg >> 8n)}${hex(seg & 0xffn)}`;
}

async function getWal(): Promise<void> {
  const test = flag('--test');
  const partial = flag('--partial');
  flag('--keep-compression');
  flag('--gzip');
  flag('--bzip2');
  const peek = valueOf('--peek');
  const [server, wal] = argv;
  if (!server || !wal) fail('usage: get-wal SERVER WAL', 2);
  checkServer(server);
  if (test) {
    process.stdout.write(`Ready to retrieve WAL files from the server ${server}\n`);
    return;
  }
  if (peek !== undefined) {
    let name = wal;
    for (let i = 0; i < Number(peek) && /^[0-9A-F]{24}$/.test(name); i++) {
      if (!candidates(server, name, false).some((p) => existsSync(p))) break;
      process.stdout.write(`${name}\n`);
      name = nextSegment(name);
    }
    return;
  }
  const found = candidates(server, wal, partial).find((p) => existsSync(p));
  if (!found) fail(`WAL file '${wal}' not found in server '${server}'`);
  await pipeline(createReadStream(found), process.stdout);
}

if (command === 'put-wal') await putWal();
else if (command === 'get-wal') await getWal();
else fail(`unknown command '${command}'`, 2);
