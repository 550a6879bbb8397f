/**
 * A command running in a sandbox behind the daemon: the same shape as the
 * in-process SandboxProcess (stdout, stderr, stdin, pid, result, signal,
 * resize, cancel), driven by one Connect stream (Start, or Connect to
 * reattach) plus unary calls for input, signals and resizes.
 *
 * Backpressure: stdout and stderr are Readables fed from the stream's
 * events; when either one is above its high-water mark the next event is not
 * pulled, so the HTTP response stops being read, the socket fills, and the
 * daemon pauses the command (its follower's hold, src/daemon/routes/envd/
 * follow.ts). A consumer that never reads one of the two streams therefore
 * stalls both, as a child process with an unread pipe does.
 *
 * The process belongs to the daemon, not to this object: `detach()` (or the
 * runtime's close()) stops following and leaves it running.
 */

import { Readable, Writable } from 'node:stream';
import { Signal } from '../../protocol/envd/index.js';
import { deferred } from '../deferred.js';
import type { ProcessResult } from '../process.js';
import { checkOptions, handled, PtySize, rejected, signalOrRejection } from '../schemas.js';
import { fromConnect, RemoteError, RemoteErrorCode, type RpcContext } from './errors.js';

/** High-water mark of stdout/stderr: this much is buffered before the stream is paused. */
export const OUTPUT_HIGH_WATER = 256 * 1024;
/** Largest SendInput message (the daemon takes 4 MiB). */
export const INPUT_CHUNK = 1024 * 1024;

/** envd's process events, as far as this client reads them. */
export interface ProcessEventMessage {
  event?: {
    event:
      | { case: 'start'; value: { pid: number } }
      | {
          case: 'data';
          value: { output: { case: 'stdout' | 'stderr' | 'pty'; value: Uint8Array } | { case: undefined } };
        }
      | { case: 'end'; value: EndEvent }
      | { case: 'keepalive'; value: unknown }
      | { case: undefined; value?: undefined };
  };
}

export interface EndEvent {
  exitCode: number;
  exited: boolean;
  status: string;
  error?: string;
}

/** The unary calls a RemoteProcess makes on its process (by pid). */
export interface ProcessCalls {
  sendInput(pid: number, data: Uint8Array, pty: boolean): Promise<void>;
  closeStdin(pid: number): Promise<void>;
  /** A signal number (envd's enum values are the numbers; the binary codec carries any). */
  signal(pid: number, signal: number): Promise<void>;
  resize(pid: number, cols: number, rows: number): Promise<void>;
}

export interface RemoteProcessOptions {
  /** The process has a stdin to write (spawned with stdin 'pipe' or a pty, or reattached). */
  withStdin: boolean;
  pty: boolean;
  /** Kill (SIGKILL) after this long; the result says timedOut. Kept by this client, not the daemon. */
  timeoutMs?: number;
  /** Aborting it ends the stream (detach). */
  abort: AbortController;
  /** How the stream's errors read: 'start' (spawn failures) or 'process' (reattach). */
  context: RpcContext;
  where: string;
}

/** A Readable fed by the pump, which waits while it is above its high-water mark. */
class PacedReadable extends Readable {
  private waiter: (() => void) | undefined;

  constructor() {
    super({ highWaterMark: OUTPUT_HIGH_WATER });
    this.once('close', () => this.wake());
  }

  /** Queues a chunk; resolves once the reader wants more (at once while it keeps up). */
  offer(chunk: Buffer): Promise<void> | undefined {
    if (this.destroyed || this.readableEnded) return undefined;
    if (this.push(chunk)) return undefined;
    return new Promise<void>((r) => {
      this.waiter = r;
    });
  }

  override _read(): void {
    this.wake();
  }

