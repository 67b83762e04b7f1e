// What cloud-restore reads from the bucket before restoring: the backup to
// restore (an ID, a name, a shortcut, or `auto` for a target) and the objects
// it is made of, checked for completeness before anything is written locally.
import type { BackupInfo } from '../catalog/backup-info.ts';
import { BackupNotFoundError, isBackupId, type CatalogBackup } from '../catalog/catalog.ts';
import { selectBackup } from '../recovery/select-backup.ts';
import type { RecoveryTarget } from '../recovery/targets.ts';
import { createDecryptor, isEncrypted, type EncryptionKey } from '../storage/encryption.ts';
import { isStorageError } from '../storage/errors.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { CloudBackupCatalog, CloudCatalogError, type CloudBackup } from './catalog.ts';
import { backupInfoKey, backupPrefix, parseBackupTarName, type CloudServerLocation } from './layout.ts';
import type { CompressionFormat } from '../wal/compression.ts';

export class RestoreInputError extends Error {}

/** Reads an object whole (small ones only: backup.info, backup_manifest), decrypting it when it is encrypted. */
export async function readSmallObject(store: ObjectStore, key: string, encryptionKey: EncryptionKey | null, what: string): Promise<Buffer | null> {
  let body;
  try {
    body = await store.get(key);
  } catch (err) {
    if (isStorageError(err, 'not-found')) return null;
    throw err;
  }
  const parts: Buffer[] = [];
  for await (const chunk of body) parts.push(chunk as Buffer);
  const raw = Buffer.concat(parts);
  if (!isEncrypted(raw)) return raw;
  if (!encryptionKey) throw new RestoreInputError(`${what} is encrypted with an --encryption-key-file key: give the key file with --encryption-key-file`);
  const dec = createDecryptor(encryptionKey, { name: what });
  const out: Buffer[] = [];
  dec.on('data', (d: Buffer) => out.push(d));
  await new Promise<void>((resolve, reject) => {
    dec.once('error', reject);
    dec.once('end', resolve);
    dec.end(raw);
  });
  return Buffer.concat(out);
}

/** The backup BACKUP_ID names; `target` is checked against it (and chooses it for `auto`). */
export async function chooseBackup(
  store: ObjectStore,
  loc: CloudServerLocation,
  query: string,
  target: RecoveryTarget,
  key: EncryptionKey | null,
  warn: (line: string) => void,
): Promise<CatalogBackup> {
  const catalog = new CloudBackupCatalog(store, loc.server, { encryptionKey: key, onWarning: warn });
  let found: readonly CloudBackup[];
  try {
    if (isBackupId(query)) {
      const one = await catalog.backup(query);
      if (!one) throw new BackupNotFoundError(`Backup ${query} for server ${loc.server} does not exist`, query);
      found = [one];
    } else {
      found = await catalog.backups();
    }
  } catch (err) {
    if (err instanceof CloudCatalogError) throw new RestoreInputError(err.message);
    throw err;
  }
  // Shortcuts and names pick among complete backups only, as for a local recover.
  const backups: CatalogBackup[] = found.map((b) => ({ backupId: b.backupId, info: b.info, infoPath: backupInfoKey(loc, b.backupId), legacy: false }));
  const chosen = selectBackup(backups, query, target, loc.server);
  if (chosen.info.snapshots_info !== null) {
    throw new RestoreInputError(`backup ${chosen.backupId} is a snapshot backup: barkeep-cloud-restore does not restore cloud snapshots`);
  }
  if (chosen.info.status !== 'DONE') {
    throw new RestoreInputError(`backup ${chosen.backupId} has status ${chosen.info.status}: only DONE backups can be restored`);
  }
  return chosen;
}

export interface BackupArchive {
  /** Store-relative key. */
  key: string;
  size: number;
  /** null: the data directory; otherwise the tablespace OID. */
  oid: number | null;
  part: number;
  compression: CompressionFormat | null;
}

export interface BackupObjects {
  archives: BackupArchive[];
  manifestKey: string | null;
}

/** The archives of a backup, checked against its backup.info: every tar present, parts without gaps. */
export async function backupObjects(store: ObjectStore, loc: CloudServerLocation, backupId: string, info: BackupInfo, warn: (line: string) => void): Promise<BackupObjects> {
  const prefix = backupPrefix(loc, backupId);
  const archives: BackupArchive[] = [];
  let manifestKey: string | null = null;
  for await (const o of store.list(prefix, { delimiter: '/' })) {
    const name = o.key.slice(prefix.length);
    if (name === 'backup_manifest') {
      manifestKey = o.key;
      continue;
    }
    if (name === 'backup.info' || name === 'backup_label' || name.includes('/')) continue;
    const parsed = parseBackupTarName(name);
    if (!parsed) {
      if (/^(data|\d+)(_\d{4})?\.tar/.test(name)) warn(`Skipping unknown extension: ${name}`);
      continue;
    }
    if (parsed.compression === 'snappy') throw new RestoreInputError(`${name} is snappy-compressed, which barkeep does not support (restore it with barman-cloud-restore)`);
    archives.push({ key: o.key, size: o.size, oid: parsed.base === 'data' ? null : Number(parsed.base), part: parsed.part, compression: parsed.compression });
  }
  const where = `${store.location.split(' ')[0]}${prefix}`;
  const expected: (number | null)[] = [null, ...(info.tablespaces ?? []).map((t) => t.oid)];
  for (const oid of expected) {
    const parts = archives.filter((a) => a.oid === oid).sort((a, b) => a.part - b.part);
    const base = oid === null ? 'data' : String(oid);
    if (parts.length === 0) throw new RestoreInputError(`Missing file ${where}${base}.tar* for server ${loc.server}: the backup is incomplete`);
    parts.forEach((p, i) => {
      if (p.part !== i) throw new RestoreInputError(`Missing part ${base}_${String(i).padStart(4, '0')}.tar* in ${where}: the backup is incomplete`);
    });
    if (new Set(parts.map((p) => p.compression)).size > 1) throw new RestoreInputError(`${where}${base}: parts with different compressions; the backup is damaged`);
  }
  const stray = archives.filter((a) => !expected.includes(a.oid));
  if (stray.length > 0) {
    throw new RestoreInputError(`${where}: ${stray.map((a) => a.key.slice(prefix.length)).join(', ')} belong to no tablespace listed in backup.info`);
  }
  return { archives, manifestKey };
}
