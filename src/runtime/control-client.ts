/**
 * Client side of the control socket (used by `actorctl`, usable from tests and
 * scripts). One request at a time is the common case; ids allow more.
 */
import net from 'node:net';
import { ActorvmError } from '../errors.js';
import type { ControlResponse } from '../protocol/control.js';

/** An error reply from the server, with the server's stable code. */
export class ControlError extends ActorvmError {}

export class ControlClient {
  private nextId = 1;
  private buffered = '';
  private readonly pending = new Map<
    number,
    { resolve(v: unknown): void; reject(e: unknown): void; onEvent?: (e: unknown) => void }
  >();

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    const fail = (err: unknown): void => {
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    socket.on('error', fail);
    socket.on('close', () =>
      fail(new ActorvmError('ERR_CONTROL_CLOSED', 'control connection closed before the reply')),
    );
  }

  static connect(path: string): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(path);
      socket.once('connect', () => {
        socket.off('error', onError);
        resolve(new ControlClient(socket));
      });
      const onError = (err: NodeJS.ErrnoException): void => {
        const code =
          err.code === 'EACCES'
            ? 'ERR_CONTROL_DENIED'
            : err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
              ? 'ERR_CONTROL_NOT_RUNNING'
              : 'ERR_CONTROL_CONNECT';
        reject(
          new ActorvmError(code, `cannot connect to ${path}: ${err.message}`, { path, errno: err.code }),
        );
      };
      socket.once('error', onError);
    });
  }

  /** Calls a method; `onEvent` receives the streamed events of streaming methods. */
  call<T = unknown>(
    method: string,
    params: Record<string, unknown> = {},
    onEvent?: (e: unknown) => void,
  ): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, onEvent });
      this.socket.write(`${JSON.stringify({ id, method, params })}\n`);
    });
  }

  close(): void {
    this.socket.end();
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    let nl = this.buffered.indexOf('\n');
    while (nl >= 0) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      nl = this.buffered.indexOf('\n');
      let msg: ControlResponse;
      try {
        msg = JSON.parse(line) as ControlResponse;
      } catch {
        continue;
      }
      const p = typeof msg.id === 'number' ? this.pending.get(msg.id) : undefined;
      if (!p) continue;
      if ('event' in msg) {
        p.onEvent?.(msg.event);
        continue;
      }
      this.pending.delete(msg.id as number);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(new ControlError(msg.error.code, msg.error.message, msg.error.details));
    }
  }
}
