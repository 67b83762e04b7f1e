// Every directory, file and link of a backup, in an order a restore can write
// them (a directory before its contents), whether the backup is plain (a copy
// of the data directory and base/<id>/<oid>/ per tablespace) or tar
// (base.tar[.gz|.lz4|.zst] and <oid>.tar[...], decompressed as they stream).
// Paths are latin1 strings of the raw name bytes, as manifest keys are.
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract, type Header as TarHeader } from 'tar-stream';
import { drain, memberKey, rawMemberName } from '../../backup/verify/tar.ts';
import { createDecompressor, detectCompression } from '../../wal/compression.ts';
import type { BackupFiles } from '../../backup/verify/locate.ts';

export type ItemBody =
  /** A file on disk (plain backups): whoever writes it reads it. */
  | { kind: 'path'; path: Buffer }
  /** A tar member: read it once, before asking for the next item. */
  | { kind: 'chunks'; chunks: AsyncIterable<Buffer> };

export interface BackupItem {
  /** 0: the data directory; otherwise the tablespace OID. */
  root: number;
  /** Relative to the root, '/'-separated, latin1; '' for the root itself. */
  rel: string;
  type: 'file' | 'directory' | 'symlink';
  mode: number;
  mtime: Date;
  size: number;
  linkTarget?: string;
  body?: ItemBody;
  /** Where it comes from, for messages. */
  source: string;
}

/** The directories of a plain backup only, from directory entries alone (no lstat of every file). */
export async function* plainDirectories(files: BackupFiles): AsyncGenerator<BackupItem> {
  yield* directoryTree(Buffer.from(files.dataDir), 0, '', files.dataDir);
  for (const [oid, dir] of files.tablespaceDirs) yield* directoryTree(Buffer.from(dir), oid, '', dir);
}

async function* directoryTree(dir: Buffer, root: number, rel: string, display: string): AsyncGenerator<BackupItem> {
  const st = await lstat(dir);
  yield { root, rel, type: 'directory', mode: st.mode & 0o7777, mtime: st.mtime, size: 0, source: display };
  const subdirs = (await readdir(dir, { encoding: 'buffer', withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort(Buffer.compare);
  for (const name of subdirs) {
    const path = Buffer.concat([dir, SLASH, name]);
    yield* directoryTree(path, root, rel === '' ? name.toString('latin1') : `${rel}/${name.toString('latin1')}`, path.toString());
  }
}

export async function* backupItems(files: BackupFiles, pathPrefix: string | null): AsyncGenerator<BackupItem> {
  if (files.format === 'plain') {
    yield* plainTree(Buffer.from(files.dataDir), 0, '', files.dataDir);
    for (const [oid, dir] of files.tablespaceDirs) yield* plainTree(Buffer.from(dir), oid, '', dir);
    return;
  }
  const names = (await readdir(files.dataDir)).sort();
  const archives: { name: string; root: number }[] = [];
  for (const name of names) {
    const m = /^(base|[1-9]\d*)\.(?:tar|tgz|tar\.gz|tar\.lz4|tar\.zst)$/.exec(name);
    if (m) archives.push({ name, root: m[1] === 'base' ? 0 : Number(m[1]) });
  }
  if (!archives.some((a) => a.root === 0)) throw new Error(`${files.dataDir}: no base.tar archive (the data directory) in this tar backup`);
  archives.sort((a, b) => a.root - b.root);
  for (const a of archives) yield* tarMembers(join(files.dataDir, a.name), a.root, pathPrefix);
}

const SLASH = Buffer.from('/');

async function* plainTree(dir: Buffer, root: number, rel: string, display: string): AsyncGenerator<BackupItem> {
  const st = await lstat(dir);
  yield { root, rel, type: 'directory', mode: st.mode & 0o7777, mtime: st.mtime, size: 0, source: display };
  const entries = (await readdir(dir, { encoding: 'buffer' })).sort(Buffer.compare);
  const subdirs: [Buffer, string][] = [];
  for (const name of entries) {
    const path = Buffer.concat([dir, SLASH, name]);
    const childRel = rel === '' ? name.toString('latin1') : `${rel}/${name.toString('latin1')}`;
    const cst = await lstat(path);
    if (cst.isDirectory()) subdirs.push([path, childRel]);
    else if (cst.isSymbolicLink()) {
      yield { root, rel: childRel, type: 'symlink', mode: 0o777, mtime: cst.mtime, size: 0, linkTarget: (await readlink(path, { encoding: 'buffer' })).toString('latin1'), source: path.toString() };
    } else if (cst.isFile()) {
      yield { root, rel: childRel, type: 'file', mode: cst.mode & 0o7777, mtime: cst.mtime, size: cst.size, body: { kind: 'path', path }, source: path.toString() };
    }
  }
  for (const [path, childRel] of subdirs) yield* plainTree(path, root, childRel, path.toString());
}

async function* tarMembers(path: string, root: number, pathPrefix: string | null): AsyncGenerator<BackupItem> {
  const format = await detectCompression(path);
  const extract = tarExtract({ filenameEncoding: 'latin1' } as Parameters<typeof tarExtract>[0]);
  const feeding = pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), createDecompressor(format, { pathPrefix }), extract).then(
    () => null,
    (err: Error) => err,
  );
  let failure: Error | null = null;
  const name = path.slice(path.lastIndexOf('/') + 1);
  try {
    for await (const member of extract) {
      const entry = member as typeof member & AsyncIterable<Buffer> & { header: TarHeader };
      const h = entry.header;
      const rel = memberKey(rawMemberName(h), 0);
      const base = { root, rel, mode: (h.mode ?? 0o600) & 0o7777, mtime: h.mtime ?? new Date(), source: `${name}: ${rel}` };
      if (h.type === 'directory') {
        yield { ...base, type: 'directory', size: 0 };
        await drain(entry);
      } else if (h.type === 'symlink') {
        yield { ...base, type: 'symlink', mode: 0o777, size: 0, linkTarget: h.linkname ?? '' };
        await drain(entry);
      } else if (h.type === 'file' || h.type === 'contiguous-file') {
        let consumed = false;
        const chunks: AsyncIterable<Buffer> = {
          [Symbol.asyncIterator]() {
            consumed = true;
            return (entry as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
          },
        };
        yield { ...base, type: 'file', size: h.size ?? 0, body: { kind: 'chunks', chunks } };
        // Skipped members (excluded paths) still have to be read past.
        if (!consumed) await drain(entry);
      } else {
        await drain(entry);
      }
    }
  } catch (err) {
    failure = err as Error;
  }
  const fed = await feeding;
  failure = fed ?? failure;
  if (failure !== null) throw new Error(`archive ${path} is damaged or truncated: ${failure.message}`);
}
