// barkeep-cloud-backup-keep: marks a backup in a bucket as archival so that no
// retention policy deletes it (barman/clients/cloud_backup_keep.py). The mark is
// the object base/<id>/annotations/keep holding the recovery target:
//   full        the backup and all WAL from its start stay (PITR to any later time);
//   standalone  the backup and only the WAL that makes it consistent stay.
//   -s prints "Keep: <target>" or "Keep: nokeep"; -r removes the mark.
import { Option } from 'commander';
import { CloudExit, type CloudCommonOptions, cloudProgram, EXIT_OPERATION, parseCloudArgs, runCloud } from './cloud-program.ts';
import { cloudMessages, openCatalogSession, storageExit } from './catalog-command.ts';

interface KeepOptions extends CloudCommonOptions {
  release?: boolean;
  status?: boolean;
  target?: 'full' | 'standalone';
}

export async function main(argv: string[]): Promise<number> {
  const program = cloudProgram(
    'barkeep-cloud-backup-keep',
    'This script can be used to tag backups in cloud storage as archival backups such that they will not be deleted. AWS S3 and S3-compatible stores are supported.',
    'source',
  )
    .argument('<BACKUP_ID>', 'the backup ID of the backup to be kept (or first/oldest, last/latest, last-failed, or a backup name)')
    .addOption(
      new Option('-r, --release', 'If specified, the command will remove the keep annotation and the backup will be eligible for deletion').conflicts([
        'status',
        'target',
      ]),
    )
    .addOption(new Option('-s, --status', 'Print the keep status of the backup').conflicts(['target']))
    .addOption(new Option('--target <target>', 'Specify the recovery target for this backup').choices(['full', 'standalone']));
  const early = parseCloudArgs(program, argv);
  if (early !== null) return early;
  const [url, server, idOrName] = program.args as [string, string, string];
  const o = program.opts<KeepOptions>();
  if (!o.release && !o.status && o.target === undefined) {
    process.stderr.write('ERROR: one of the arguments -r/--release -s/--status --target is required\n');
    return 3;
  }
  const messages = cloudMessages(o);

  return runCloud(async () => {
    const session = await openCatalogSession(url, server, o, messages);
    if (session === null) return 0;
    const { catalog } = session;
    try {
      const backupId = await catalog.resolveBackupId(idOrName);
      if (o.release) {
        await catalog.releaseKeep(backupId);
        messages.info(`Released the keep on backup ${backupId} of server ${server}`);
      } else if (o.status) {
        const target = await catalog.keepAnnotation(backupId);
        process.stdout.write(`Keep: ${target ? target : 'nokeep'}\n`);
      } else {
        const backup = await catalog.backup(backupId);
        if (backup === null) throw new CloudExit(`Backup ${backupId} for server ${server} does not exist`, EXIT_OPERATION);
        if (backup.info.status !== 'DONE') {
          throw new CloudExit(
            `Cannot add keep to backup ${backupId} because it has status ${backup.info.status}. Only backups with status DONE can be kept.`,
            EXIT_OPERATION,
          );
        }
        await catalog.keep(backupId, o.target!);
        messages.info(`Backup ${backupId} of server ${server} is kept (target: ${o.target})`);
      }
      return 0;
    } catch (err) {
      return storageExit(err);
    } finally {
      session.store.close();
    }
  });
}
