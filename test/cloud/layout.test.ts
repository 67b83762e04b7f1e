import { describe, expect, it } from 'vitest';
import {
  backupInfoKey,
  backupTarName,
  keepAnnotationKey,
  normalisePrefix,
  parseBackupTarName,
  parseWalObjectName,
  walKey,
} from '../../src/cloud/layout.ts';

// The keys must be byte-for-byte barman-cloud's, or existing buckets become unreadable.
const loc = { bucket: 'barman-s3-test', prefix: '', server: 'pg12' };

describe('barman-cloud object layout', () => {
  it('puts segments under their hash directory and history files directly under wals/', () => {
    expect(walKey(loc, '000000010000000000000004', 'bzip2')).toBe('pg12/wals/0000000100000000/000000010000000000000004.bz2');
    expect(walKey(loc, '00000002.history', null)).toBe('pg12/wals/00000002.history');
    expect(walKey({ ...loc, prefix: 'a/b/' }, '000000010000000100000004.00000028.backup', 'gzip')).toBe(
      'a/b/pg12/wals/0000000100000001/000000010000000100000004.00000028.backup.gz',
    );
  });

  it('normalises URL paths into prefixes', () => {
    expect(normalisePrefix('')).toBe('');
    expect(normalisePrefix('/')).toBe('');
    expect(normalisePrefix('/x/y')).toBe('x/y/');
    expect(normalisePrefix('x/')).toBe('x/');
  });

  it('reads WAL object names with at most one known suffix', () => {
    expect(parseWalObjectName('000000010000000000000004.zst')).toEqual({ name: '000000010000000000000004', compression: 'zstd' });
    expect(parseWalObjectName('000000010000000000000004')).toEqual({ name: '000000010000000000000004', compression: null });
    expect(parseWalObjectName('000000010000000000000004.partial.gz')).toEqual({ name: '000000010000000000000004.partial', compression: 'gzip' });
    expect(parseWalObjectName('000000010000000000000004.gz.gz')).toBeNull();
    expect(parseWalObjectName('000000010000000000000004.rar')).toBeNull();
    expect(parseWalObjectName('notes.txt')).toBeNull();
  });

  it('names backup archives and their parts as barman-cloud does', () => {
    expect(backupTarName('data', 0, null)).toBe('data.tar');
    expect(backupTarName('data', 1, 'gzip')).toBe('data_0001.tar.gz');
    expect(backupTarName('16385', 0, 'zstd')).toBe('16385.tar.zst');
    expect(() => backupTarName('data', 0, 'xz')).toThrow(/cannot be xz-compressed/);
    expect(parseBackupTarName('data_0012.tar.bz2')).toEqual({ base: 'data', part: 12, compression: 'bzip2' });
    expect(parseBackupTarName('16385.tar')).toEqual({ base: '16385', part: 0, compression: null });
    expect(parseBackupTarName('backup.info')).toBeNull();
    expect(backupInfoKey(loc, '20260101T000000')).toBe('pg12/base/20260101T000000/backup.info');
    expect(keepAnnotationKey(loc, '20260101T000000')).toBe('pg12/base/20260101T000000/annotations/keep');
  });
});
