import { writeSync } from 'node:fs';

/**
 * writeSync until all of `data[0, length)` is written: a short write (signals, quotas) is not an error.
 * With `position`, the bytes go there (pwrite) and the descriptor's offset is left alone.
 */
export function writeAllSync(fd: number, data: Uint8Array, length = data.length, position?: number): void {
  for (let done = 0; done < length; ) done += writeSync(fd, data, done, length - done, position === undefined ? null : position + done);
}
