// Verifies a plain-format backup (a copy of the data directory) against its
// manifest, the way pg_verifybackup does: first walk the tree matching every file
// to the manifest by name and size (cheap, reports the obvious problems at once),
// then stream the surviving files through their checksums.
//
// Tablespaces: the manifest names their files pg_tblspc/<oid>/..., while Barman
// keeps them in base/<id>/<oid>/. The caller's map wins over whatever
// data/pg_tblspc/<oid> is (pg_basebackup leaves an absolute symlink there, which
// dangles or points at the live server once the catalog is moved).
import type { Dirent } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { ManifestFile } from '../manifest.ts';
import { ChecksumSink, type ChecksumAlgorithm } from './checksum.ts';
import { HashPool, HashPoolError, type HashResult } from './hash-pool.ts';
import { CONTROL_FILE_KEY, CONTROL_HEAD_BYTES, checkSystemIdentifier, type ExpectedIdentifier } from './control-file.ts';
import { isIgnoredPath, keyToDisplay, manifestTablespaces, type VerifyLedger } from './ledger.ts';
import { runLimited } from './limit.ts';

export interface PlainOptions {
  dataDir: string;
  tablespaceDirs: ReadonlyMap<number, string>;
  concurrency: number;
  skipChecksums: boolean;
  systemIdentifiers: readonly ExpectedIdentifier[];
}

interface Found {
  file: ManifestFile;
  /** Path on disk, as bytes: names need not be valid UTF-8. */
  fsPath: Buffer;
}

const SLASH = Buffer.from('/');
const READ_CHUNK = 1 << 18;

export async function verifyPlain(ledger: VerifyLedger, opts: PlainOptions): Promise<void> {
  let rootOk = true;
  try {
    if (!(await stat(opts.dataDir)).isDirectory()) throw new Error('not a directory');
  } catch (err) {
    rootOk = false;
    // One problem, not one per file of the manifest.
    const files = [...ledger.manifest.files.values()].filter((f) => !f.key.startsWith('pg_tblspc/'));
    ledger.problem(opts.dataDir, `could not open the backup's data directory "${opts.dataDir}": ${(err as Error).message} (${files.length} files in the manifest)`);
    ledger.excuse(files);
  }
  const found: Found[] = [];
  const walked = new Set<number>();
  const scan = new Scanner(ledger, opts.tablespaceDirs, found, walked);
  if (rootOk) await scan.directory(Buffer.from(opts.dataDir), '');

  // Tablespace directories that data/pg_tblspc does not point to (no symlink kept).
  for (const [oid, dir] of opts.tablespaceDirs) {
    if (!walked.has(oid)) await scan.tablespace(oid, dir);
  }
  for (const oid of manifestTablespaces(ledger.manifest)) {
    if (walked.has(oid)) continue;
    const files = [...ledger.filesUnder(`pg_tblspc/${oid}`)];
    ledger.problem(`pg_tblspc/${oid}`, `tablespace ${oid} is missing: no directory for it (${files.length} files in the manifest)`);
    ledger.excuse(files);
  }
  ledger.reportMissing();

  // Hashing runs on worker threads when files are to be read; the main thread only schedules.
  const reading = !opts.skipChecksums || opts.systemIdentifiers.length > 0;
  const pool = reading && found.length > 0 ? startPool(opts.concurrency) : null;
  try {
    // Twice as many jobs as workers, so a worker never waits for its next file.
    await runLimited(found, opts.concurrency * 2, (f) => checkFile(ledger, f, opts, pool));
  } finally {
    await pool?.close();
  }
}

function startPool(size: number): HashPool | null {
  try {
    return new HashPool(size);
  } catch {
    return null; // No worker threads here: hash in-thread.
  }
}

class Scanner {
  readonly #ledger: VerifyLedger;
  readonly #tablespaces: ReadonlyMap<number, string>;
  readonly #found: Found[];
  readonly #walked: Set<number>;

  constructor(ledger: VerifyLedger, tablespaces: ReadonlyMap<number, string>, found: Found[], walked: Set<number>) {
    this.#ledger = ledger;
    this.#tablespaces = tablespaces;
    this.#found = found;
    this.#walked = walked;
  }

  async tablespace(oid: number, dir: string): Promise<void> {
    this.#walked.add(oid);
    let st;
    try {
      st = await stat(dir);
    } catch (err) {
      this.#ledger.problem(`pg_tblspc/${oid}`, `could not open tablespace directory "${dir}": ${(err as Error).message}`);
      this.#ledger.excuse(this.#ledger.filesUnder(`pg_tblspc/${oid}`));
      return;
    }
    if (!st.isDirectory()) {
      this.#ledger.problem(`pg_tblspc/${oid}`, `tablespace location "${dir}" is not a directory`);
      this.#ledger.excuse(this.#ledger.filesUnder(`pg_tblspc/${oid}`));
      return;
    }
    await this.directory(Buffer.from(dir), `pg_tblspc/${oid}`);
  }

