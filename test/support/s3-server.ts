// A private S3-compatible server (s3rver) for the cloud tests: its own data
// directory, a free loopback port, one bucket created at start-up. It runs as a
// child process so a test can kill -9 it mid-upload and start it again on the same
// port and data. stop()/kill() end only the process started here.
//
// s3rver needs --openssl-legacy-provider: it encrypts ListObjectsV2 continuation
// tokens with DES, and without the flag every truncated listing is a 500. Clients
// must use path-style addressing and WHEN_REQUIRED checksums (src/storage/s3-client.ts
// does), or streamed uploads are stored with their aws-chunked framing inside.
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { freePort } from './free-port.ts';
import { installExitCleanup, REPO_ROOT } from './run-root.ts';
import { makeTempDir } from './tmp.ts';

const HOST = '127.0.0.1';
const S3RVER = join(REPO_ROOT, 'node_modules', 's3rver', 'bin', 's3rver.js');
const NODE = join(REPO_ROOT, 'node_modules', '.bin', 'node');

/** s3rver's fixed key pair. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

export interface S3ServerOptions {
  /** Bucket created at start-up (default 'barkeep-test'); more can be created by clients. */
  bucket?: string;
  /** Prefix of the scratch directory's name. */
  name?: string;
}

export interface S3Server {
  /** http://127.0.0.1:PORT, for --endpoint-url. */
  readonly endpoint: string;
  readonly port: number;
  readonly bucket: string;
  /** Where s3rver keeps its buckets (objects are files under DIR/BUCKET/). */
  readonly dataDir: string;
  /** Environment for a child process (barkeep-cloud-*) to authenticate: keys and region. */
  readonly env: Record<string, string>;
  readonly pid: number | undefined;
  /** SIGTERM, waiting for the exit. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash would, waiting for the exit. */
  kill(): Promise<void>;
  /** Starts it again on the same port and data (after stop or kill). */
  restart(): Promise<void>;
}

export async function startS3Server(opts: S3ServerOptions = {}): Promise<S3Server> {
  const bucket = opts.bucket ?? 'barkeep-test';
  const dataDir = makeTempDir(opts.name ?? 's3rver');
  let port = 0;
  let child: ChildProcess | undefined;

  const launch = async (configureBucket: boolean): Promise<ChildProcess> => {
    const args = [S3RVER, '-d', dataDir, '-a', HOST, '-p', String(port), '--no-vhost-buckets', '--silent'];
    if (configureBucket) args.push('--configure-bucket', bucket);
    let stderr = '';
    const proc = spawn(NODE, args, {
      env: { ...process.env, NODE_OPTIONS: '--openssl-legacy-provider' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-4000);
    });
    proc.once('error', () => {});
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    for (let i = 0; i < 200; i++) {
      if (proc.exitCode !== null || proc.signalCode !== null) break;
      if (await answers(port)) return proc;
      await Promise.race([exited, new Promise((r) => setTimeout(r, 50))]);
    }
    proc.kill('SIGKILL');
    throw Object.assign(new Error(`s3rver did not start on ${HOST}:${port}:\n${stderr.trim() || '(no output)'}`), {
      addressInUse: /EADDRINUSE/.test(stderr),
    });
  };

  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      child = await launch(true);
      break;
    } catch (err) {
      if (!(err as { addressInUse?: boolean }).addressInUse || attempt >= 5) throw err;
    }
  }

  // A crashed test must not leave s3rver running: kill it when this process exits.
  let uninstall: (() => void) | undefined;
  const guard = (): void => {
    uninstall ??= installExitCleanup(() => {
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, false);
  };
  guard();

  const end = async (signal: NodeJS.Signals): Promise<void> => {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill(signal);
    await exited;
  };

  const endpoint = `http://${HOST}:${port}`;
  return {
    endpoint,
    port,
    bucket,
    dataDir,
    env: {
      AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
      AWS_REGION: 'us-east-1',
    },
    get pid() {
      return child?.pid;
    },
    async stop() {
      await end('SIGTERM');
      uninstall?.();
      uninstall = undefined;
    },
    kill: () => end('SIGKILL'),
    async restart() {
      await end('SIGTERM');
      // The bucket is already in dataDir; configuring it again would reset its settings only.
      child = await launch(false);
      guard();
    },
  };
}

/** True once an HTTP server answers on the port (any status: s3rver wants signed requests). */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: HOST, port, method: 'GET', path: '/', timeout: 1000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(false));
    req.end();
  });
}
