import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backupInfoPath,
  createServerLayout,
  currentXlogDbPath,
  identityPath,
  keepAnnotationPath,
  legacyKeepAnnotationPath,
  metaBackupInfoPath,
  walHashDir,
  walPath,
  xlogDbPath,
} from '../../src/catalog/layout.ts';
import { makeScratchDir, serverPaths } from './support.ts';

let home: string;
beforeAll(async () => {
  home = await makeScratchDir('layout');
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

describe('server layout', () => {
  it('creates the Barman tree and is idempotent', async () => {
    const paths = serverPaths(home, 'fresh');
    await createServerLayout(paths);
    await createServerLayout(paths);
    expect((await readdir(paths.backupDirectory)).sort()).toEqual(['base', 'errors', 'incoming', 'meta', 'streaming', 'wals']);
  });

  it('places files where Barman 3.17 does', () => {
    const paths = serverPaths('/var/lib/barman', 'pg');
    expect(metaBackupInfoPath(paths, '20240901T103000')).toBe('/var/lib/barman/pg/meta/20240901T103000-backup.info');
    expect(currentXlogDbPath(paths)).toBe('/var/lib/barman/pg/wals/pg-xlog.db');
    expect(identityPath(paths)).toBe('/var/lib/barman/pg/identity.json');
    expect(keepAnnotationPath(paths, '20240901T103000')).toBe('/var/lib/barman/pg/meta/20240901T103000-keep');
    expect(legacyKeepAnnotationPath(paths, '20240901T103000')).toBe('/var/lib/barman/pg/base/20240901T103000/annotations/keep');
    expect(walPath(paths, '000000010000000000000004')).toBe('/var/lib/barman/pg/wals/0000000100000000/000000010000000000000004');
    expect(walPath(paths, '00000002.history')).toBe('/var/lib/barman/pg/wals/00000002.history');
  });

  it('refuses backup IDs that would escape the directory', () => {
    const paths = serverPaths('/var/lib/barman', 'pg');
    expect(() => metaBackupInfoPath(paths, '../../etc')).toThrow(/invalid backup ID/);
  });
});

describe('walHashDir', () => {
  it('uses timeline + log id of segments, labels and partial files', () => {
    expect(walHashDir('000000010000000000000004')).toBe('0000000100000000');
    expect(walHashDir('000000020002E59C000000BC')).toBe('000000020002E59C');
    expect(walHashDir('000000010000000000000002.00000028.backup')).toBe('0000000100000000');
    expect(walHashDir('000000010000000A00000007.partial')).toBe('000000010000000A');
    expect(walHashDir('0000000100000000000000ff')).toBe('0000000100000000');
    expect(walHashDir('0000000a0000000b000000ff')).toBe('0000000A0000000B');
  });

  it('puts history files at the root', () => {
    expect(walHashDir('00000002.history')).toBe('');
  });

  it('rejects names that are not WAL files', () => {
    expect(() => walHashDir('xlog.db')).toThrow(/not a WAL file name: "xlog.db"/);
    expect(() => walHashDir('00000001000000000000000')).toThrow(/not a WAL file name/);
  });
});

describe('legacy fallbacks', () => {
  it('reads backup.info from base/<id>/ only when meta/ has none; writes go to meta/', async () => {
    const paths = serverPaths(home, 'legacy');
    await createServerLayout(paths);
    const id = '20240901T103000';
    const legacy = join(paths.basebackupsDirectory, id, 'backup.info');
    const meta = metaBackupInfoPath(paths, id);

    expect(await backupInfoPath(paths, id)).toBe(meta); // neither exists: where it will be written
    await mkdir(join(paths.basebackupsDirectory, id));
    await writeFile(legacy, 'status=DONE\n');
    expect(await backupInfoPath(paths, id)).toBe(legacy);
    await writeFile(meta, 'status=DONE\n');
    expect(await backupInfoPath(paths, id)).toBe(meta);
  });

  it('reads wals/xlog.db only when <server>-xlog.db does not exist', async () => {
    const paths = serverPaths(home, 'oldwals');
    await createServerLayout(paths);
    expect(await xlogDbPath(paths)).toBe(join(paths.walsDirectory, 'oldwals-xlog.db'));
    await writeFile(join(paths.walsDirectory, 'xlog.db'), '');
    expect(await xlogDbPath(paths)).toBe(join(paths.walsDirectory, 'xlog.db'));
    await writeFile(join(paths.walsDirectory, 'oldwals-xlog.db'), '');
    expect(await xlogDbPath(paths)).toBe(join(paths.walsDirectory, 'oldwals-xlog.db'));
  });

  it('honours a separate xlogdb_directory', async () => {
    const paths = { ...serverPaths(home, 'split'), xlogdbDirectory: join(home, 'xlogdbs') };
    await createServerLayout(paths);
    expect((await stat(join(home, 'xlogdbs'))).isDirectory()).toBe(true);
    expect(await xlogDbPath(paths)).toBe(join(home, 'xlogdbs', 'split-xlog.db'));
  });
});
