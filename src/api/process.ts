/**
 * A command running in a sandbox: its streams, its result, signals, and (for
 * one started with a pty) its terminal's size.
 */

import { Writable } from 'node:stream';
import { OUT_STDERR, OUT_STDOUT } from '../actors/vm/messages.js';
import { deferred } from './deferred.js';
import { errorFrom, SandboxError, SandboxErrorCode } from './errors.js';
import { checkOptions, PtySize, rejected, signalOrRejection } from './schemas.js';
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
  resize(cols: number, rows: number): void;
}

export class SandboxProcess implements OperationHandler {
  /** Its output; with a pty, everything the terminal shows (echo included). */
  readonly stdout: OutputStream;
  /** Its error output; with a pty always empty (the terminal is stdout). */
  readonly stderr: OutputStream;
  /** The command's stdin, when it was started with `stdin: 'pipe'` or a pty (then: the terminal's keyboard). */
  readonly stdin: Writable | null;
  /** Resolves with the guest pid once the command started. */
  readonly pid: Promise<number>;
  /** Resolves when the command ended; rejects with a typed error if it could not run. */
  readonly result: Promise<ProcessResult>;
  // Awaiting them still sees a rejection; ignoring them must not end the caller's process.
  private readonly pidKnown = deferred<number>();
  private readonly ending = deferred<ProcessResult>();
  private readonly input: InputChannel;
  private ended = false;

  constructor(
    private readonly link: ProcessLink,
    withStdin: boolean,
    /** Started on a pseudo-terminal. */
    readonly pty = false,
  ) {
    this.stdout = new OutputStream((n) => link.ack(n));
    this.stderr = new OutputStream((n) => link.ack(n));
    this.pid = this.pidKnown.promise;
    this.result = this.ending.promise;
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
    // A write that fails because the command ended (or the sandbox went) rejects its own callback;
    // the stream's 'error' event must not become an uncaught exception in the caller's process.
    this.stdin?.on('error', () => {});
  }

  /**
   * Sends a signal (a name like 'SIGTERM' or 'TERM', or a number 1..64) to the
   * command's process group. Rejects with ERR_SANDBOX_BAD_SIGNAL for a signal
   * the guest does not know; a command that already ended is left alone.
   */
  signal(signal: NodeJS.Signals | string | number = 'SIGTERM'): Promise<void> {
    const num = signalOrRejection(signal);
    if (typeof num !== 'number') return num;
    if (!this.ended) this.link.signal(num);
    return Promise.resolve();
  }

  /**
   * Sets the terminal's size (cols and rows 1..1000); the kernel sends the
   * command SIGWINCH. Rejects with ERR_SANDBOX_BAD_OPTIONS for a bad size or a
   * command started without a pty; a command that already ended is left alone.
   */
  resize(size: { cols: number; rows: number }): Promise<void> {
    let s: { cols: number; rows: number };
    try {
      s = checkOptions(PtySize, size, 'size');
      if (!this.pty) {
        throw new SandboxError(SandboxErrorCode.BAD_OPTIONS, 'resize: the command was started without a pty');
      }
    } catch (err) {
      return rejected(err);
    }
    if (!this.ended) this.link.resize(s.cols, s.rows);
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
    this.pidKnown.resolve((info as { pid: number }).pid);
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
      this.pidKnown.reject(err);
      this.ending.reject(err);
      return;
    }
    this.stdout.finish();
    this.stderr.finish();
    this.ending.resolve({
      exitCode: (result.exitCode as number | null) ?? null,
      signal: (result.signal as string | null) ?? null,
      timedOut: Boolean(result.timedOut),
    });
  }
}
