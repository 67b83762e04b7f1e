// pg_verifybackup cross-checks global/pg_control against the manifest's
// System-Identifier (version 2 manifests). ControlFileData starts with
// `uint64 system_identifier`, in the server's byte order: little-endian on every
// platform in practical use. Its CRC sits at a version-dependent offset, and the
// manifest checksum already covers the file's bytes, so only the identifier is read.

export const CONTROL_FILE_KEY = 'global/pg_control';
export const CONTROL_HEAD_BYTES = 8;

/** The system identifier from the first bytes of pg_control; null if too short. */
export function controlFileSystemIdentifier(head: Uint8Array): string | null {
  if (head.length < CONTROL_HEAD_BYTES) return null;
  return Buffer.from(head.buffer, head.byteOffset, CONTROL_HEAD_BYTES).readBigUInt64LE(0).toString();
}

export interface ExpectedIdentifier {
  /** Where the expectation comes from, for the message: "manifest", "backup.info". */
  source: string;
  value: string;
}

/** Problem messages for a control file whose identifier differs from the expected ones. */
export function checkSystemIdentifier(head: Uint8Array, expected: readonly ExpectedIdentifier[]): string[] {
  if (expected.length === 0) return [];
  const actual = controlFileSystemIdentifier(head);
  if (actual === null) return [`"${CONTROL_FILE_KEY}" is too short to hold a system identifier`];
  return expected.filter((e) => e.value !== actual).map((e) => `${e.source} system identifier is ${e.value}, but control file has ${actual}`);
}
