// barkeep-cloud-backup-show: one backup's metadata from its backup.info, as
// barman-cloud-backup-show prints it (barman/clients/cloud_backup_show.py):
// console like `barman show-backup` without the WAL and catalog sections, JSON
// as {"<server_name>": <backup.info as BackupInfo.to_json()>}.
import { Option } from 'commander';
import { backupInfoJson, pyJsonDumps } from '../../cloud/catalog-json.ts';
import { showBackupConsole } from './backup-show-format.ts';
import { cloudMessages, openCatalogSession, storageExit } from './catalog-command.ts';
import { CloudExit, type CloudCommonOptions, cloudProgram, EXIT_OPERATION, parseCloudArgs, runCloud } from './cloud-program.ts';

interface ShowOptions extends CloudCommonOptions {
  format: 'console' | 'json';
}

export async function main(argv: string[]): Promise<number> {
  const program = cloudProgram(
    'barkeep-cloud-backup-show',
    'This script can be used to show metadata for backups made with barman-cloud-backup (or barkeep-cloud-backup). AWS S3 and S3-compatible stores are supported.',
    'source',
  )
    .argument('<BACKUP_ID>', 'the backup ID (or first/oldest, last/latest, last-failed, or a backup name)')
    .addOption(new Option('--format <format>', 'Output format (console or json). Default console.').choices(['console', 'json']).default('console'));
  const early = parseCloudArgs(program, argv);
  if (early !== null) return early;
  const [url, server, idOrName] = program.args as [string, string, string];
  const o = program.opts<ShowOptions>();
  const messages = cloudMessages(o);

  return runCloud(async () => {
    const session = await openCatalogSession(url, server, o, messages);
    if (session === null) return 0;
    try {
      const backupId = await session.catalog.resolveBackupId(idOrName);
      const backup = await session.catalog.backup(backupId);
      if (backup === null) throw new CloudExit(`Backup ${backupId} for server ${server} does not exist`, EXIT_OPERATION);
      const lines =
        o.format === 'json'
          ? [pyJsonDumps(new Map([[backup.info.server_name, backupInfoJson(backup.backupId, backup.info)]]))]
          : showBackupConsole(backup.backupId, backup.info);
      process.stdout.write(lines.map((l) => `${l}\n`).join(''));
      return 0;
    } catch (err) {
      return storageExit(err);
    } finally {
      session.store.close();
    }
  });
}
