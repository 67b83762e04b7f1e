import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatIdentity, parseIdentity, readIdentity, writeIdentity, writeIdentityIfMissing } from '../../src/catalog/identity.ts';
import { BARMAN_34_IDENTITY_JSON } from './fixtures/barman-samples.ts';
import { makeScratchDir } from './support.ts';

let dir: string;
beforeAll(async () => {
  dir = await makeScratchDir('identity');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('identity.json', () => {
  it('round-trips the file Barman 3.4 wrote byte for byte', () => {
    const identity = parseIdentity(BARMAN_34_IDENTITY_JSON, 'identity.json');
    expect(identity).toEqual({ systemid: '7710654326454156009', version: '15' });
    expect(formatIdentity(identity)).toBe(BARMAN_34_IDENTITY_JSON);
  });

  it('keeps every digit of a systemid stored as a bare number', () => {
    // 7710654326454156009 is not representable as a double (it would read 7710654326454156000).
    expect(parseIdentity('{"systemid": 7710654326454156009, "version": 15}', 'x').systemid).toBe('7710654326454156009');
  });

  it('names the file and the expectation on bad content', () => {
    expect(() => parseIdentity('{"systemid": "1"', '/h/pg/identity.json')).toThrow(/^\/h\/pg\/identity\.json: expected a JSON object/);
    expect(() => parseIdentity('{"version": "15"}', '/h/pg/identity.json')).toThrow('/h/pg/identity.json: expected "systemid" to be a non-empty string');
  });

  it('reads null when absent, writes once, never overwrites in IfMissing mode', async () => {
    const path = join(dir, 'identity.json');
    expect(await readIdentity(path)).toBeNull();
    expect(await writeIdentityIfMissing(path, { systemid: '1', version: '16' })).toBe(true);
    expect(await writeIdentityIfMissing(path, { systemid: '2', version: '17' })).toBe(false);
    expect(await readIdentity(path)).toEqual({ systemid: '1', version: '16' });
    await writeIdentity(path, { systemid: '7710654326454156009', version: '15' });
    expect(await readFile(path, 'utf8')).toBe(BARMAN_34_IDENTITY_JSON);
    expect(await readdir(dir)).toEqual(['identity.json']);
  });

  it('reports a corrupt file with its path', async () => {
    const path = join(dir, 'corrupt.json');
    await writeFile(path, 'not json');
    await expect(readIdentity(path)).rejects.toThrow(`${path}: expected a JSON object`);
  });
});
