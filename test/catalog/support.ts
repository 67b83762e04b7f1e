// Helpers shared by the catalog tests: a throwaway server directory tree.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServerPaths } from '../../src/catalog/layout.ts';

export async function makeScratchDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `barkeep-${prefix}-`));
}

/** Paths laid out as Barman's defaults: backup_directory = <home>/<server>. */
export function serverPaths(home: string, name = 'pg'): ServerPaths {
  const backupDirectory = join(home, name);
  const walsDirectory = join(backupDirectory, 'wals');
  return {
    name,
    backupDirectory,
    basebackupsDirectory: join(backupDirectory, 'base'),
    walsDirectory,
    incomingWalsDirectory: join(backupDirectory, 'incoming'),
    streamingWalsDirectory: join(backupDirectory, 'streaming'),
    errorsDirectory: join(backupDirectory, 'errors'),
    xlogdbDirectory: walsDirectory,
    lockDirectory: home,
  };
}
