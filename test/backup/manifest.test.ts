import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { keyToDisplay, ManifestError, parseManifest, readManifest } from '../../src/backup/manifest.ts';
import { makeTempDir } from '../support/tmp.ts';

// backup_manifest parsing: the structure PostgreSQL writes (one file per line,
// checksum of everything before the last line), and the ways it can be wrong.

/** A manifest laid out as PostgreSQL's backup_manifest.c writes it, with a correct checksum. */
function manifestText(opts: { version?: number; sysid?: string; files?: string[]; ranges?: string[] } = {}): string {
  const head = `{ "PostgreSQL-Backup-Manifest-Version": ${opts.version ?? 1},\n${opts.sysid ? `"System-Identifier": ${opts.sysid},\n` : ''}`;
  const files = opts.files ?? ['{ "Path": "PG_VERSION", "Size": 3, "Last-Modified": "2026-11-21 18:46:09 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "8a744722" }'];
  const ranges = opts.ranges ?? ['{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }'];
  const body = `${head}"Files": [\n${files.join(',\n')}\n],\n"WAL-Ranges": [\n${ranges.join(',\n')}\n],\n`;
  const sum = createHash('sha256').update(body).digest('hex');
  return `${body}"Manifest-Checksum": "${sum}"}\n`;
}

const parse = (text: string) => parseManifest(Buffer.from(text), '/b/backup_manifest');

