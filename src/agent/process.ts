/**
 * A command running in the guest: the handle `AgentClient.run()` returns.
 */
import { type Readable, Writable } from 'node:stream';
import { Channel, MAX_CHUNK } from '../protocol/agent-frame.js';
import type { AgentMessage, HostMessage } from '../protocol/agent-messages.js';
import { signalName, signalNumber } from '../protocol/agent-signals.js';
import { InboundStream, OutboundCredit } from './credit.js';
import { type AgentError, errorFromRemote } from './errors.js';

/** How a command ended. */
export interface RunResult {
  /** Exit code when the command exited normally, else null. */
  exitCode: number | null;
  /** Name of the signal that killed it (`'SIGKILL'`), else null. */
  signal: string | null;
  /** Linux number of that signal, else null. */
  signalNumber: number | null;
  /** The agent-side `timeoutMs` expired and the process group was killed. */
  timedOut: boolean;
  /** `cancel()` killed it. */
  cancelled: boolean;
  coreDumped: boolean;
}

/** What a stream needs from its connection (implemented by AgentClient). */
export interface StreamLink {
  readonly stream: number;
  readonly window: number;
  /** Queues a frame; throws the connection's error when it is closed. */
  send(m: HostMessage): void;
  /** Resolves when the transport can take more bulk data. */
  writable(): Promise<void>;
  /** Forgets this stream (its id may be reused). */
  release(): void;
}

/** Receives the agent's frames for one stream (implemented by each operation). */
export interface StreamHandler {
  onMessage(m: AgentMessage): void;
  onClose(err: AgentError): void;
}

const noop = (): void => {};

export class AgentProcess implements StreamHandler {
  /** The command's stdout. Consume it (or `resume()` it): unread output eventually pauses the command. */
  readonly stdout: Readable;
  /** The command's stderr; same rule as stdout. */
  readonly stderr: Readable;
  /** The command's stdin when run with `stdin: 'pipe'`, else null. `end()` it to send EOF. */
  readonly stdin: Writable | null;
  /** The guest pid (also the process group and session id) once the command started. */
  readonly pid: Promise<number>;
  /** How the command ended; rejects when it could not start (e.g. ERR_AGENT_REMOTE with ENOENT). */
  readonly result: Promise<RunResult>;

  readonly #link: StreamLink;
  readonly #out: InboundStream;
  readonly #err: InboundStream;
  readonly #stdinCredit = new OutboundCredit();
  readonly #pty: boolean;
  /** A size asked for before the command started, sent with STARTED. */
  #pendingSize: { cols: number; rows: number } | undefined;
  #started = false;
  #done = false;
  #resolvePid!: (pid: number) => void;
  #rejectPid!: (err: Error) => void;
  #resolveResult!: (r: RunResult) => void;
  #rejectResult!: (err: Error) => void;

  /** @internal Created by AgentClient.run(). */
  constructor(link: StreamLink, stdin: boolean, pty = false) {
    this.#link = link;
    this.#pty = pty;
    const grant = (channel: number) => (bytes: number) =>
      this.#trySend({ type: 'window', stream: link.stream, channel, increment: bytes });
    this.#out = new InboundStream({ grant: grant(Channel.OUT), window: link.window });
    this.#err = new InboundStream({ grant: grant(Channel.ERR), window: link.window });
    this.stdout = this.#out;
    this.stderr = this.#err;
    this.pid = new Promise<number>((resolve, reject) => {
      this.#resolvePid = resolve;
      this.#rejectPid = reject;
    });
    this.result = new Promise<RunResult>((resolve, reject) => {
      this.#resolveResult = resolve;
      this.#rejectResult = reject;
    });
    // Rejections still reach whoever awaits these; unobserved ones must not crash the host.
    this.pid.catch(noop);
    this.result.catch(noop);
    this.stdin = stdin
      ? new Writable({
          highWaterMark: MAX_CHUNK,
          write: (chunk: Buffer, _enc, cb) => {
            this.#sendStdin(chunk, false).then(() => cb(), cb);
          },
          final: (cb) => {
            this.#sendStdin(Buffer.alloc(0), true).then(() => cb(), cb);
          },
        })
      : null;
  }

  /** Stream id of this command on its connection. */
  get streamId(): number {
    return this.#link.stream;
  }

