// What a verification has found so far: which manifest entries were seen, the
// problems (each naming a file), and the counters for the summary. Shared by the
// plain, tar and WAL passes so each reports the same way.
import { keyToDisplay, type BackupManifest, type ManifestFile } from '../manifest.ts';

export interface VerifyProblem {
  /** The file concerned: its manifest path, an archive name, or a WAL segment name. */
  path: string;
  message: string;
}

// pg_verifybackup's built-in ignore list (pg_verifybackup.c main): the manifest
// itself, WAL (checked separately), and the files that pg_basebackup -R or a
// restore legitimately create or change.
const IGNORED = ['backup_manifest', 'pg_wal', 'postgresql.auto.conf', 'recovery.signal', 'standby.signal'];

/** should_ignore_relpath: the path or one of its parent directories is on the list. */
export function isIgnoredPath(key: string): boolean {
  return IGNORED.some((p) => key === p || key.startsWith(`${p}/`));
}

export type MatchResult = { kind: 'file'; file: ManifestFile } | { kind: 'ignored' } | { kind: 'unknown' } | { kind: 'duplicate'; file: ManifestFile };

export class VerifyLedger {
  readonly manifest: BackupManifest;
  readonly problems: VerifyProblem[] = [];
  checkedFiles = 0;
  checkedBytes = 0;
  readonly #seen = new Set<string>();
  /** Entries already accounted for by a coarser problem (a whole archive or tablespace missing). */
  readonly #excused = new Set<string>();

  constructor(manifest: BackupManifest) {
    this.manifest = manifest;
  }

  problem(path: string, message: string): void {
    this.problems.push({ path, message });
  }

  /** A file found on disk or in an archive, by key. Marks the manifest entry as present. */
  match(key: string): MatchResult {
    if (isIgnoredPath(key)) return { kind: 'ignored' };
    const file = this.manifest.files.get(key);
    if (!file) return { kind: 'unknown' };
    if (this.#seen.has(key)) return { kind: 'duplicate', file };
    this.#seen.add(key);
    return { kind: 'file', file };
  }

  /**
   * Judges a file whose bytes were all read: `bytes` counted and `digest` computed
   * while streaming. `archive` names the tar it came from, if any.
   */
  checkContent(file: ManifestFile, bytes: number, digest: Buffer, archive?: string): void {
    const inArchive = archive === undefined ? '' : ` in archive "${archive}"`;
    if (bytes !== file.size) {
      this.problem(file.path, `file "${file.path}"${inArchive} should contain ${file.size} bytes, but ${bytes} bytes were read`);
      return;
    }
    this.checkedFiles++;
    if (file.checksum !== null && !digest.equals(file.checksum)) {
      this.problem(file.path, `checksum mismatch for file "${file.path}"${inArchive}: ${file.algorithm} is ${digest.toString('hex')}, the manifest says ${file.checksum.toString('hex')}`);
    }
  }

  /** Keeps entries out of the missing-files report because one problem already covers them. */
  excuse(files: Iterable<ManifestFile>): void {
    for (const f of files) this.#excused.add(f.key);
  }

  /** Manifest entries never found (ignored paths and excused ones aside). */
  *unmatched(): Generator<ManifestFile> {
    for (const file of this.manifest.files.values()) {
      if (!this.#seen.has(file.key) && !this.#excused.has(file.key) && !isIgnoredPath(file.key)) yield file;
    }
  }

  reportMissing(): void {
    for (const file of this.unmatched()) this.problem(file.path, `"${file.path}" is present in the manifest but not on disk`);
  }

  /** Manifest entries under a directory prefix (e.g. `pg_tblspc/16385`). */
  *filesUnder(prefixKey: string): Generator<ManifestFile> {
    for (const file of this.manifest.files.values()) {
      if (file.key.startsWith(`${prefixKey}/`)) yield file;
    }
  }
}

/** The tablespace OIDs the manifest has files for (paths `pg_tblspc/<oid>/...`). */
export function manifestTablespaces(manifest: BackupManifest): Set<number> {
  const oids = new Set<number>();
  for (const key of manifest.files.keys()) {
    const m = /^pg_tblspc\/(\d+)\//.exec(key);
    if (m) oids.add(Number(m[1]));
  }
  return oids;
}

export { keyToDisplay };
