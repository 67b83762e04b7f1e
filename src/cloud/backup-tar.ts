// A block-level tar reader for the backup archives of the cloud commands, used
// both to re-frame the archives PostgreSQL sends (cloud-backup: drop members,
// split into parts at member boundaries) and to extract them (cloud-restore).
//
// It only looks at headers: member contents pass through as slices of the
// input chunks, never copied, which is what keeps a multi-GB tar cheap to
// re-frame. It understands what the two writers of these archives produce:
// PostgreSQL's BASE_BACKUP (ustar, base-256 sizes above 8 GiB) and Python's
// tarfile in PAX format (barman-cloud-backup: an 'x' header before most
// members), plus GNU long names for good measure. Anything malformed, and an
// archive that ends without its end-of-archive block, is an error: a
// truncated object must never look like a complete one.

export const BLOCK = 512;
/** The end-of-archive marker: two zero blocks. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);

export type TarMemberType = 'file' | 'hardlink' | 'symlink' | 'directory' | 'other';

export interface TarMember {
  /** Path bytes as a latin1 string (one character per byte), as in the archive: no normalisation. */
  name: string;
  /** Link target (latin1), for symlinks and hard links. */
  linkname: string;
  type: TarMemberType;
  /** The raw type flag, for messages about unsupported members. */
  typeflag: string;
  size: number;
  mode: number;
  /** Seconds since the epoch. */
  mtime: number;
}

export type TarEvent =
  /** A member starts: `raw` is every header block that describes it (extension headers included). */
  | { kind: 'member'; member: TarMember; raw: Buffer[] }
  /** Content bytes of the current member (a slice of the input). */
  | { kind: 'data'; data: Buffer }
  /** The zero padding after the content (a slice of the input; may be empty). */
  | { kind: 'pad'; data: Buffer }
  /** The end-of-archive block: the archive is complete, whatever follows is ignored. */
  | { kind: 'end' };

export class TarFormatError extends Error {}

/** Extension headers are small; a huge one means garbage, not a long file name. */
const MAX_EXTENSION = 1 << 20;

type State = 'header' | 'extension' | 'data' | 'pad' | 'end';

interface Overrides {
  path?: string;
  linkpath?: string;
  size?: number;
  mtime?: number;
}

export class TarParser {
  #state: State = 'header';
  /** A header (or extension data) split across input chunks. */
  #partial: Buffer[] = [];
  #partialLength = 0;
  #need = BLOCK;
  #remaining = 0;
  #pad = 0;
  #preamble: Buffer[] = [];
  #extension: { type: string; header: Buffer } | null = null;
  #pending: Overrides = {};
  #current: TarMember | null = null;
  /** Bytes consumed so far, for messages. */
  offset = 0;

  get ended(): boolean {
    return this.#state === 'end';
  }

  /** The member whose content is being read, if any. */
  get current(): TarMember | null {
    return this.#current;
  }

