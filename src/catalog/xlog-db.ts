// xlog.db: Barman's WAL catalog, one line per archived file in archive order
// (barman/infofile.py WalFileInfo.to_xlogdb_line / from_xlogdb_line).
// Serialising access is the caller's job: hold the server's `xlogdb` lock (locks.ts).
import { createReadStream } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { createInterface } from 'node:readline';
import { appendLinesDurable, isErrno, writeFileDurable } from '../util/durable-fs.ts';
import { formatPyFloat } from './python-repr.ts';

export interface WalFileInfo {
  /** WAL segment, .history, .backup label or .partial file name, without directory. */
  name: string;
  /** Bytes on disk, after compression and encryption. */
  size: number;
  /** Modification time of the source file, seconds since the epoch. */
  time: number;
  compression: string | null;
  encryption: string | null;
}

export class XlogDbParseError extends Error {
  readonly file: string;
  readonly line: number;
  constructor(file: string, line: number, message: string) {
    super(`${file}:${line}: ${message}`);
    this.name = 'XlogDbParseError';
    this.file = file;
    this.line = line;
  }
}

const INT_RE = /^[+-]?\d+(?:_\d+)*$/;
// Python float() literals as found in the wild (no inf/nan: a WAL has a real mtime).
const FLOAT_RE = /^[+-]?(?:\d+(?:_\d+)*(?:\.(?:\d+(?:_\d+)*)?)?|\.\d+(?:_\d+)*)(?:[eE][+-]?\d+)?$/;

/**
 * Parses one line. Barman splits on any whitespace: current files have 5 tab-separated
 * columns; older ones 3 (name, size, time) or 4 (plus compression).
 */
export function parseXlogDbLine(line: string, file: string, lineNo: number): WalFileInfo {
  const parts = line.trim().split(/\s+/).filter((p) => p !== '');
  if (parts.length < 3 || parts.length > 5) {
    throw new XlogDbParseError(
      file,
      lineNo,
      `expected 3 to 5 whitespace-separated columns (name, size, time[, compression[, encryption]]), found ${parts.length}: ${JSON.stringify(line.length > 120 ? `${line.slice(0, 117)}...` : line)}`,
    );
  }
  const [name = '', sizeText = '', timeText = '', compression = 'None', encryption = 'None'] = parts;
  if (!INT_RE.test(sizeText)) throw new XlogDbParseError(file, lineNo, `size: expected an integer number of bytes, found ${JSON.stringify(sizeText)}`);
  const size = Number(sizeText.replace(/_/g, ''));
  if (!Number.isSafeInteger(size) || size < 0) throw new XlogDbParseError(file, lineNo, `size: expected a non-negative integer, found ${JSON.stringify(sizeText)}`);
  if (!FLOAT_RE.test(timeText)) throw new XlogDbParseError(file, lineNo, `time: expected seconds since the epoch (a float), found ${JSON.stringify(timeText)}`);
  const time = Number(timeText.replace(/_/g, ''));
  if (!Number.isFinite(time)) throw new XlogDbParseError(file, lineNo, `time: expected a finite number, found ${JSON.stringify(timeText)}`);
  return {
    name,
    size,
    time,
    compression: compression === 'None' ? null : compression,
    encryption: encryption === 'None' ? null : encryption,
  };
}

/** The 5-column line Barman 3.17 writes, newline included. */
export function formatXlogDbLine(info: WalFileInfo): string {
  if (/\s/.test(info.name) || info.name === '') throw new TypeError(`xlog.db: invalid WAL file name ${JSON.stringify(info.name)}`);
  if (!Number.isSafeInteger(info.size)) throw new TypeError(`xlog.db: size of ${info.name} must be an integer, got ${info.size}`);
  return `${info.name}\t${info.size}\t${formatPyFloat(info.time)}\t${word(info.compression)}\t${word(info.encryption)}\n`;
}

function word(value: string | null): string {
  if (value === null) return 'None';
  if (value === '' || /\s/.test(value)) throw new TypeError(`xlog.db: invalid column value ${JSON.stringify(value)}`);
  return value;
}

export interface ReadXlogDbOptions {
  /**
   * Called for a line that does not parse, instead of throwing. Lets a caller such as
   * `check` report a damaged catalog and carry on.
   */
  onInvalidLine?: (error: XlogDbParseError) => void;
}

/**
 * Streams the entries of an xlog.db, one line in memory at a time. Blank lines are
 * skipped. A missing file reads as empty: Barman creates (rebuilds) it on first access.
 */
export async function* readXlogDb(path: string, opts: ReadXlogDbOptions = {}): AsyncGenerator<WalFileInfo> {
  const input = createReadStream(path, { encoding: 'utf8' });
  const opened = new Promise<boolean>((resolveOpen, reject) => {
    input.once('open', () => resolveOpen(true));
    input.once('error', (err) => (isErrno(err, 'ENOENT') ? resolveOpen(false) : reject(err)));
  });
  if (!(await opened)) return;
  const lines = createInterface({ input, crlfDelay: Infinity });
  let lineNo = 0;
  try {
    for await (const line of lines) {
      lineNo++;
      if (line.trim() === '') continue;
      let entry: WalFileInfo;
      try {
        entry = parseXlogDbLine(line, path, lineNo);
      } catch (err) {
        if (err instanceof XlogDbParseError && opts.onInvalidLine) {
          opts.onInvalidLine(err);
          continue;
        }
        throw err;
      }
      yield entry;
    }
  } finally {
    lines.close();
    input.destroy();
  }
}

/** Appends entries and fsyncs before returning, as Barman does for every archived WAL. */
export async function appendXlogDb(path: string, entries: readonly WalFileInfo[]): Promise<void> {
  await appendLinesDurable(path, entries.map(formatXlogDbLine));
}

/**
 * Replaces the whole catalog atomically (after WAL deletion or a rebuild). `entries` may be
 * an async stream, so a rewrite of millions of lines stays memory bounded.
 */
export async function writeXlogDb(path: string, entries: Iterable<WalFileInfo> | AsyncIterable<WalFileInfo>): Promise<void> {
  async function* lines(): AsyncGenerator<string> {
    for await (const e of entries) yield formatXlogDbLine(e);
  }
  await writeFileDurable(path, lines());
}

/**
 * The `time` Barman records for a file: Python's os.stat().st_mtime, i.e. seconds plus
 * nanoseconds * 1e-9 computed in double precision. Matching it keeps our lines identical
 * to the ones Barman would write for the same file.
 */
export function walTimeFromStats(stats: BigIntStats): number {
  const ns = stats.mtimeNs;
  const sec = ns / 1_000_000_000n;
  const rem = ns % 1_000_000_000n;
  return Number(sec) + Number(rem) * 1e-9;
}
