// The exit status of a failed cloud WAL command, as barman-cloud's scripts and
// CloudNativePG read them: 1 the store answered and the operation failed (a
// conflicting WAL, a refused request), 2 the store could not be reached, 3 the
// invocation cannot work, 4 anything else (a damaged object, a local error).
import { CloudSetupError } from './wal-store.ts';

export const STATUS_OPERATION = 1;
export const STATUS_NETWORK = 2;
export const STATUS_USAGE = 3;
export const STATUS_GENERAL = 4;

export function statusFor(err: unknown): number {
  const e = err as { name?: string; exitCode?: unknown; constructor?: { name?: string } };
  if (err instanceof CloudSetupError) return STATUS_USAGE;
  if (e?.name === 'StorageError' && (e.exitCode === 1 || e.exitCode === 2)) return e.exitCode;
  if (e?.constructor?.name === 'WalConflictError') return STATUS_OPERATION;
  return STATUS_GENERAL;
}