  async directory(fsDir: Buffer, relKey: string): Promise<void> {
    let entries: Dirent<Buffer>[];
    try {
      entries = (await readdir(fsDir, { withFileTypes: true, encoding: 'buffer' })) as Dirent<Buffer>[];
    } catch (err) {
      this.#ledger.problem(keyToDisplay(relKey) || '.', `could not open directory "${fsDir.toString()}": ${(err as Error).message}`);
      return;
    }
    for (const entry of entries) {
      const nameKey = entry.name.toString('latin1');
      const key = relKey === '' ? nameKey : `${relKey}/${nameKey}`;
      const fsPath = Buffer.concat([fsDir, SLASH, entry.name]);
      const ts = /^pg_tblspc\/(\d+)$/.exec(key);
      if (ts && this.#tablespaces.has(Number(ts[1]))) {
        const oid = Number(ts[1]);
        if (!this.#walked.has(oid)) await this.tablespace(oid, this.#tablespaces.get(oid)!);
        continue;
      }
      await this.entry(fsPath, key, entry);
    }
  }

  async entry(fsPath: Buffer, key: string, entry: Dirent<Buffer>): Promise<void> {
    const display = keyToDisplay(key);
    if (isIgnoredPath(key)) return;
    let isDir = entry.isDirectory();
    let isFile = entry.isFile();
    let size: number | null = null;
    // Like pg_verifybackup's stat(): follow symlinks (pg_tblspc/<oid> among them).
    if (entry.isSymbolicLink() || isFile) {
      try {
        const st = await stat(fsPath);
        isDir = st.isDirectory();
        isFile = st.isFile();
        size = st.size;
      } catch (err) {
        this.#ledger.problem(display, `could not stat file or directory "${display}": ${(err as Error).message}`);
        this.#ledger.excuse(this.#ledger.filesUnder(key));
        return;
      }
    }
    if (isDir) {
      const ts = /^pg_tblspc\/(\d+)$/.exec(key);
      if (ts) this.#walked.add(Number(ts[1]));
      await this.directory(fsPath, key);
      return;
    }
    if (!isFile || size === null) {
      this.#ledger.problem(display, `"${display}" is not a regular file or directory`);
      return;
    }
    const match = this.#ledger.match(key);
    if (match.kind === 'unknown') {
      this.#ledger.problem(display, `"${display}" is present on disk but not in the manifest`);
      return;
    }
    // A filesystem has no duplicate names; ignored paths were skipped above.
    if (match.kind !== 'file') return;
    const file = match.file;
    if (size !== file.size) {
      this.#ledger.problem(file.path, `"${file.path}" has size ${size} on disk but size ${file.size} in the manifest`);
      return;
    }
    this.#found.push({ file, fsPath });
  }
}

async function checkFile(ledger: VerifyLedger, found: Found, opts: PlainOptions, pool: HashPool | null): Promise<void> {
  const { file, fsPath } = found;
  const controlFile = file.key === CONTROL_FILE_KEY && opts.systemIdentifiers.length > 0;
  const hashing = !opts.skipChecksums && file.checksum !== null;
  if (!hashing && !controlFile) {
    ledger.checkedFiles++;
    return;
  }
  let result: HashResult;
  try {
    try {
      if (pool === null) throw new HashPoolError('no pool');
      result = await pool.hashFile(fsPath, hashing ? file.algorithm : 'NONE', controlFile ? CONTROL_HEAD_BYTES : 0);
    } catch (err) {
      if (!(err instanceof HashPoolError)) throw err;
      result = await hashInThread(fsPath, hashing ? file.algorithm : 'NONE', controlFile ? CONTROL_HEAD_BYTES : 0);
    }
  } catch (err) {
    ledger.problem(file.path, `could not read file "${file.path}": ${(err as Error).message}`);
    return;
  }
  if (controlFile) {
    for (const message of checkSystemIdentifier(result.head, opts.systemIdentifiers)) ledger.problem(file.path, `${file.path}: ${message}`);
  }
  if (!hashing) {
    ledger.checkedFiles++;
    return;
  }
  ledger.checkedBytes += result.bytes;
  ledger.checkContent(file, result.bytes, result.digest);
}

/** The same as a pool worker does, streamed on this thread. */
async function hashInThread(fsPath: Buffer, algorithm: ChecksumAlgorithm, headBytes: number): Promise<HashResult> {
  const fh = await open(fsPath, 'r');
  try {
    const head = Buffer.alloc(headBytes);
    const { bytesRead } = headBytes > 0 ? await fh.read(head, 0, headBytes, 0) : { bytesRead: 0 };
    const sink = new ChecksumSink(algorithm);
    await pipeline(fh.createReadStream({ start: 0, highWaterMark: READ_CHUNK, autoClose: false }), sink);
    return { bytes: sink.bytes, digest: sink.digest(), head: head.subarray(0, bytesRead) };
  } finally {
    await fh.close().catch(() => undefined);
  }
}
