// The pieces of the cloud catalog commands that need no bucket: Python's json.dumps
// as barman-cloud's JSON output relies on it, and BACKUP_ID resolution.
import { describe, expect, it } from 'vitest';
import { newBackupInfo } from '../../src/catalog/backup-info.ts';
import { pyDict } from '../../src/catalog/python-repr.ts';
import { CloudBackupIdError, resolveCloudBackupId } from '../../src/cloud/backup-id.ts';
import { pyJsonDumps } from '../../src/cloud/catalog-json.ts';

describe('pyJsonDumps', () => {
  it('prints what Python json.dumps prints', () => {
    // Expected text from: python3 -c "import json; print(json.dumps([...]))"
    const value = [
      1e-5,
      1.0,
      1e16,
      123456789012345678901234567890n,
      Number.NaN,
      '\x7f\x01"\\/é😀',
      pyDict([
        [1n, null],
        [2.5, true],
        [null, false],
      ]),
    ];
    expect(pyJsonDumps(value)).toBe(
      '[1e-05, 1.0, 1e+16, 123456789012345678901234567890, NaN, "\\u007f\\u0001\\"\\\\/\\u00e9\\ud83d\\ude00", {"1": null, "2.5": true, "null": false}]',
    );
  });
});

describe('resolveCloudBackupId', () => {
  const backup = (backupId: string, status: 'DONE' | 'FAILED', name: string | null = null) => ({
    backupId,
    info: newBackupInfo({ status, backup_name: name }),
  });
  const catalog = {
    server: 'pg',
    backups: [
      backup('20240103T000000', 'FAILED'),
      backup('20240101T000000', 'DONE', 'first-of-year'),
      backup('20240104T000000', 'DONE', 'twin'),
      backup('20240102T000000', 'FAILED'),
      backup('20240105T000000', 'DONE', 'twin'),
    ],
  };

  it('takes IDs as they are and resolves shortcuts over every backup, whatever its status', () => {
    expect(resolveCloudBackupId(catalog, '20991231T235959')).toBe('20991231T235959');
    expect(resolveCloudBackupId(catalog, 'latest')).toBe('20240105T000000');
    expect(resolveCloudBackupId(catalog, 'last')).toBe('20240105T000000');
    expect(resolveCloudBackupId(catalog, 'oldest')).toBe('20240101T000000');
    expect(resolveCloudBackupId(catalog, 'first')).toBe('20240101T000000');
    expect(resolveCloudBackupId(catalog, 'last-failed')).toBe('20240103T000000');
    expect(resolveCloudBackupId(catalog, 'first-of-year')).toBe('20240101T000000');
  });

  it('refuses unknown and ambiguous names, and shortcuts with nothing to point at', () => {
    expect(() => resolveCloudBackupId(catalog, 'twin')).toThrow(
      new CloudBackupIdError("Multiple backups found matching name 'twin' (try using backup ID instead): 20240104T000000 20240105T000000"),
    );
    expect(() => resolveCloudBackupId(catalog, 'nope')).toThrow("Unknown backup 'nope' for server 'pg'");
    expect(() => resolveCloudBackupId({ server: 'pg', backups: [] }, 'latest')).toThrow("Unknown backup 'latest' for server 'pg'");
    expect(() => resolveCloudBackupId({ server: 'pg', backups: [backup('20240101T000000', 'DONE')] }, 'last-failed')).toThrow(
      "Unknown backup 'last-failed' for server 'pg'",
    );
  });
});