describe('parseManifest', () => {
  it('reads files, WAL ranges and the checksum of a version 1 manifest', () => {
    const m = parse(manifestText());
    expect(m.version).toBe(1);
    expect(m.systemIdentifier).toBeNull();
    expect([...m.files.values()]).toEqual([
      { path: 'PG_VERSION', key: 'PG_VERSION', size: 3, lastModified: '2026-11-21 18:46:09 GMT', algorithm: 'CRC32C', checksum: Buffer.from('8a744722', 'hex') },
    ]);
    expect(m.walRanges).toEqual([{ timeline: 1, startLsn: 0x2000028n, endLsn: 0x2000100n }]);
    expect(m.manifestChecksum).toMatch(/^[0-9a-f]{64}$/);
  });

  it('keeps a version 2 System-Identifier exactly (it does not fit a double)', () => {
    const m = parse(manifestText({ version: 2, sysid: '7441839027128293617' }));
    expect(m.version).toBe(2);
    expect(m.systemIdentifier).toBe('7441839027128293617');
    expect(() => parse(manifestText({ version: 2 }))).toThrow('manifest version 2 without System-Identifier');
  });

  it('decodes Encoded-Path (names that are not UTF-8) and keeps the raw bytes as the key', () => {
    const raw = Buffer.from([0x62, 0x61, 0x73, 0x65, 0x2f, 0xff, 0x41]); // "base/\xffA"
    const m = parse(
      manifestText({
        files: [
          `{ "Encoded-Path": "${raw.toString('hex')}", "Size": 0, "Last-Modified": "x", "Checksum-Algorithm": "SHA256", "Checksum": "${createHash('sha256').digest('hex')}" }`,
          '{ "Path": "base/caf\\u00e9", "Size": 1 }',
        ],
      }),
    );
    const [encoded, accented] = [...m.files.values()];
    expect(encoded!.key).toBe(raw.toString('latin1'));
    expect(encoded!.path).toBe('base/\ufffdA');
    expect(accented!.path).toBe('base/café');
    expect(keyToDisplay(accented!.key)).toBe('base/café');
    expect(accented!.algorithm).toBe('NONE');
    expect(accented!.checksum).toBeNull();
  });

  it('accepts no WAL-Ranges at all (manifests generated for rsync backups)', () => {
    const text = manifestText().replace(/"WAL-Ranges": \[\n.*\n\],\n/, '');
    const body = text.slice(0, text.lastIndexOf('"Manifest-Checksum"'));
    const fixed = `${body}"Manifest-Checksum": "${createHash('sha256').update(body).digest('hex')}"}\n`;
    expect(parse(fixed).walRanges).toEqual([]);
  });

  it.each([
    ['a changed file line', (t: string) => t.replace('"Size": 3', '"Size": 4'), 'manifest checksum mismatch'],
    ['a changed checksum line', (t: string) => t.replace(/"Manifest-Checksum": "./, '"Manifest-Checksum": "x'), 'invalid manifest checksum'],
    ['a wrong checksum', (t: string) => t.replace(/"Manifest-Checksum": "[0-9a-f]+"/, `"Manifest-Checksum": "${'0'.repeat(64)}"`), 'manifest checksum mismatch'],
    ['no checksum', (t: string) => t.replace(/,\n"Manifest-Checksum": "[0-9a-f]+"/, ''), 'manifest has no checksum'],
    ['no final newline', (t: string) => t.trimEnd(), 'last line not newline-terminated'],
    ['not JSON', (t: string) => t.slice(0, 50), 'not valid JSON'],
    ['another document', () => '{"hello": 1}\n', 'no PostgreSQL-Backup-Manifest-Version'],
    ['an unknown version', (t: string) => t.replace('Version": 1', 'Version": 3'), 'unsupported manifest version 3'],
  ])('rejects %s', (_what, change, message) => {
    expect(() => parse(change(manifestText()))).toThrow(message);
  });

  it.each([
    ['a duplicate path', ['{ "Path": "a", "Size": 1 }', '{ "Path": "a", "Size": 1 }'], 'duplicate path name in backup manifest: "a"'],
    ['a missing size', ['{ "Path": "a" }'], '"a": missing size'],
    ['a negative size', ['{ "Path": "a", "Size": -1 }'], 'file size is not an integer'],
    ['both Path and Encoded-Path', ['{ "Path": "a", "Encoded-Path": "61", "Size": 1 }'], 'both path name and encoded path name'],
    ['a bad Encoded-Path', ['{ "Encoded-Path": "6", "Size": 1 }'], 'could not decode file name'],
    ['an unknown algorithm', ['{ "Path": "a", "Size": 1, "Checksum-Algorithm": "MD5", "Checksum": "00" }'], 'unrecognized checksum algorithm: "MD5"'],
    ['a checksum of the wrong length', ['{ "Path": "a", "Size": 1, "Checksum-Algorithm": "CRC32C", "Checksum": "0000" }'], 'CRC32C checksum has length 2, expected 4'],
    ['a checksum without algorithm', ['{ "Path": "a", "Size": 1, "Checksum": "00000000" }'], 'checksum without algorithm'],
    ['an unknown field', ['{ "Path": "a", "Size": 1, "Owner": "me" }'], 'unexpected file field "Owner"'],
  ])('rejects a file entry with %s, naming the manifest', (_what, files, message) => {
    let error: unknown;
    try {
      parse(manifestText({ files }));
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ManifestError);
    expect((error as Error).message).toContain('/b/backup_manifest: Files[');
    expect((error as Error).message).toContain(message);
  });

  it('rejects bad WAL ranges', () => {
    expect(() => parse(manifestText({ ranges: ['{ "Timeline": 1, "Start-LSN": "0/200", "End-LSN": "0/100" }'] }))).toThrow('End-LSN is before Start-LSN');
    expect(() => parse(manifestText({ ranges: ['{ "Timeline": 1, "Start-LSN": "zz", "End-LSN": "0/100" }'] }))).toThrow('could not parse Start-LSN "zz"');
    expect(() => parse(manifestText({ ranges: ['{ "Start-LSN": "0/1", "End-LSN": "0/100" }'] }))).toThrow('missing timeline');
  });

  it('readManifest names a missing file', async () => {
    const dir = makeTempDir('manifest');
    await expect(readManifest(join(dir, 'backup_manifest'))).rejects.toThrow(`${join(dir, 'backup_manifest')}: no such file`);
    writeFileSync(join(dir, 'backup_manifest'), manifestText());
    expect((await readManifest(join(dir, 'backup_manifest'))).files.size).toBe(1);
  });
});