  /** Parses the next bytes of the archive; the events are valid until the next call. */
  *feed(chunk: Buffer): Generator<TarEvent> {
    let pos = 0;
    while (pos < chunk.length) {
      const state = this.#state;
      if (state === 'end') {
        this.offset += chunk.length - pos;
        return;
      }
      if (state === 'data' || state === 'pad') {
        const n = Math.min(state === 'data' ? this.#remaining : this.#pad, chunk.length - pos);
        const slice = chunk.subarray(pos, pos + n);
        pos += n;
        this.offset += n;
        if (state === 'data') {
          this.#remaining -= n;
          if (n > 0) yield { kind: 'data', data: slice };
          if (this.#remaining === 0) {
            this.#state = 'pad';
            if (this.#pad === 0) {
              this.#state = 'header';
              this.#current = null;
              yield { kind: 'pad', data: slice.subarray(0, 0) };
            }
          }
        } else {
          this.#pad -= n;
          if (n > 0 || this.#pad === 0) yield { kind: 'pad', data: slice };
          if (this.#pad === 0) {
            this.#state = 'header';
            this.#current = null;
          }
        }
        continue;
      }
      // header or extension: gather #need bytes.
      const take = Math.min(this.#need - this.#partialLength, chunk.length - pos);
      let block: Buffer;
      if (this.#partialLength === 0 && take === this.#need) {
        block = chunk.subarray(pos, pos + take);
      } else {
        this.#partial.push(chunk.subarray(pos, pos + take));
        this.#partialLength += take;
        if (this.#partialLength < this.#need) {
          // Keep a copy: the caller may reuse its buffer.
          this.#partial = [Buffer.concat(this.#partial)];
          pos += take;
          this.offset += take;
          continue;
        }
        block = Buffer.concat(this.#partial, this.#partialLength);
        this.#partial = [];
        this.#partialLength = 0;
      }
      pos += take;
      this.offset += take;
      if (state === 'header') {
        const event = this.#header(block);
        if (event) yield event;
      } else {
        this.#extensionData(block);
      }
    }
  }

  /**
   * Call at the end of the input: throws unless the archive ended properly.
   * `endMarkerOptional`: the input may stop at a member boundary without the
   * end-of-archive blocks (BASE_BACKUP before PostgreSQL 15 leaves them to the client).
   */
  finish(endMarkerOptional = false): void {
    if (this.#state === 'end') return;
    if (endMarkerOptional && this.#state === 'header' && !this.#current && this.#partialLength === 0 && this.#preamble.length === 0) return;
    if (this.#current) {
      throw new TarFormatError(`the archive is truncated: it ends inside member '${displayName(this.#current.name)}' (at byte ${this.offset})`);
    }
    if (this.#partialLength > 0 || this.#preamble.length > 0) throw new TarFormatError(`the archive is truncated: it ends inside a header (at byte ${this.offset})`);
    throw new TarFormatError(`the archive is truncated: no end-of-archive marker after ${this.offset} bytes`);
  }

  #header(block: Buffer): TarEvent | null {
    if (isZeroBlock(block)) {
      if (this.#preamble.length > 0) throw new TarFormatError(`extension header without a member at byte ${this.offset - BLOCK}`);
      this.#state = 'end';
      return { kind: 'end' };
    }
    verifyChecksum(block, this.offset - BLOCK);
    const typeflag = String.fromCharCode(block[156]!);
    const size = readNumber(block, 124, 12, 'size', this.offset - BLOCK);
    if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
      if (size > MAX_EXTENSION) throw new TarFormatError(`extension header of ${size} bytes at byte ${this.offset - BLOCK}: not a tar archive, or corrupt`);
      this.#preamble.push(Buffer.from(block));
      this.#extension = { type: typeflag, header: block };
      const padded = Math.ceil(size / BLOCK) * BLOCK;
      if (padded === 0) {
        this.#applyExtension(typeflag, Buffer.alloc(0));
        return null;
      }
      this.#state = 'extension';
      this.#need = padded;
      this.#remaining = size;
      return null;
    }
    const ustar = block.toString('latin1', 257, 263) === 'ustar\0';
    let name = cString(block, 0, 100);
    if (ustar) {
      const prefix = cString(block, 345, 155);
      if (prefix !== '') name = `${prefix}/${name}`;
    }
    const o = this.#pending;
    const member: TarMember = {
      name: o.path ?? name,
      linkname: o.linkpath ?? cString(block, 157, 100),
      type: memberType(typeflag),
      typeflag,
      size: o.size ?? size,
      mode: readNumber(block, 100, 8, 'mode', this.offset - BLOCK),
      mtime: o.mtime ?? readNumber(block, 136, 12, 'mtime', this.offset - BLOCK),
    };
    const raw = [...this.#preamble, block];
    this.#preamble = [];
    this.#pending = {};
    // Only regular files (and types we do not know, as tar readers do) carry content.
    const hasData = member.type === 'file' || member.type === 'other' ? member.size : 0;
    if (member.type !== 'file' && member.type !== 'other') member.size = 0;
    this.#current = member;
    this.#remaining = hasData;
    this.#pad = (BLOCK - (hasData % BLOCK)) % BLOCK;
    this.#state = hasData > 0 ? 'data' : 'header';
    if (hasData === 0) {
      // A member without content: no data or pad event follows, so it ends here.
      this.#current = null;
    }
    return { kind: 'member', member, raw };
  }

  #extensionData(block: Buffer): void {
    const ext = this.#extension!;
    this.#preamble.push(Buffer.from(block));
    this.#applyExtension(ext.type, block.subarray(0, this.#remaining));
    this.#extension = null;
    this.#state = 'header';
    this.#need = BLOCK;
  }

  #applyExtension(type: string, data: Buffer): void {
    if (type === 'L') this.#pending.path = cString(data, 0, data.length);
    else if (type === 'K') this.#pending.linkpath = cString(data, 0, data.length);
    // Global headers ('g') would apply to every later member; neither writer uses them for paths or sizes.
    else if (type === 'x') parsePax(data, this.#pending, this.offset);
  }
}

/** Whether a member has no content (so no data/pad events follow its 'member' event). */
export function memberHasContent(member: TarMember): boolean {
  return member.size > 0;
}

function memberType(flag: string): TarMemberType {
  switch (flag) {
    case '0':
    case '\0':
    case '7':
      return 'file';
    case '1':
      return 'hardlink';
    case '2':
      return 'symlink';
    case '5':
      return 'directory';
    default:
      return 'other';
  }
}

function isZeroBlock(block: Buffer): boolean {
  // Compare 8 bytes at a time; headers are never zero in their first bytes, so this is quick.
  for (let i = 0; i < BLOCK; i += 8) {
    if (block.readBigUInt64LE(i) !== 0n) return false;
  }
  return true;
}

function verifyChecksum(block: Buffer, at: number): void {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  const stored = readNumber(block, 148, 8, 'checksum', at);
  if (stored !== unsigned && stored !== signed) throw new TarFormatError(`corrupt tar header at byte ${at} (checksum mismatch): not a tar archive, or damaged`);
}

/** A numeric header field: octal text, or base-256 when the first byte has its high bit set. */
function readNumber(block: Buffer, offset: number, length: number, field: string, at: number): number {
  const first = block[offset]!;
  if (first & 0x80) {
    if (first !== 0x80) throw new TarFormatError(`unsupported negative or oversized ${field} in the tar header at byte ${at}`);
    let n = 0n;
    for (let i = offset + 1; i < offset + length; i++) n = (n << 8n) | BigInt(block[i]!);
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new TarFormatError(`${field} too large in the tar header at byte ${at}`);
    return Number(n);
  }
  const text = block.toString('latin1', offset, offset + length).replace(/[\0 ]+$/, '').replace(/^[ ]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`corrupt tar header at byte ${at}: ${field} is not a number`);
  return parseInt(text, 8);
}

function cString(buf: Buffer, offset: number, length: number): string {
  const end = buf.indexOf(0, offset);
  return buf.toString('latin1', offset, end < 0 || end > offset + length ? offset + length : end);
}

/** PAX records "<len> <key>=<value>\n"; values are UTF-8, kept here as their bytes (latin1). */
function parsePax(data: Buffer, into: Overrides, at: number): void {
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break;
    const space = data.indexOf(0x20, pos);
    if (space < 0) throw new TarFormatError(`corrupt PAX header before byte ${at}`);
    const len = Number(data.toString('latin1', pos, space));
    if (!Number.isInteger(len) || len <= 0 || pos + len > data.length) throw new TarFormatError(`corrupt PAX header before byte ${at}`);
    const record = data.subarray(space + 1, pos + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq > 0) {
      const key = record.toString('latin1', 0, eq);
      const value = record.subarray(eq + 1);
      if (key === 'path') into.path = value.toString('latin1');
      else if (key === 'linkpath') into.linkpath = value.toString('latin1');
      else if (key === 'size') into.size = Number(value.toString('latin1'));
      else if (key === 'mtime') into.mtime = Number(value.toString('latin1'));
    }
    pos += len;
  }
  if (into.size !== undefined && !(Number.isSafeInteger(into.size) && into.size >= 0)) throw new TarFormatError(`corrupt PAX size before byte ${at}`);
  if (into.mtime !== undefined && !Number.isFinite(into.mtime)) delete into.mtime;
}

/** A member name for messages (latin1 bytes shown as UTF-8). */
export function displayName(name: string): string {
  return Buffer.from(name, 'latin1').toString('utf8');
}

/**
 * A member's path relative to the archive root: './' and trailing '/' removed.
 * Null for the root itself ('.', './'); throws for names that would leave the root.
 */
export function memberPath(name: string): string | null {
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw new TarFormatError(`refusing archive member '${displayName(name)}': it would be written outside the destination`);
    parts.push(part);
  }
  if (name.startsWith('/')) throw new TarFormatError(`refusing archive member '${displayName(name)}': absolute path`);
  return parts.length === 0 ? null : parts.join('/');
}
