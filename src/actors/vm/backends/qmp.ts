/**
 * A small QMP (QEMU Machine Protocol) client: JSON objects, one per line,
 * over a stream. On connect QEMU sends a greeting; the client must send
 * `qmp_capabilities` before any other command. Replies carry the `id` we sent;
 * asynchronous events (`SHUTDOWN`, `STOP`, `RESUME`, `MIGRATION`, …) arrive
 * between them.
 *
 * Used now for `quit` and `query-status`; the same client drives migration
 * and snapshots later.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { VmError, VmErrorCode } from './errors.js';

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  command: string;
}

export class QmpError extends VmError {
  constructor(message: string, details?: Record<string, unknown>) {
    super(VmErrorCode.QMP, message, details);
  }
}

/**
 * Emits `event` (QmpEvent) for each asynchronous event and `close` once the
 * connection is gone; pending commands then reject with ERR_QMP.
 */
export class QmpClient extends EventEmitter {
  readonly #stream: Duplex;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #buf = '';
  #greeting: Promise<QmpGreeting>;
  #resolveGreeting!: (g: QmpGreeting) => void;
  #rejectGreeting!: (e: Error) => void;
  #closed: Error | undefined;

  /** Takes ownership of `stream` (a connected QMP socket). */
  constructor(stream: Duplex) {
    super();
    this.#stream = stream;
    this.#greeting = new Promise((resolve, reject) => {
      this.#resolveGreeting = resolve;
      this.#rejectGreeting = reject;
    });
    // Never an unhandled rejection: callers that care await greeting/negotiate().
    this.#greeting.catch(() => {});
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => this.#onData(chunk));
    stream.on('error', (err) => this.#fail(new QmpError(`QMP connection failed: ${err.message}`)));
    stream.on('close', () => this.#fail(new QmpError('QMP connection closed')));
    stream.on('end', () => this.#fail(new QmpError('QMP connection closed')));
  }

  /** Resolves with QEMU's greeting. */
  get greeting(): Promise<QmpGreeting> {
    return this.#greeting;
  }

  get isClosed(): boolean {
    return this.#closed !== undefined;
  }

  /** Waits for the greeting and leaves capabilities negotiation mode. */
  async negotiate(timeoutMs = 10_000): Promise<QmpGreeting> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new QmpError(`no QMP greeting within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const g = await Promise.race([this.#greeting, timeout]);
      await Promise.race([this.execute('qmp_capabilities'), timeout]);
      return g;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs a command; resolves with its `return` value, rejects with ERR_QMP (QEMU's class and description). */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = this.#nextId++;
    const msg = JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id });
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, command });
      this.#stream.write(`${msg}\n`);
    });
  }

  /** Resolves with the next event named `name` (and `filter` accepts). */
  waitEvent(name: string, filter?: (e: QmpEvent) => boolean): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent): void => {
        if (e.event !== name || (filter && !filter(e))) return;
        this.off('event', onEvent);
        this.off('close', onClose);
        resolve(e);
      };
      const onClose = (err: Error): void => {
        this.off('event', onEvent);
        reject(err);
      };
      this.on('event', onEvent);
      this.once('close', onClose);
    });
  }

  close(): void {
    this.#stream.destroy();
    this.#fail(new QmpError('QMP connection closed by us'));
  }

  #onData(chunk: string): void {
    this.#buf += chunk;
    for (let nl = this.#buf.indexOf('\n'); nl >= 0; nl = this.#buf.indexOf('\n')) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (line) this.#onMessage(line);
    }
  }

  #onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.#fail(new QmpError(`QMP sent malformed JSON: ${line.slice(0, 200)}`));
      this.#stream.destroy();
      return;
    }
    if ('QMP' in msg) {
      this.#resolveGreeting(msg.QMP as QmpGreeting);
      return;
    }
    if ('event' in msg) {
      this.emit('event', msg as unknown as QmpEvent);
      return;
    }
    const id = msg.id as number | undefined;
    const p = id === undefined ? undefined : this.#pending.get(id);
    if (!p) return;
    this.#pending.delete(id!);
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      p.reject(
        new QmpError(`QMP ${p.command}: ${e.desc ?? 'error'}`, { class: e.class, command: p.command }),
      );
    } else p.resolve(msg.return);
  }

  #fail(err: Error): void {
    if (this.#closed) return;
    this.#closed = err;
    this.#rejectGreeting(err);
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    this.emit('close', err);
  }
}
