// Tar headers for the archives barkeep writes itself (a local backup shipped to
// a bucket), readable by GNU tar, Python's tarfile (barman-cloud-restore) and
// backup-tar.ts. Names are raw bytes: a file name that is not UTF-8 travels
// unchanged, which PAX (UTF-8 by definition) would not guarantee, so names that
// do not fit ustar's name/prefix fields get a GNU long-name record instead.
// Sizes past ustar's 8 GiB limit use the base-256 form GNU tar and tarfile read.
import { BLOCK } from './backup-tar.ts';

export interface TarHeaderFields {
  /** The member's path as raw bytes; directories get their trailing '/' here. */
  name: Buffer;
  type: 'file' | 'directory' | 'symlink';
  mode: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Content bytes (files only). */
  size: number;
  linkname?: Buffer;
  uid: number;
  gid: number;
}

const TYPEFLAG = { file: '0', directory: '5', symlink: '2' } as const;
/** The largest size ustar's 11 octal digits hold. */
const MAX_OCTAL_SIZE = 0o77777777777;
const MAX_OCTAL_ID = 0o7777777;
const LONG_LINK = Buffer.from('././@LongLink', 'latin1');

/** Every header block describing the member (long-name records first), ready to precede its content. */
export function tarHeader(f: TarHeaderFields): Buffer {
  const blocks: Buffer[] = [];
  const linkname = f.linkname ?? Buffer.alloc(0);
  let name: Buffer = f.name;
  let prefix: Buffer = Buffer.alloc(0);
  if (name.length > 100) {
    const split = ustarSplit(name);
    if (split) {
      [prefix, name] = split;
    } else {
      blocks.push(...longRecord('L', f.name));
      name = f.name.subarray(0, 100);
    }
  }
  if (linkname.length > 100) blocks.push(...longRecord('K', linkname));
  blocks.push(
    headerBlock({
      name,
      prefix,
      typeflag: TYPEFLAG[f.type],
      mode: f.mode & 0o7777,
      uid: f.uid,
      gid: f.gid,
      size: f.type === 'file' ? f.size : 0,
      mtime: f.mtime,
      linkname: linkname.subarray(0, 100),
    }),
  );
  return blocks.length === 1 ? blocks[0]! : Buffer.concat(blocks);
}

/** Zero bytes that complete a member of `size` content bytes to a whole block. */
export function tarPadding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** ustar's split of a long path into prefix (<= 155 bytes) '/' name (<= 100 bytes), or null. */
function ustarSplit(path: Buffer): [Buffer, Buffer] | null {
  for (let i = path.indexOf(0x2f); i >= 0; i = path.indexOf(0x2f, i + 1)) {
    if (i > 155) return null;
    const rest = path.length - i - 1;
    // The name part must hold more than a directory's trailing slash.
    if (i > 0 && rest <= 100 && rest > 0 && !(rest === 1 && path[path.length - 1] === 0x2f)) return [path.subarray(0, i), path.subarray(i + 1)];
  }
  return null;
}

/** A GNU 'L' (name) or 'K' (link target) record: a header, then the NUL-terminated bytes. */
function longRecord(typeflag: 'L' | 'K', value: Buffer): Buffer[] {
  const data = Buffer.alloc(Math.ceil((value.length + 1) / BLOCK) * BLOCK);
  value.copy(data);
  const header = headerBlock({ name: LONG_LINK, prefix: Buffer.alloc(0), typeflag, mode: 0, uid: 0, gid: 0, size: value.length + 1, mtime: 0, linkname: Buffer.alloc(0) });
  return [header, data];
}

interface RawHeader {
  name: Buffer;
  prefix: Buffer;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: Buffer;
}

function headerBlock(h: RawHeader): Buffer {
  const b = Buffer.alloc(BLOCK);
  h.name.copy(b, 0);
  octal(b, 100, 8, h.mode);
  octal(b, 108, 8, h.uid <= MAX_OCTAL_ID && h.uid >= 0 ? h.uid : 0);
  octal(b, 116, 8, h.gid <= MAX_OCTAL_ID && h.gid >= 0 ? h.gid : 0);
  if (h.size <= MAX_OCTAL_SIZE) {
    octal(b, 124, 12, h.size);
  } else {
    // Base-256: a 0x80 marker byte, then the size big-endian in the 11 bytes left.
    b[124] = 0x80;
    let n = BigInt(h.size);
    for (let i = 135; i > 124; i--) {
      b[i] = Number(n & 0xffn);
      n >>= 8n;
    }
  }
  octal(b, 136, 12, Math.min(Math.max(0, Math.floor(h.mtime)), MAX_OCTAL_SIZE));
  b.write(h.typeflag, 156, 'latin1');
  h.linkname.copy(b, 157);
  b.write('ustar\u000000', 257, 'latin1');
  octal(b, 329, 8, 0);
  octal(b, 337, 8, 0);
  h.prefix.copy(b, 345);
  // The checksum is computed with its own field read as eight spaces.
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 'latin1');
  return b;
}

/** `width - 1` octal digits and a NUL, as ustar writes numbers. */
function octal(b: Buffer, offset: number, width: number, value: number): void {
  b.write(`${value.toString(8).padStart(width - 1, '0')}\u0000`, offset, 'latin1');
}
