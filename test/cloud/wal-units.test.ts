// The small pure parts of the cloud WAL commands: segment arithmetic for
// prefetch, --tag parsing, and the command-line scan of the async fast path.
import { mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { alreadyPushed } from '../../src/cli/cloud/wal-archive-fast.ts';
import { parseTag } from '../../src/cli/cloud/wal-archive-tags.ts';
import { nextSegmentNames } from '../../src/cloud/wal-names.ts';
import { writeMarker } from '../../src/cloud/wal-spool.ts';
import { makeTempDir } from '../support/tmp.ts';

describe('nextSegmentNames', () => {
  it('counts within a log and across the log boundary, by segment size', () => {
    expect(nextSegmentNames('0000000100000000000000FE', 3, 16 * 1024 * 1024)).toEqual([
      '0000000100000000000000FF',
      '000000010000000100000000',
      '000000010000000100000001',
    ]);
    expect(nextSegmentNames('000000020000000300000FFF', 1, 1024 * 1024)).toEqual(['000000020000000400000000']);
    expect(nextSegmentNames('000000010000000000000003', 2, 1024 ** 3)).toEqual(['000000010000000100000000', '000000010000000100000001']);
  });

  it('never for history, partial or backup label files', () => {
    expect(nextSegmentNames('00000002.history', 4, 16 * 1024 * 1024)).toEqual([]);
    expect(nextSegmentNames('000000010000000000000003.partial', 4, 16 * 1024 * 1024)).toEqual([]);
    expect(nextSegmentNames('000000010000000000000003.00000028.backup', 4, 16 * 1024 * 1024)).toEqual([]);
  });
});

describe('--tag KEY,VALUE', () => {
  it('reads one CSV record of two fields', () => {
    expect(parseTag('env,prod')).toEqual(['env', 'prod']);
    expect(parseTag('"a,b",c')).toEqual(['a,b', 'c']);
    expect(parseTag('k,"say ""hi"""')).toEqual(['k', 'say "hi"']);
    expect(parseTag('k,')).toEqual(['k', '']);
    expect(() => parseTag('novalue')).toThrow(/expected KEY,VALUE/);
    expect(() => parseTag('a,b,c')).toThrow(/expected KEY,VALUE/);
    expect(() => parseTag('"a,b')).toThrow(/unterminated quote/);
  });
});

describe('the async fast path', () => {
  it('answers only for an --async call whose exact file has a marker; anything unusual goes to the full parser', async () => {
    const pgdata = makeTempDir('fast');
    mkdirSync(join(pgdata, 'pg_wal'));
    const spool = join(pgdata, 'spool');
    mkdirSync(spool);
    const name = '000000010000000000000007';
    const path = join(pgdata, 'pg_wal', name);
    writeFileSync(path, 'wal');
    const st = statSync(path);
    await writeMarker(spool, name, { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, key: 'k' });

    const base = ['-P', 'barman-cloud', '-e', 'AES256', '--zstd', '--async', `--spool-dir=${spool}`, 's3://b/', 'pg'];
    expect(alreadyPushed([...base, path])).toBe(true);
    expect(alreadyPushed(['--spool-dir', spool, '--async', 's3://b/', 'pg', path])).toBe(true);
    // Not async, not this file, or options this scan does not know: no answer here.
    expect(alreadyPushed(base.filter((a) => a !== '--async').concat(path))).toBe(false);
    expect(alreadyPushed([...base, join(pgdata, 'pg_wal', '000000010000000000000008')])).toBe(false);
    expect(alreadyPushed(['-t', ...base, path])).toBe(false);
    expect(alreadyPushed(['--help', ...base, path])).toBe(false);
    expect(alreadyPushed(['-zv', ...base, path])).toBe(false);
    expect(alreadyPushed([...base, path, 'extra'])).toBe(false);

    // Another file under the same name (a re-created cluster): the marker does not count.
    renameSync(path, `${path}.old`);
    writeFileSync(path, 'wal');
    expect(alreadyPushed([...base, path])).toBe(false);
  });
});
