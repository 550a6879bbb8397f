/**
 * The control socket: a Unix socket that `actorctl` connects to.
 *
 * Security: the socket is created inside a directory of mode 0700 and chmod'ed
 * to 0600 before the first connection can be served, so the kernel refuses
 * `connect()` from any other uid (root excepted, as always). Node offers no
 * SO_PEERCRED, so file permissions are the access check.
 *
 * Robustness: every request is validated (zod) and answered; a malformed or
 * failing request gets a typed error reply and the server keeps serving.
 *
 * Bounds, per connection: a request line longer than MAX_CONTROL_LINE is a
 * protocol error — the connection gets an error reply, is no longer read and
 * is closed, so a client cannot make the server buffer without end. Replies
 * and streamed events wait in the socket's write buffer; at most MAX_INFLIGHT
 * requests of a connection run at once; above MAX_BUFFERED_REPLIES of unread
 * replies the server stops reading that connection's requests
 * until the client reads, and a streaming method sees `send()` return false
 * and pauses its source until `drained()` (vm.exec pauses the command's
 * output, which in turn stops the guest). A client that never reads costs
 * that much memory, not what it asks for.
 */
import { chmodSync, mkdirSync, statSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import type { z } from 'zod';
import { ActorvmError } from '../errors.js';
import {
  type ControlErrorBody,
  ControlRequest,
  type ControlResponse,
  MAX_CONTROL_LINE,
} from '../protocol/control.js';
import type { Logger } from './logger.js';

/** Bytes of replies a connection may have unread before the server stops reading its requests. */
export const MAX_BUFFERED_REPLIES = 4 << 20;
/** Requests of one connection running at once; the rest wait unread in the socket. */
export const MAX_INFLIGHT = 32;

/** Per-request helpers for a handler. */
export interface ControlCall {
  /**
   * Streams an intermediate event to the client (streaming methods). False
   * when the client is behind: pause the source until `drained()`.
   */
  send(event: unknown): boolean;
  /** Resolves when the client has read what is buffered (or has gone). */
  drained(): Promise<void>;
  /** Fires when the client goes away before the reply. */
  readonly signal: AbortSignal;
}

export interface ControlMethod<S extends z.ZodType> {
  params: S;
  handle(params: z.infer<S>, call: ControlCall): Promise<unknown> | unknown;
}

export class ControlServer {
  private readonly methods = new Map<string, ControlMethod<z.ZodType>>();
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    readonly path: string,
    private readonly log: Logger,
  ) {}

  /** Registers a method (later registrations of the same name replace earlier ones). */
  register<S extends z.ZodType>(name: string, method: ControlMethod<S>): this {
    this.methods.set(name, method as unknown as ControlMethod<z.ZodType>);
    return this;
  }

  get methodNames(): string[] {
    return [...this.methods.keys()].sort();
  }

  async listen(): Promise<void> {
    const dir = dirname(this.path);
    // Only a directory we create is ours to make 0700; an existing one (say /tmp,
    // 1777) keeps its mode — the socket's own 0600 is what the kernel checks.
    const created = mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (created) chmodSync(dir, 0o700);
    await removeStaleSocket(this.path);
    const server = net.createServer((s) => this.serve(s));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(this.path, 0o600);
    server.on('error', (err) => this.log.error({ event: 'control.error', err }, 'control socket error'));
    this.log.info({ event: 'control.listening', path: this.path }, 'control socket listening');
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }

  private serve(socket: net.Socket): void {
    this.sockets.add(socket);
    const abort = new AbortController();
    socket.on('close', () => {
      this.sockets.delete(socket);
      abort.abort();
    });
    socket.on('error', () => {});
    let closing = false;
    // Requests read but not yet started, and started but not yet answered.
    const queue: string[] = [];
    let inflight = 0;
    const resumeIfIdle = (): void => {
      const idle =
        queue.length === 0 && inflight < MAX_INFLIGHT && socket.writableLength <= MAX_BUFFERED_REPLIES;
      if (idle && !closing && !socket.destroyed) socket.resume();
    };
    const pump = (): void => {
      while (!closing && inflight < MAX_INFLIGHT && queue.length > 0) {
        inflight++;
        void this.dispatch(queue.shift()!, socket, abort.signal).finally(() => {
          inflight--;
          pump();
          resumeIfIdle();
        });
      }
    };
    // Requests are read only while the client reads its replies.
    socket.on('drain', resumeIfIdle);
    const chunks: Buffer[] = [];
    let pending = 0; // bytes of the unfinished line held in `chunks`
    socket.on('data', (chunk: Buffer) => {
      let from = 0;
      // Only the new bytes are searched: a long line costs one scan, not one per chunk.
      for (let nl = chunk.indexOf(10, from); nl >= 0; nl = chunk.indexOf(10, from)) {
        const tail = chunk.subarray(from, nl);
        const line = chunks.length
          ? Buffer.concat([...chunks, tail]).toString('utf8')
          : tail.toString('utf8');
        chunks.length = 0;
        pending = 0;
        from = nl + 1;
        if (line.trim().length > 0) queue.push(line);
      }
      if (from < chunk.length) {
        chunks.push(chunk.subarray(from));
        pending += chunk.length - from;
      }
      if (pending > MAX_CONTROL_LINE) {
        chunks.length = 0;
        pending = 0;
        queue.length = 0;
        // A protocol error: reply, read nothing more, close.
        closing = true;
        socket.pause();
        socket.removeAllListeners('data');
        write(socket, {
          id: null,
          ok: false,
          error: { code: 'ERR_CONTROL_TOO_LARGE', message: `request exceeds ${MAX_CONTROL_LINE} bytes` },
        });
        socket.end();
        socket.once('finish', () => socket.destroy());
        // A client that does not read even the error reply is not waited for.
        setTimeout(() => socket.destroy(), 1000).unref();
        this.log.warn({ event: 'control.too_large' }, 'oversized control request: connection closed');
        return;
      }
      pump();
      // More requests than we run at once: read no further until they are answered.
      if (queue.length > 0) socket.pause();
    });
  }

  private async dispatch(line: string, socket: net.Socket, signal: AbortSignal): Promise<void> {
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch {
      write(socket, {
        id: null,
        ok: false,
        error: { code: 'ERR_CONTROL_MALFORMED', message: 'request is not JSON' },
      });
      return;
    }
    const parsed = ControlRequest.safeParse(raw);
    if (!parsed.success) {
      const id = typeof (raw as { id?: unknown })?.id === 'number' ? (raw as { id: number }).id : null;
      write(socket, {
        id,
        ok: false,
        error: {
          code: 'ERR_CONTROL_MALFORMED',
          message: parsed.error.issues.map((i) => i.message).join('; '),
        },
      });
      return;
    }
    const req = parsed.data;
    const method = this.methods.get(req.method);
    if (!method) {
      write(socket, {
        id: req.id,
        ok: false,
        error: { code: 'ERR_CONTROL_UNKNOWN_METHOD', message: `unknown method '${req.method}'` },
      });
      return;
    }
    const params = method.params.safeParse(req.params);
    if (!params.success) {
      write(socket, {
        id: req.id,
        ok: false,
        error: {
          code: 'ERR_CONTROL_BAD_PARAMS',
          message: params.error.issues.map((i) => `${i.path.join('.') || 'params'}: ${i.message}`).join('; '),
        },
      });
      return;
    }
    try {
      const result = await method.handle(params.data, {
        send: (event) => write(socket, { id: req.id, event }),
        drained: () => drained(socket),
        signal,
      });
      write(socket, { id: req.id, ok: true, result: result ?? null });
    } catch (err) {
      this.log.debug({ event: 'control.request_failed', method: req.method, err }, 'control request failed');
      write(socket, { id: req.id, ok: false, error: toErrorBody(err) });
    }
  }
}

/** Resolves when the socket's buffered writes have gone out (or it closed), leaving no listener behind. */
function drained(socket: net.Socket): Promise<void> {
  if (!socket.writableNeedDrain || socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

/** Writes one reply; false when the client is behind (and its requests are then not read until it catches up). */
function write(socket: net.Socket, msg: ControlResponse): boolean {
  if (socket.destroyed || !socket.writable) return false;
  socket.write(`${JSON.stringify(msg)}\n`);
  if (socket.writableLength <= MAX_BUFFERED_REPLIES) return true;
  socket.pause();
  return false;
}

export function toErrorBody(err: unknown): ControlErrorBody {
  if (err instanceof ActorvmError) return { code: err.code, message: err.message, details: err.details };
  const code = (err as { code?: unknown })?.code;
  return {
    code: typeof code === 'string' ? code : 'ERR_INTERNAL',
    message: err instanceof Error ? err.message : String(err),
  };
}

/** A socket file nobody listens on (a crashed previous run) is removed; a live one is an error. */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    statSync(path);
  } catch {
    return;
  }
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw new ActorvmError('ERR_CONTROL_IN_USE', `another system is listening on ${path}`, { path });
  unlinkSync(path);
}
