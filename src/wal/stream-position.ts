import { readdir } from 'node:fs/promises';
import { parseWalFileName, segmentStartLsn, type Lsn } from '../postgres/lsn.ts';

// Where streaming resumes from what is already in streaming/: the newest file
// there (the archiver always leaves the newest one behind for this reason).
// A .partial is streamed again from its start (the server still has the
// segment that holds the slot's restart point); after a complete segment
// streaming continues with the next one.

export interface LocalPosition {
  timeline: number;
  startLsn: Lsn;
  /** The file the position comes from. */
  file: string;
}

export async function localStreamPosition(streamingDir: string, segmentSize: number): Promise<LocalPosition | null> {
  let names: string[];
  try {
    names = await readdir(streamingDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  let best: { timeline: number; segNo: bigint; partial: boolean; file: string } | null = null;
  for (const file of names) {
    const partial = file.endsWith('.partial');
    const seg = parseWalFileName(partial ? file.slice(0, -'.partial'.length) : file, segmentSize);
    if (!seg) continue;
    const better =
      !best ||
      seg.timeline > best.timeline ||
      (seg.timeline === best.timeline && (seg.segNo > best.segNo || (seg.segNo === best.segNo && !partial)));
    if (better) best = { ...seg, partial, file };
  }
  if (!best) return null;
  return {
    timeline: best.timeline,
    startLsn: segmentStartLsn(best.partial ? best.segNo : best.segNo + 1n, segmentSize),
    file: best.file,
  };
}
