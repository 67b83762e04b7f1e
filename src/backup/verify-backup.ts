// Verifies a backup against its backup_manifest, as pg_verifybackup does but
// without extracting tars or needing PostgreSQL's binaries: every file listed is
// present with its size and checksum, nothing unlisted is there (pg_verifybackup's
// ignore list aside), and the WAL covering the manifest's WAL-Ranges is in the
// archive, complete and from this cluster. Problems are collected, not thrown:
// one report lists all of them, each naming its file.
import type { Readable } from 'node:stream';
import { readManifest, ManifestError, type BackupManifest } from './manifest.ts';
import type { ExpectedIdentifier } from './verify/control-file.ts';
import { VerifyLedger, type VerifyProblem } from './verify/ledger.ts';
import { verifyPlain } from './verify/plain.ts';
import { verifyTar } from './verify/tar.ts';
import { verifyWal } from './verify/wal.ts';

export type { VerifyProblem } from './verify/ledger.ts';

export interface VerifyBackupOptions {
  /** base/<id>/data: the data directory (plain) or the directory holding the tars. */
  dataDir: string;
  /** Plain format: where each tablespace's files are (Barman: base/<id>/<oid>). */
  tablespaceDirs?: ReadonlyMap<number, string>;
  format: 'plain' | 'tar';
  manifestPath: string;
  /** Returns a WAL segment's bytes (raw or compressed, found by magic), or null when absent. Without it WAL is not checked. */
  walLookup?: (segmentName: string) => Promise<Readable | null>;
  /** wal_segment_size; 16 MiB when not given. */
  walSegmentSize?: number;
  /** The cluster's system identifier (backup.info systemid), checked against pg_control and the WAL. */
  systemIdentifier?: string | null;
  /** PostgreSQL major of the backup, for the exact WAL page magic. */
  pgMajor?: number | null;
  /** Files or archives verified at once (default 2: one per core of a small host). */
  concurrency?: number;
  /** Sizes only, as pg_verifybackup --skip-checksums. */
  skipChecksums?: boolean;
  /** Barman's path_prefix, where external decompressors (lz4) are looked for first. */
  pathPrefix?: string | null;
}

export interface VerifyReport {
  ok: boolean;
  problems: VerifyProblem[];
  /** Files whose size (and checksum, if the manifest has one) were checked. */
  checkedFiles: number;
  /** Bytes of file content hashed. */
  checkedBytes: number;
  /** Manifest file count (0 when the manifest could not be read). */
  manifestFiles: number;
  /** WAL segments required by the WAL ranges, and how many passed; null when WAL was not checked. */
  walSegments: { required: number; verified: number } | null;
  manifestVersion: number | null;
}

const DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024;

export async function verifyBackup(opts: VerifyBackupOptions): Promise<VerifyReport> {
  let manifest: BackupManifest;
  try {
    manifest = await readManifest(opts.manifestPath);
  } catch (err) {
    // A manifest that fails its own checks cannot vouch for anything (pg_verifybackup stops here too).
    if (!(err instanceof ManifestError)) throw err;
    return {
      ok: false,
      problems: [{ path: 'backup_manifest', message: err.message }],
      checkedFiles: 0,
      checkedBytes: 0,
      manifestFiles: 0,
      walSegments: null,
      manifestVersion: null,
    };
  }

  const ledger = new VerifyLedger(manifest);
  const concurrency = opts.concurrency ?? 2;
  const skipChecksums = opts.skipChecksums ?? false;
  const systemIdentifiers: ExpectedIdentifier[] = [];
  if (manifest.systemIdentifier !== null) systemIdentifiers.push({ source: 'manifest', value: manifest.systemIdentifier });
  if (opts.systemIdentifier) systemIdentifiers.push({ source: 'backup catalog', value: opts.systemIdentifier });
  if (manifest.systemIdentifier !== null && opts.systemIdentifier && manifest.systemIdentifier !== opts.systemIdentifier) {
    ledger.problem('backup_manifest', `manifest system identifier is ${manifest.systemIdentifier}, but the backup catalog says ${opts.systemIdentifier}`);
  }

  if (opts.format === 'plain') {
    await verifyPlain(ledger, { dataDir: opts.dataDir, tablespaceDirs: opts.tablespaceDirs ?? new Map(), concurrency, skipChecksums, systemIdentifiers });
  } else {
    await verifyTar(ledger, { dataDir: opts.dataDir, concurrency, skipChecksums, systemIdentifiers, pathPrefix: opts.pathPrefix ?? null });
  }

  let walSegments: VerifyReport['walSegments'] = null;
  if (opts.walLookup) {
    const segmentSize = opts.walSegmentSize ?? DEFAULT_SEGMENT_SIZE;
    walSegments = await verifyWal(ledger, {
      lookup: opts.walLookup,
      segmentSize,
      systemIdentifier: manifest.systemIdentifier ?? opts.systemIdentifier ?? null,
      pgMajor: opts.pgMajor ?? null,
      concurrency,
      pathPrefix: opts.pathPrefix ?? null,
    });
  }

  return {
    ok: ledger.problems.length === 0,
    problems: ledger.problems,
    checkedFiles: ledger.checkedFiles,
    checkedBytes: ledger.checkedBytes,
    manifestFiles: manifest.files.size,
    walSegments,
    manifestVersion: manifest.version,
  };
}