  finish(): void {
    if (!this.destroyed) this.push(null);
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}

export class RemoteProcess {
  /** Its output; with a pty, everything the terminal shows. */
  readonly stdout: Readable;
  /** Its error output; with a pty always empty. */
  readonly stderr: Readable;
  /** Its stdin (with a pty: the terminal's keyboard); each chunk is one awaited SendInput; end() closes it. */
  readonly stdin: Writable | null;
  /** Resolves with the guest pid once the command started. */
  readonly pid: Promise<number>;
  /** Resolves when the command ended; rejects with a typed error if it could not run or be followed. */
  readonly result: Promise<ProcessResult>;
  readonly pty: boolean;
  private readonly out = new PacedReadable();
  private readonly err = new PacedReadable();
  // Awaiting them still sees a rejection; ignoring them must not end the caller's process.
  private readonly pidKnown = deferred<number>();
  private readonly ending = deferred<ProcessResult>();
  private knownPid: number | undefined;
  private ended = false;
  private timedOut = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    events: AsyncIterable<ProcessEventMessage>,
    private readonly calls: ProcessCalls,
    private readonly opts: RemoteProcessOptions,
  ) {
    this.pty = opts.pty;
    this.stdout = this.out;
    this.stderr = this.err;
    this.pid = this.pidKnown.promise;
    this.result = this.ending.promise;
    this.stdin = opts.withStdin ? this.makeStdin() : null;
    if (opts.timeoutMs !== undefined) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        void this.kill();
      }, opts.timeoutMs);
    }
    void this.pump(events);
  }

  /**
   * Sends a signal to the command's process group. The daemon's API carries
   * (any signal the guest knows; unknown ones reject with
   * ERR_SANDBOX_BAD_SIGNAL). A command that already ended is left alone.
   */
  signal(signal: NodeJS.Signals | string | number = 'SIGTERM'): Promise<void> {
    const num = signalOrRejection(signal);
    if (typeof num !== 'number') return num;
    if (this.ended) return Promise.resolve();
    return handled(this.pid.then((pid) => this.calls.signal(pid, num)).catch((err) => this.unlessEnded(err)));
  }

  /**
   * Sets the terminal's size (cols and rows 1..1000). Rejects with
   * ERR_SANDBOX_BAD_OPTIONS for a bad size or a command without a pty; a
   * command that already ended is left alone.
   */
  resize(size: { cols: number; rows: number }): Promise<void> {
    let s: { cols: number; rows: number };
    try {
      s = checkOptions(PtySize, size, 'size');
      if (!this.pty) {
        throw new RemoteError('ERR_SANDBOX_BAD_OPTIONS', 'resize: the command was started without a pty');
      }
    } catch (err) {
      return rejected(err);
    }
    if (this.ended) return Promise.resolve();
    return handled(
      this.pid.then((pid) => this.calls.resize(pid, s.cols, s.rows)).catch((err) => this.unlessEnded(err)),
    );
  }

  /** Kills the command's process group (SIGKILL). */
  cancel(): void {
    void this.kill();
  }

  /**
   * Stops following: the streams end, `result` rejects with ERR_REMOTE_CLOSED,
   * and the command runs on in the daemon (reattach with `sandbox.attach`).
   */
  detach(): void {
    if (!this.ended) this.opts.abort.abort();
  }

  private kill(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return this.pid.then((pid) => this.calls.signal(pid, Signal.SIGKILL)).catch(() => {});
  }

  /** Errors of calls that raced the command's end are not errors. */
  private unlessEnded(err: unknown): void {
    if (!this.ended) throw err;
  }

  private makeStdin(): Writable {
    return new Writable({
      highWaterMark: 64 * 1024,
      write: (chunk: Buffer, _enc, cb) => {
        this.pid
          .then(async (pid) => {
            for (let at = 0; at < chunk.length; at += INPUT_CHUNK) {
              await this.calls.sendInput(pid, chunk.subarray(at, at + INPUT_CHUNK), this.pty);
            }
          })
          .then(() => cb(), cb);
      },
      final: (cb) => {
        // A terminal has no stdin to close: its EOF is ^D, which the caller types.
        if (this.pty) {
          cb();
          return;
        }
        // Closing the stdin of a command that already ended (or has a terminal) is a no-op, as in-process.
        this.pid
          .then((pid) => this.calls.closeStdin(pid))
          .then(
            () => cb(),
            (err: { code?: string }) =>
              this.ended || err.code === 'ERR_PROCESS_NOT_FOUND' || err.code === 'ERR_SANDBOX_BAD_OPTIONS'
                ? cb()
                : cb(err as Error),
          );
      },
    });
  }

  private async pump(events: AsyncIterable<ProcessEventMessage>): Promise<void> {
    let end: EndEvent | undefined;
    let failure: Error | undefined;
    try {
      for await (const msg of events) {
        const ev = msg.event?.event;
        if (!ev) continue;
        if (ev.case === 'start') {
          this.knownPid = ev.value.pid;
          this.pidKnown.resolve(ev.value.pid);
        } else if (ev.case === 'data') {
          const o = ev.value.output;
          if (o.case === undefined || o.value.length === 0) continue;
          const chunk = Buffer.from(o.value.buffer, o.value.byteOffset, o.value.byteLength);
          await (o.case === 'stderr' ? this.err : this.out).offer(chunk);
        } else if (ev.case === 'end') {
          end = ev.value;
          break;
        }
      }
    } catch (err) {
      failure = this.opts.abort.signal.aborted
        ? new RemoteError(RemoteErrorCode.CLOSED, 'stopped following the command (it runs on in the sandbox)')
        : fromConnect(
            err,
            this.knownPid === undefined ? this.opts.context : 'process',
            this.opts.where,
            true,
          );
    }
    this.ended = true;
    if (this.timer) clearTimeout(this.timer);
    this.out.finish();
    this.err.finish();
    let result: ProcessResult | undefined;
    if (end) {
      try {
        result = resultOf(end, this.timedOut);
      } catch (err) {
        failure = err as Error;
      }
    } else {
      failure ??= new RemoteError(
        RemoteErrorCode.CONNECTION_LOST,
        'the daemon ended the command stream before the command ended',
        { pid: this.knownPid },
      );
    }
    if (result) {
      this.pidKnown.resolve(this.knownPid ?? -1);
      this.ending.resolve(result);
    } else {
      this.pidKnown.reject(failure!);
      this.ending.reject(failure!);
    }
  }
}

