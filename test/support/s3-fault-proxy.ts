// An HTTP proxy in front of a test S3 server that misbehaves on request: answer
// the next N matching requests with an error status (503 SlowDown, 500, ...), drop
// the connection before answering, or cut a response body after some bytes. Tests
// of retries and of "nothing partial is left visible" point the client at it.
// Requests are forwarded verbatim, Host header included, so SigV4 signatures made
// for the proxy's address still verify upstream.
import { Agent, createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface ProxiedRequest {
  method: string;
  /** Path and query as sent, e.g. /bucket/key?partNumber=2&uploadId=... */
  url: string;
  /** The S3 operation guessed from method and query (PutObject, UploadPart, ...). */
  operation: string;
  /** Status sent back, or 'dropped'. */
  outcome: number | 'dropped';
}

export type RequestMatcher = (req: { method: string; url: string; operation: string }) => boolean;

interface Fault {
  match: RequestMatcher;
  left: number;
  action: { kind: 'status'; status: number; code: string } | { kind: 'drop' } | { kind: 'stall' } | { kind: 'cut'; afterBytes: number };
}

export interface S3FaultProxy {
  readonly endpoint: string;
  readonly port: number;
  /** Every request seen, in arrival order. */
  readonly requests: ProxiedRequest[];
  /** Answer the next `n` matching requests with `status` and an S3 error document (default 503 SlowDown). */
  failNext(n: number, opts?: { status?: number; code?: string; match?: RequestMatcher }): void;
  /** Close the connection of the next `n` matching requests without answering. */
  dropNext(n: number, opts?: { match?: RequestMatcher }): void;
  /** Read the next `n` matching requests but never answer (until stop): a hung server. */
  stallNext(n: number, opts?: { match?: RequestMatcher }): void;
  /** Forward the next `n` matching requests but close the connection after `afterBytes` of the response body. */
  cutResponseNext(n: number, afterBytes: number, opts?: { match?: RequestMatcher }): void;
  /** Fail every matching request from now on (until clearFaults). */
  failAlways(opts?: { status?: number; code?: string; match?: RequestMatcher }): void;
  clearFaults(): void;
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';

export function s3Operation(method: string, url: string): string {
  const parsed = new URL(url, 'http://x');
  const q = parsed.searchParams;
  // Path style: /bucket or /bucket/ is the bucket, /bucket/key an object.
  const path = parsed.pathname.replace(/^\/+/, '');
  const slash = path.indexOf('/');
  const isBucket = slash < 0 || slash === path.length - 1;
  switch (method) {
    case 'PUT':
      if (q.has('partNumber')) return 'UploadPart';
      if (q.has('tagging')) return 'PutObjectTagging';
      return isBucket ? 'CreateBucket' : 'PutObject';
    case 'POST':
      if (q.has('uploads')) return 'CreateMultipartUpload';
      if (q.has('uploadId')) return 'CompleteMultipartUpload';
      if (q.has('delete')) return 'DeleteObjects';
      return 'POST';
    case 'DELETE':
      if (q.has('uploadId')) return 'AbortMultipartUpload';
      return isBucket ? 'DeleteBucket' : 'DeleteObject';
    case 'HEAD':
      return isBucket ? 'HeadBucket' : 'HeadObject';
    case 'GET':
      if (isBucket) return 'ListObjects';
      return 'GetObject';
    default:
      return method;
  }
}

const any: RequestMatcher = () => true;

export async function startS3FaultProxy(upstream: string): Promise<S3FaultProxy> {
  const target = new URL(upstream);
  const agent = new Agent({ keepAlive: true });
  const faults: Fault[] = [];
  const requests: ProxiedRequest[] = [];
  const sockets = new Set<Socket>();

  const takeFault = (info: { method: string; url: string; operation: string }): Fault['action'] | null => {
    for (const f of faults) {
      if (f.left > 0 && f.match(info)) {
        f.left--;
        return f.action;
      }
    }
    return null;
  };

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const info = { method, url, operation: s3Operation(method, url) };
    const record: ProxiedRequest = { ...info, outcome: 'dropped' };
    requests.push(record);
    const action = takeFault(info);
    if (action?.kind === 'drop') {
      req.socket.destroy();
      return;
    }
    if (action?.kind === 'stall') {
      req.resume();
      return;
    }
    if (action?.kind === 'status') {
      // Read the whole request first, as a real server would before answering.
      req.resume();
      req.once('end', () => {
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${action.code}</Code><Message>injected by the test fault proxy</Message><RequestId>fault</RequestId></Error>`;
        record.outcome = action.status;
        res.writeHead(action.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
        res.end(method === 'HEAD' ? undefined : body);
      });
      return;
    }
    const up = request(
      { host: target.hostname, port: target.port, method, path: url, headers: req.headers, agent },
      (upRes) => {
        record.outcome = upRes.statusCode ?? 0;
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        if (action?.kind !== 'cut') {
          upRes.pipe(res);
          return;
        }
        let sent = 0;
        upRes.on('data', (chunk: Buffer) => {
          if (sent >= action.afterBytes) return;
          const part = chunk.subarray(0, action.afterBytes - sent);
          sent += part.length;
          res.write(part);
          if (sent >= action.afterBytes) {
            upRes.destroy();
            // Let the bytes leave before the connection goes.
            res.once('drain', () => res.socket?.destroy());
            setTimeout(() => res.socket?.destroy(), 50);
          }
        });
        upRes.on('end', () => res.end());
      },
    );
    up.on('error', () => {
      record.outcome = 'dropped';
      req.socket.destroy();
    });
    req.pipe(up);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    endpoint: `http://${HOST}:${port}`,
    port,
    requests,
    failNext(n, opts = {}) {
      faults.push({ match: opts.match ?? any, left: n, action: { kind: 'status', status: opts.status ?? 503, code: opts.code ?? 'SlowDown' } });
    },
    dropNext(n, opts = {}) {
      faults.push({ match: opts.match ?? any, left: n, action: { kind: 'drop' } });
    },
    stallNext(n, opts = {}) {
      faults.push({ match: opts.match ?? any, left: n, action: { kind: 'stall' } });
    },
    cutResponseNext(n, afterBytes, opts = {}) {
      faults.push({ match: opts.match ?? any, left: n, action: { kind: 'cut', afterBytes } });
    },
    failAlways(opts = {}) {
      faults.push({ match: opts.match ?? any, left: Infinity, action: { kind: 'status', status: opts.status ?? 503, code: opts.code ?? 'SlowDown' } });
    },
    clearFaults() {
      faults.length = 0;
    },
    async stop() {
      for (const s of sockets) s.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Matches requests of these S3 operations (e.g. 'UploadPart', 'PutObject'). */
export function operations(...ops: string[]): RequestMatcher {
  return (r) => ops.includes(r.operation);
}
