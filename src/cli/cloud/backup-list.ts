// barkeep-cloud-backup-list: the backups of a server in a bucket, printed as
// barman-cloud-backup-list prints them (barman/clients/cloud_backup_list.py), so
// scripts reading its columns or its JSON keep working:
//   console: DONE backups only, oldest first, in fixed-width columns;
//   json:    {"backups_list": [backup.info of every backup, as BackupInfo.to_json()]}.
import { Option } from 'commander';
import { backupInfoJson, pyJsonDumps } from '../../cloud/catalog-json.ts';
import type { CloudBackup, CloudBackupCatalog } from '../../cloud/catalog.ts';
import { openCatalogSession, cloudMessages, storageExit } from './catalog-command.ts';
import { type CloudCommonOptions, cloudProgram, parseCloudArgs, runCloud } from './cloud-program.ts';

interface ListOptions extends CloudCommonOptions {
  format: 'console' | 'json';
}

export async function main(argv: string[]): Promise<number> {
  const program = cloudProgram(
    'barkeep-cloud-backup-list',
    'This script can be used to list backups made with barman-cloud-backup (or barkeep-cloud-backup). AWS S3 and S3-compatible stores are supported.',
    'source',
  ).addOption(new Option('--format <format>', 'Output format (console or json). Default console.').choices(['console', 'json']).default('console'));
  const early = parseCloudArgs(program, argv);
  if (early !== null) return early;
  const [url, server] = program.args as [string, string];
  const o = program.opts<ListOptions>();
  const messages = cloudMessages(o);

  return runCloud(async () => {
    const session = await openCatalogSession(url, server, o, messages);
    if (session === null) return 0;
    try {
      const backups = await session.catalog.backups();
      const lines = o.format === 'json' ? [jsonList(backups)] : await consoleList(session.catalog, backups);
      process.stdout.write(lines.map((l) => `${l}\n`).join(''));
      return 0;
    } catch (err) {
      return storageExit(err);
    } finally {
      session.store.close();
    }
  });
}

/** The columns of barman-cloud-backup-list: "{:<20}{:<25}{:<30}{:<17}{:<20}". */
export function consoleRow(id: string, endTime: string, beginWal: string, archival: string, name: string): string {
  return `${ljust(id, 20)}${ljust(endTime, 25)}${ljust(beginWal, 30)}${ljust(archival, 17)}${ljust(name, 20)}`;
}

async function consoleList(catalog: CloudBackupCatalog, backups: readonly CloudBackup[]): Promise<string[]> {
  const lines = [consoleRow('Backup ID', 'End Time', 'Begin Wal', 'Archival Status', 'Name')];
  for (const b of backups) {
    if (b.info.status !== 'DONE') continue;
    const keep = await catalog.keepAnnotation(b.backupId);
    lines.push(consoleRow(b.backupId, wallClock(b.info.end_time), b.info.begin_wal ?? 'None', keep ? `KEEP:${keep.toUpperCase()}` : '', b.info.backup_name ?? ''));
  }
  return lines;
}

export function jsonList(backups: readonly CloudBackup[]): string {
  return pyJsonDumps(new Map([['backups_list', backups.map((b) => backupInfoJson(b.backupId, b.info))]]));
}

/** strftime('%Y-%m-%d %H:%M:%S') of a backup.info time: the wall-clock time written in it. */
export function wallClock(text: string | null): string {
  if (text === null) return 'None';
  const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})/.exec(text.trim());
  return m ? `${m[1]} ${m[2]}` : text;
}

/** Python's str.ljust / "{:<n}": padded to n characters (code points), never cut. */
function ljust(s: string, width: number): string {
  const length = [...s].length;
  return length >= width ? s : s + ' '.repeat(width - length);
}