/** Go's signal descriptions (what envd reports) and the daemon's short names, to Linux names. */
const GO_SIGNALS: Record<string, string> = {
  killed: 'SIGKILL',
  terminated: 'SIGTERM',
  interrupt: 'SIGINT',
  hangup: 'SIGHUP',
  quit: 'SIGQUIT',
  aborted: 'SIGABRT',
  'broken pipe': 'SIGPIPE',
  'alarm clock': 'SIGALRM',
  'segmentation fault': 'SIGSEGV',
  'user defined signal 1': 'SIGUSR1',
  'user defined signal 2': 'SIGUSR2',
  'bus error': 'SIGBUS',
  'floating point exception': 'SIGFPE',
  'illegal instruction': 'SIGILL',
  'trace/breakpoint trap': 'SIGTRAP',
};

/** envd's end event as the in-process ProcessResult. Throws ERR_REMOTE_PROCESS_FAILED for one that did not run. */
export function resultOf(end: EndEvent, timedOut: boolean): ProcessResult {
  if (end.exited)
    return { exitCode: end.exitCode, signal: null, timedOut: timedOut || end.error === 'timed out' };
  const m = /^signal: (.+)$/.exec(end.status);
  if (m) {
    const word = m[1].trim().toLowerCase();
    const signal = GO_SIGNALS[word] ?? (/^[a-z0-9]+$/.test(word) ? `SIG${word.toUpperCase()}` : word);
    return { exitCode: null, signal, timedOut };
  }
  throw new RemoteError(
    RemoteErrorCode.PROCESS_FAILED,
    end.error || end.status || 'the command did not run',
    {
      status: end.status,
    },
  );
}
