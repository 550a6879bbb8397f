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

/** Per-request helpers for a handler. */
export interface ControlCall {
  /** Streams an intermediate event to the client (streaming methods). */
  send(event: unknown): void;
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
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
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
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      let nl = buffered.indexOf('\n');
      while (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim().length > 0) void this.dispatch(line, socket, abort.signal);
        nl = buffered.indexOf('\n');
      }
      if (buffered.length > MAX_CONTROL_LINE) {
        write(socket, {
          id: null,
          ok: false,
          error: { code: 'ERR_CONTROL_TOO_LARGE', message: `request exceeds ${MAX_CONTROL_LINE} bytes` },
        });
        socket.end();
      }
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
        signal,
      });
      write(socket, { id: req.id, ok: true, result: result ?? null });
    } catch (err) {
      this.log.debug({ event: 'control.request_failed', method: req.method, err }, 'control request failed');
      write(socket, { id: req.id, ok: false, error: toErrorBody(err) });
    }
  }
}

function write(socket: net.Socket, msg: ControlResponse): void {
  if (!socket.destroyed && socket.writable) socket.write(`${JSON.stringify(msg)}\n`);
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
