// identity.json: the PostgreSQL system identifier and major version a server's catalog
// belongs to, written once; `check` compares the live server against it.
import { link, open, readFile, unlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fsyncDir, isErrno, tempPathFor, writeFileDurable } from '../util/durable-fs.ts';

export interface ServerIdentity {
  /** Kept as text: system identifiers are 64-bit and overflow JS numbers. */
  systemid: string;
  /** PostgreSQL major version as Barman writes it: "15", "9.6". */
  version: string;
}

export class IdentityParseError extends Error {
  readonly file: string;
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = 'IdentityParseError';
    this.file = file;
  }
}

/** Python's json.dump(..., indent=4, sort_keys=True) followed by "\n", as Barman writes it. */
export function formatIdentity(identity: ServerIdentity): string {
  return `{\n    "systemid": ${JSON.stringify(identity.systemid)},\n    "version": ${JSON.stringify(identity.version)}\n}\n`;
}

export function parseIdentity(text: string, sourcePath: string): ServerIdentity {
  let doc: unknown;
  try {
    // The reviver sees each primitive's source text, so a systemid stored as a bare
    // JSON number is recovered digit for digit instead of being rounded.
    doc = JSON.parse(text, (_key, value: unknown, context?: { source?: string }) =>
      typeof value === 'number' && context?.source !== undefined ? { numberSource: context.source } : value,
    );
  } catch (err) {
    throw new IdentityParseError(sourcePath, `expected a JSON object like {"systemid": "...", "version": "15"}: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new IdentityParseError(sourcePath, 'expected a JSON object like {"systemid": "...", "version": "15"}');
  }
  const record = doc as Record<string, unknown>;
  const field = (key: 'systemid' | 'version'): string => {
    const v = record[key];
    if (typeof v === 'string' && v !== '') return v;
    if (typeof v === 'object' && v !== null && 'numberSource' in v) return String((v as { numberSource: string }).numberSource);
    throw new IdentityParseError(sourcePath, `expected "${key}" to be a non-empty string, found ${JSON.stringify(v) ?? 'nothing'}`);
  };
  return { systemid: field('systemid'), version: field('version') };
}

/** The stored identity, or null if the file does not exist yet. */
export async function readIdentity(path: string): Promise<ServerIdentity | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
  return parseIdentity(text, path);
}

/** Writes (or replaces) the identity file durably. */
export async function writeIdentity(path: string, identity: ServerIdentity): Promise<void> {
  await writeFileDurable(path, formatIdentity(identity));
}

/**
 * Barman writes identity.json only if it is absent. The exclusive create is done with
 * link() so that two racing writers cannot both win and the file is never seen partial.
 * Returns false if a file was already there.
 */
export async function writeIdentityIfMissing(path: string, identity: ServerIdentity): Promise<boolean> {
  const tmp = tempPathFor(path);
  const fh = await open(tmp, 'wx', 0o666);
  try {
    try {
      await fh.writeFile(formatIdentity(identity));
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, path);
    } catch (err) {
      if (isErrno(err, 'EEXIST')) return false;
      throw err;
    }
    await fsyncDir(dirname(resolve(path)));
    return true;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}