  /** True once the agent started the command (it may wait for a free slot first). */
  get started(): boolean {
    return this.#started;
  }

  /** True once the result is known. */
  get done(): boolean {
    return this.#done;
  }

  /** Sends a signal to the command's whole process group. Ignored once it ended or before it started. */
  signal(sig: string | number = 'SIGTERM'): void {
    const num = signalNumber(sig);
    if (num === undefined) throw new TypeError(`unknown signal ${String(sig)}`);
    if (this.#done) return;
    this.#trySend({ type: 'signal', stream: this.#link.stream, signal: num });
  }

  /** True when the command runs on a pseudo-terminal. */
  get pty(): boolean {
    return this.#pty;
  }

  /**
   * Sets the terminal's size (the kernel sends SIGWINCH to its foreground
   * process group). Throws TypeError without a pty or for a size outside
   * 1..65535; ignored once the command ended.
   */
  resize(cols: number, rows: number): void {
    if (!this.#pty) throw new TypeError('resize: the command has no pty');
    const ok = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= 0xffff;
    if (!ok(cols) || !ok(rows)) throw new TypeError(`resize: bad terminal size ${cols}x${rows}`);
    if (this.#done) return;
    if (!this.#started) {
      this.#pendingSize = { cols, rows };
      return;
    }
    this.#trySend({ type: 'resize', stream: this.#link.stream, cols, rows });
  }

  /** Kills the process group (SIGKILL); `result` resolves with `cancelled: true`. A queued command is dropped. */
  cancel(): void {
    if (this.#done) return;
    this.#trySend({ type: 'cancel', stream: this.#link.stream });
  }

  /** @internal */
  onMessage(m: AgentMessage): void {
    switch (m.type) {
      case 'started':
        this.#started = true;
        this.#resolvePid(m.pid);
        if (this.#pendingSize) {
          this.#trySend({ type: 'resize', stream: this.#link.stream, ...this.#pendingSize });
          this.#pendingSize = undefined;
        }
        return;
      case 'window':
        if (m.channel === Channel.IN) this.#stdinCredit.add(m.increment);
        return;
      case 'data': {
        const s = m.channel === Channel.ERR ? this.#err : this.#out;
        if (m.data.length) s.deliver(m.data);
        if (m.end) s.finish();
        return;
      }
      case 'exit':
        this.#finish();
        this.#resolveResult({
          exitCode: m.exit.exitCode,
          signal: m.exit.signal === null ? null : signalName(m.exit.signal),
          signalNumber: m.exit.signal,
          timedOut: m.exit.timedOut,
          cancelled: m.exit.cancelled,
          coreDumped: m.exit.coreDumped,
        });
        return;
      case 'error':
        this.#fail(errorFromRemote(m.error, 'run'));
        return;
    }
  }

  /** @internal */
  onClose(err: AgentError): void {
    this.#fail(err);
  }

  #fail(err: Error): void {
    if (this.#done) return;
    this.#finish();
    this.#rejectPid(err);
    this.#rejectResult(err);
  }

  #finish(): void {
    this.#done = true;
    this.#link.release();
    this.#out.finish();
    this.#err.finish();
    // Writes to stdin after the end are dropped, as with a command that closed its stdin.
    this.#stdinCredit.fail(new Error('command ended'));
  }

  #trySend(m: HostMessage): void {
    try {
      this.#link.send(m);
    } catch {
      // The connection is gone; onClose reports it.
    }
  }

  async #sendStdin(chunk: Buffer, end: boolean): Promise<void> {
    const stream = this.#link.stream;
    try {
      if (chunk.length === 0) {
        if (end && !this.#done) this.#link.send({ type: 'data', stream, data: chunk, end: true });
        return;
      }
      let off = 0;
      while (off < chunk.length && !this.#done) {
        const n = await this.#stdinCredit.acquire(Math.min(MAX_CHUNK, chunk.length - off));
        await this.#link.writable();
        if (this.#done) return;
        this.#link.send({
          type: 'data',
          stream,
          data: chunk.subarray(off, off + n),
          end: end && off + n === chunk.length,
        });
        off += n;
      }
    } catch {
      // Only reachable after the command ended or the connection closed; both are reported through result.
    }
  }
}
