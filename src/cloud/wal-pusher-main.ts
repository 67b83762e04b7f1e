// Entry point of the background pusher started by cloud-wal-archive --async
// (async-archive.ts), with its settings in the environment. Its output goes to
// the spool's pusher.log.
import { PUSHER_CONFIG_ENV } from './async-archive.ts';
import { runPusher, type PusherConfig } from './wal-pusher.ts';

const raw = process.env[PUSHER_CONFIG_ENV];
if (!raw) {
  process.stderr.write(`this is the background part of barkeep-cloud-wal-archive --async; it is started by it (${PUSHER_CONFIG_ENV} is not set)\n`);
  process.exitCode = 3;
} else {
  delete process.env[PUSHER_CONFIG_ENV];
  const config = JSON.parse(raw) as PusherConfig;
  process.title = `barkeep-cloud-wal-archive pusher ${config.spoolDir}`;
  const log = (line: string): void => {
    process.stdout.write(`${new Date().toISOString()} [${process.pid}] ${line}\n`);
  };
  await runPusher(config, log);
}
