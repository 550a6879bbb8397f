/**
 * Where the daemon is and how to talk REST to it: node:http over the Unix
 * control socket or TCP, one keep-alive agent, the API key on every request
 * (TCP), daemon error bodies rethrown typed (errors.ts).
 *
 * Bodies: JSON answers are read whole up to MAX_JSON_ANSWER; streamed
 * answers (downloads) are handed over as the IncomingMessage itself, so the
 * caller's reading pace is the socket's (nothing is buffered here).
 */
import http from 'node:http';
import type { Readable } from 'node:stream';
import { fromBody, fromTransport, isErrorBody, RemoteError, RemoteErrorCode } from './errors.js';

/** Largest JSON answer read (lists of actors, rings, flows, sandboxes). */
export const MAX_JSON_ANSWER = 64 * 1024 * 1024;
/** Largest error body read before giving up on it. */
const MAX_ERROR_BODY = 1024 * 1024;

export type DaemonAddress = { socket: string } | { url: string; apiKey: string };

export interface RequestOptions {
  /** JSON body. */
  json?: unknown;
  /** Raw body (uploads): bytes, or a stream sent chunked unless `length` is known. */
  body?: Uint8Array | Readable;
  length?: number;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** How once() rejects: the error, and whether it happened on a reused keep-alive socket before any answer. */
interface Failure {
  error: RemoteError;
  reused?: boolean;
}

export class Endpoint {
  /** http://… base for URLs (for the socket, a placeholder host). */
  readonly baseUrl: string;
  /** Human name of the address, for messages. */
  readonly where: string;
  readonly agent: http.Agent;
  private readonly closing = new AbortController();

  constructor(readonly address: DaemonAddress) {
    this.agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 10_000 });
    if ('socket' in address) {
      this.baseUrl = 'http://localhost';
      this.where = address.socket;
    } else {
      this.baseUrl = address.url.replace(/\/+$/, '');
      this.where = this.baseUrl;
    }
  }

  /** Aborted by close(): every open call and stream ends. */
  get signal(): AbortSignal {
    return this.closing.signal;
  }

  get closed(): boolean {
    return this.closing.signal.aborted;
  }

  /** Headers every request carries (the API key on TCP). */
  authHeaders(): Record<string, string> {
    return 'apiKey' in this.address ? { 'x-api-key': this.address.apiKey } : {};
  }

  /** Options for http.request (and Connect's node transport). */
  nodeOptions(): http.RequestOptions {
    return 'socket' in this.address
      ? { agent: this.agent, socketPath: this.address.socket }
      : { agent: this.agent };
  }

  /**
   * Sends a request; resolves with the response once its status is < 400
   * (the body unread), rejects with the daemon's typed error otherwise, or
   * ERR_REMOTE_UNREACHABLE / ERR_REMOTE_CLOSED when there was no answer.
   */
  async request(method: string, path: string, opts: RequestOptions = {}): Promise<http.IncomingMessage> {
    // A keep-alive socket the daemon closed while idle fails the next request on it: one retry,
    // for requests that may repeat (not a stream body, which is consumed).
    const retryable =
      (method === 'GET' || method === 'DELETE') && !(opts.body && !(opts.body instanceof Uint8Array));
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once(method, path, opts);
      } catch (err) {
        const f = err as Failure;
        if (f.reused && retryable && attempt === 0) continue;
        throw f.error;
      }
    }
  }

  private once(method: string, path: string, opts: RequestOptions): Promise<http.IncomingMessage> {
    if (this.closed) {
      return Promise.reject({
        error: new RemoteError(RemoteErrorCode.CLOSED, 'the remote runtime was closed'),
      } satisfies Failure);
    }
    const headers: Record<string, string> = { ...this.authHeaders(), ...opts.headers };
    let payload: Uint8Array | Readable | undefined = opts.body;
    if (opts.json !== undefined) {
      payload = Buffer.from(JSON.stringify(opts.json));
      headers['content-type'] = 'application/json';
    }
    if (payload instanceof Uint8Array) headers['content-length'] = String(payload.length);
    else if (payload && opts.length !== undefined) headers['content-length'] = String(opts.length);
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.signal]) : this.signal;
    return new Promise((resolve, reject) => {
      const req = http.request(`${this.baseUrl}${path}`, { ...this.nodeOptions(), method, headers, signal });
      let answered = false;
      req.on('error', (err) => {
        if (answered) return;
        const aborted = signal.aborted;
        const error = aborted
          ? new RemoteError(
              RemoteErrorCode.CLOSED,
              `${method} ${path}: ${this.closed ? 'the remote runtime was closed' : 'aborted'}`,
            )
          : fromTransport(err, this.where);
        reject({ error, reused: !aborted && req.reusedSocket } satisfies Failure);
      });
      req.once('response', (res) => {
        answered = true;
        const status = res.statusCode ?? 0;
        if (status < 400) {
          resolve(res);
          return;
        }
        readAll(res, MAX_ERROR_BODY).then(
          (buf) => reject({ error: errorFromAnswer(status, buf, method, path) } satisfies Failure),
          (err) => reject({ error: fromTransport(err, this.where, true) } satisfies Failure),
        );
      });
      if (payload === undefined) req.end();
      else if (payload instanceof Uint8Array) req.end(payload);
      else {
        payload.once('error', (err) => req.destroy(err));
        payload.pipe(req);
      }
    });
  }

  /** A JSON call: the parsed answer (undefined for 204). */
  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.request(method, path, body === undefined ? {} : { json: body });
    let buf: Buffer;
    try {
      buf = await readAll(res, MAX_JSON_ANSWER);
    } catch (err) {
      throw fromTransport(err, this.where, true);
    }
    if (res.statusCode === 204 || buf.length === 0) return undefined as T;
    try {
      return JSON.parse(buf.toString('utf8')) as T;
    } catch {
      throw new RemoteError(RemoteErrorCode.PROTOCOL, `${method} ${path}: the daemon's answer is not JSON`, {
        status: res.statusCode,
      });
    }
  }

  /** Ends every open call and stream and the agent's sockets. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closing.abort(new RemoteError(RemoteErrorCode.CLOSED, 'the remote runtime was closed'));
    this.agent.destroy();
  }
}

function errorFromAnswer(status: number, buf: Buffer, method: string, path: string): RemoteError {
  try {
    const body = JSON.parse(buf.toString('utf8')) as unknown;
    if (isErrorBody(body)) return fromBody(body, status);
  } catch {
    // not an error body
  }
  return new RemoteError(
    RemoteErrorCode.PROTOCOL,
    `${method} ${path}: HTTP ${status} without an error body`,
    { status, body: buf.subarray(0, 256).toString('utf8') },
    status,
  );
}

/** Reads a body whole; rejects past `max` bytes (the response is destroyed). */
export function readAll(res: http.IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    res.on('data', (d: Buffer) => {
      n += d.length;
      if (n > max) {
        res.destroy(new RemoteError(RemoteErrorCode.PROTOCOL, `the daemon's answer exceeds ${max} bytes`));
        return;
      }
      parts.push(d);
    });
    res.once('end', () => resolve(Buffer.concat(parts)));
    res.once('error', reject);
    res.once('close', () => {
      if (!res.complete) reject(new RemoteError(RemoteErrorCode.CONNECTION_LOST, 'the answer was cut off'));
    });
  });
}
