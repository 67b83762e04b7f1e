// One barkeep receiver run for bench/wal.ts: streams from START_SEGMENT
// (by placing an empty .partial there, exactly as `receive-wal --reset`
// does) until END_SEGMENT is complete, then exits. Uses the compiled
// dist/ code, as the installed binary does.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';

const [, , configFile, serverName, startSegment, endSegment] = process.argv;
if (!configFile || !serverName || !startSegment || !endSegment) {
  console.error('usage: wal-worker.ts CONFIG SERVER START_SEGMENT END_SEGMENT');
  process.exit(2);
}
const { loadConfigFile } = (await import('../dist/config/load.js' as string)) as typeof import('../src/config/load.ts');
const { runReceiver } = (await import('../dist/wal/receiver.js' as string)) as typeof import('../src/wal/receiver.ts');
const server = loadConfigFile(configFile).servers.get(serverName)!;
writeFileSync(join(server.paths.streamingWalsDirectory, `${startSegment}.partial`), '');
const controller = new AbortController();
await runReceiver({
  server,
  logger: pino({ level: 'silent' }),
  signal: controller.signal,
  onSegment: (name: string) => {
    if (name === endSegment) controller.abort();
  },
});
