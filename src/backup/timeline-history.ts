// Timelines that branched off a backup's timeline after it ended, read from the
// archived history files (Barman's Server.get_children_timelines): show-backup
// warns that its WAL figures mix timelines when there are any.
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import type { ServerPaths } from '../catalog/layout.ts';
import { historyFileName, type Lsn, parseLsn } from '../postgres/lsn.ts';
import { pathExists } from '../util/durable-fs.ts';
import { createDecompressor, detectCompression } from '../wal/compression.ts';

export interface TimelineSwitch {
  /** The timeline the history file describes. */
  tli: number;
  parentTli: number;
  switchpoint: Lsn;
  reason: string;
}

/**
 * Switches recorded in the history files of timelines tli+1, tli+2, ... (up to the
 * first missing one) whose parent is `tli` and, if given, that happened at or after
 * `forkedAfter` (an LSN such as the backup's end_xlog).
 */
export async function childTimelines(paths: ServerPaths, tli: number, forkedAfter: string | null): Promise<TimelineSwitch[]> {
  const after = forkedAfter === null ? null : parseLsn(forkedAfter);
  const out: TimelineSwitch[] = [];
  for (let child = tli + 1; ; child++) {
    const path = join(paths.walsDirectory, historyFileName(child));
    if (!(await pathExists(path))) break;
    for (const entry of parseHistoryFile(child, await readMaybeCompressed(path), path)) {
      if (entry.parentTli !== tli) continue;
      if (after !== null && entry.switchpoint < after) continue;
      out.push(entry);
    }
  }
  return out;
}

/** `parentTLI<TAB>switchpoint<TAB>reason` lines; blank lines and `#` comments skipped. */
export function parseHistoryFile(tli: number, text: string, source: string): TimelineSwitch[] {
  const out: TimelineSwitch[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split('\t');
    if (fields.length !== 3 || !/^\d+$/.test(fields[0]!)) throw new Error(`${source}: invalid history file line ${JSON.stringify(line)}`);
    out.push({ tli, parentTli: Number(fields[0]), switchpoint: parseLsn(fields[1]!), reason: fields[2]! });
  }
  if (out.length === 0) throw new Error(`${source}: empty history file`);
  return out;
}

export async function readMaybeCompressed(path: string): Promise<string> {
  const chunks: Buffer[] = [];
  await pipeline(
    createReadStream(path),
    createDecompressor(await detectCompression(path)),
    new Writable({
      write(chunk: Buffer, _enc, done) {
        chunks.push(chunk);
        done();
      },
    }),
  );
  return Buffer.concat(chunks).toString('utf8');
}
