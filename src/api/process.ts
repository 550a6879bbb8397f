/** A command running in a sandbox: its streams, its result, signals. */
import { Writable } from 'node:stream';
import { OUT_STDERR, OUT_STDOUT } from '../actors/vm/messages.js';
import { errorFrom } from './errors.js';
import { checkSignal, handled, rejected } from './schemas.js';
import type { OperationHandler } from './sink.js';
import { InputChannel, OutputStream } from './streams.js';

/** How a command ended. */
export interface ProcessResult {
  /** Exit code, or null when a signal ended it. */
  exitCode: number | null;
  /** Name of the terminating signal, or null. */
  signal: string | null;
  /** The command's timeout killed it (its whole process group, with SIGKILL). */
  timedOut: boolean;
}

/** What a SandboxProcess needs from its sandbox (one object per command). */
export interface ProcessLink {
  ack(bytes: number): void;
  input(data: Uint8Array, end: boolean): boolean;
  writable(): Promise<void>;
  signal(signal: number): void;
  cancel(): void;
}

export class SandboxProcess implements OperationHandler {
  readonly stdout: OutputStream;
  readonly stderr: OutputStream;
  /** The command's stdin, when it was started with `stdin: 'pipe'`. */
  readonly stdin: Writable | null;
  /** Resolves with the guest pid once the command started. */
  readonly pid: Promise<number>;
  /** Resolves when the command ended; rejects with a typed error if it could not run. */
  readonly result: Promise<ProcessResult>;
  private resolvePid!: (pid: number) => void;
  private rejectPid!: (err: Error) => void;
  private resolveResult!: (r: ProcessResult) => void;
  private rejectResult!: (err: Error) => void;
  private readonly input: InputChannel;
  private ended = false;

  constructor(
    private readonly link: ProcessLink,
    withStdin: boolean,
  ) {
    this.stdout = new OutputStream((n) => link.ack(n));
    this.stderr = new OutputStream((n) => link.ack(n));
    this.pid = new Promise((resolve, reject) => {
      this.resolvePid = resolve;
      this.rejectPid = reject;
    });
    // Awaiting them still sees a rejection; ignoring them must not end the caller's process.
    handled(this.pid);
    this.result = handled(
      new Promise((resolve, reject) => {
        this.resolveResult = resolve;
        this.rejectResult = reject;
      }),
    );
    this.input = new InputChannel(
      (data, end) => link.input(data, end),
      () => link.writable(),
    );
    this.stdin = withStdin
      ? new Writable({
          write: (chunk: Buffer, _enc, cb) => this.input.write(chunk).then(() => cb(), cb),
          final: (cb) => {
            this.input.end();
            cb();
          },
        })
      : null;
  }

  /**
   * Sends a signal (a name like 'SIGTERM' or 'TERM', or a number 1..64) to the
   * command's process group. Rejects with ERR_SANDBOX_BAD_SIGNAL for a signal
   * the guest does not know; a command that already ended is left alone.
   */
  signal(signal: NodeJS.Signals | string | number = 'SIGTERM'): Promise<void> {
    let num: number;
    try {
      num = checkSignal(signal);
    } catch (err) {
      return rejected(err);
    }
    if (!this.ended) this.link.signal(num);
    return Promise.resolve();
  }

  /** Kills the command's process group. */
  cancel(): void {
    if (!this.ended) this.link.cancel();
  }

  // ---- OperationHandler (called by the sink) ----

  out(channel: number, data: Uint8Array): void {
    if (channel === OUT_STDOUT) this.stdout.deliver(data);
    else if (channel === OUT_STDERR) this.stderr.deliver(data);
  }

  started(info: unknown): void {
    this.resolvePid((info as { pid: number }).pid);
  }

  credit(bytes: number): void {
    this.input.credit(bytes);
  }

  done(
    result: { error?: { code: string; message: string; details?: unknown } } & Record<string, unknown>,
  ): void {
    this.ended = true;
    this.input.close();
    if (result.error) {
      const err = errorFrom(result.error);
      this.stdout.finish();
      this.stderr.finish();
      this.rejectPid(err);
      this.rejectResult(err);
      return;
    }
    this.stdout.finish();
    this.stderr.finish();
    this.resolveResult({
      exitCode: (result.exitCode as number | null) ?? null,
      signal: (result.signal as string | null) ?? null,
      timedOut: Boolean(result.timedOut),
    });
  }
}
