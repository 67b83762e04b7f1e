// V8's compile cache (Node >= 22.1) saves about a third of the ~180 ms each
// barkeep process spends loading its modules, and archive_command and
// restore_command start one per WAL segment. It lives in the user's own cache
// directory, never in a shared /tmp directory where another local user could
// plant entries. Imports only node: modules, so it loads on any Node version.
import module from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';

export function enableCompileCache(): void {
  const enable = (module as { enableCompileCache?: (dir?: string) => unknown }).enableCompileCache;
  // NODE_COMPILE_CACHE set: Node has already done what the user asked.
  if (typeof enable !== 'function' || process.env['NODE_COMPILE_CACHE'] !== undefined) return;
  try {
    enable(join(process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache'), 'barkeep', 'v8'));
  } catch {
    // No cache is only slower.
  }
}
