// barman-cloud-check-wal-archive's test (barman/xlog.py check_archive_usable)
// on a bucket: the server's WAL archive must be empty, or with a timeline,
// hold nothing from that timeline or later. A missing bucket passes, and is
// left alone (barman-cloud does not create it either: the first archived WAL
// does).
import { isStorageError } from '../storage/errors.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { type CloudServerLocation, parseWalObjectName, walsPrefix } from './layout.ts';
import { timelineOf } from './wal-names.ts';

/** null when the archive can be used; otherwise barman-cloud's reason. */
export async function checkWalArchive(store: ObjectStore, loc: CloudServerLocation, timeline: number | undefined): Promise<string | null> {
  if (!(await store.bucketExists())) return null;
  let count = 0;
  try {
    for await (const o of store.list(walsPrefix(loc))) {
      const parsed = parseWalObjectName(o.key.slice(o.key.lastIndexOf('/') + 1));
      if (!parsed) continue;
      if (timeline === undefined) return 'Expected empty archive';
      if (timelineOf(parsed.name) >= timeline) count++;
    }
  } catch (err) {
    if (isStorageError(err, 'bucket-not-found')) return null;
    throw err;
  }
  if (count === 0) return null;
  return `Found ${count} file${count > 1 ? 's' : ''} in WAL archive equal to or newer than timeline ${timeline}`;
}
