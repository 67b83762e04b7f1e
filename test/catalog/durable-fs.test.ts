import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendLineDurable, ensureDir, unlinkDurable, writeFileDurable } from '../../src/util/durable-fs.ts';
import { makeScratchDir } from './support.ts';

let dir: string;
beforeAll(async () => {
  dir = await makeScratchDir('durable');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('writeFileDurable', () => {
  it('replaces the content and leaves no temp file behind', async () => {
    const sub = join(dir, 'replace');
    await mkdir(sub);
    const path = join(sub, 'file.info');
    await writeFileDurable(path, 'one\n');
    await writeFileDurable(path, 'two\n');
    await writeFileDurable(path, new Uint8Array([0x33, 0x0a]));
    expect(await readFile(path, 'utf8')).toBe('3\n');
    expect(await readdir(sub)).toEqual(['file.info']);
  });

  it('applies an explicit mode exactly', async () => {
    const path = join(dir, 'private');
    await writeFileDurable(path, 'secret', 0o600);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it('leaves the old content and no temp file when the write fails', async () => {
    const sub = join(dir, 'failing');
    await mkdir(sub);
    const path = join(sub, 'file.info');
    await writeFileDurable(path, 'old\n');
    async function* boom(): AsyncGenerator<string> {
      yield 'partial';
      throw new Error('source failed');
    }
    await expect(writeFileDurable(path, boom())).rejects.toThrow('source failed');
    expect(await readFile(path, 'utf8')).toBe('old\n');
    expect(await readdir(sub)).toEqual(['file.info']);
  });

  it('fails with the path when the directory is missing', async () => {
    await expect(writeFileDurable(join(dir, 'missing', 'x'), 'x')).rejects.toThrow(/missing/);
  });
});

describe('appendLineDurable', () => {
  it('adds the newline and appends', async () => {
    const path = join(dir, 'lines');
    await appendLineDurable(path, 'a');
    await appendLineDurable(path, 'b\n');
    expect(await readFile(path, 'utf8')).toBe('a\nb\n');
  });
});

describe('ensureDir', () => {
  it('creates missing parents, reports them, and accepts existing directories', async () => {
    const target = join(dir, 'x', 'y', 'z');
    expect(await ensureDir(target)).toEqual([join(dir, 'x'), join(dir, 'x', 'y'), target]);
    expect(await ensureDir(target)).toEqual([]);
    expect((await stat(target)).isDirectory()).toBe(true);
  });

  it('refuses a path blocked by a file', async () => {
    await writeFile(join(dir, 'plainfile'), '');
    await expect(ensureDir(join(dir, 'plainfile', 'sub'))).rejects.toThrow(/plainfile exists and is not a directory/);
  });
});

describe('unlinkDurable', () => {
  it('removes a file and tolerates one already gone', async () => {
    const path = join(dir, 'gone');
    await writeFile(path, '');
    expect(await unlinkDurable(path)).toBe(true);
    expect(await unlinkDurable(path)).toBe(false);
  });
});
