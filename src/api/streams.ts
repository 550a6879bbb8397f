/**
 * The main thread's ends of an operation's byte streams, with the credit
 * windows of src/actors/vm/messages.ts: output is acknowledged as the reader
 * consumes it, input waits for credit before sending more.
 */
import { Readable, type Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { STREAM_WINDOW } from '../actors/vm/messages.js';

/** Largest chunk sent in one `input` message. */
export const INPUT_CHUNK = 64 * 1024;

/** Output of a guest operation as a Readable. */
export class OutputStream extends Readable {
  private unacked = 0;

  constructor(private readonly ack: (bytes: number) => void) {
    super({ highWaterMark: STREAM_WINDOW });
  }

  /** A chunk from the sink (a ring view: copied here). */
  deliver(data: Uint8Array): void {
    const copy = Buffer.from(data);
    // While the reader keeps up, acknowledge at once; otherwise when it asks for more.
    if (this.push(copy)) this.ack(copy.length);
    else this.unacked += copy.length;
  }

  override _read(): void {
    if (this.unacked > 0) {
      const n = this.unacked;
      this.unacked = 0;
      this.ack(n);
    }
  }

  finish(err?: Error): void {
    if (err) this.destroy(err);
    else this.push(null);
  }
}

/** Sends an operation's input in window-sized steps. */
export class InputChannel {
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  private closed = false;

  constructor(
    private readonly send: (data: Uint8Array, end: boolean) => boolean,
    private readonly writable: () => Promise<void>,
  ) {}

  async write(data: Uint8Array): Promise<void> {
    for (let at = 0; at < data.length; at += INPUT_CHUNK) {
      const chunk = data.subarray(at, Math.min(data.length, at + INPUT_CHUNK));
      while (this.inFlight + chunk.length > STREAM_WINDOW && !this.closed) {
        await new Promise<void>((r) => this.waiters.push(r));
      }
      if (this.closed) throw new Error('input closed');
      this.inFlight += chunk.length;
      if (!this.send(chunk, false)) await this.writable();
    }
  }

  end(): void {
    this.send(new Uint8Array(0), true);
  }

  credit(bytes: number): void {
    this.inFlight -= bytes;
    for (const w of this.waiters.splice(0)) w();
  }

  /** The operation ended: release anyone waiting for credit. */
  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w();
  }
}

/** What `exec` needs of a started command (a SandboxProcess or a RemoteProcess). */
export interface ExecutableProcess<R> {
  stdin: Writable | null;
  stdout: Readable;
  stderr: Readable;
  result: Promise<R>;
}

/**
 * The second half of `exec`, shared by the in-process and the remote
 * Sandbox: feeds stdin (then closes it), collects both streams under
 * `maxOutputBytes`, waits for the result.
 */
export async function finishExec<R>(
  proc: ExecutableProcess<R>,
  opts: {
    stdin?: string | Uint8Array | Readable;
    maxOutputBytes: number;
    onStdout?: (s: string) => void;
    onStderr?: (s: string) => void;
  },
): Promise<R & { stdout: string; stderr: string; stdoutTruncated: boolean; stderrTruncated: boolean }> {
  const { stdin } = opts;
  if (stdin !== undefined && proc.stdin) {
    // A command that stops reading its stdin ends the write with an error: the result tells.
    proc.stdin.on('error', () => {});
    if (typeof stdin === 'string' || stdin instanceof Uint8Array) proc.stdin.end(stdin);
    else stdin.pipe(proc.stdin);
  }
  const [stdout, stderr, result] = await Promise.all([
    collectOutput(proc.stdout, opts.maxOutputBytes, opts.onStdout),
    collectOutput(proc.stderr, opts.maxOutputBytes, opts.onStderr),
    proc.result,
  ]);
  return {
    ...result,
    stdout: stdout.text,
    stderr: stderr.text,
    stdoutTruncated: stdout.truncated,
    stderrTruncated: stderr.truncated,
  };
}

/**
 * What `exec` collects of one stream: at most `maxBytes` kept (and whether
 * more was cut), while `cb` receives every byte decoded as UTF-8 across chunk
 * boundaries. Shared by the in-process and the remote Sandbox.
 */
export function collectOutput(
  r: Readable,
  maxBytes: number,
  cb?: (s: string) => void,
): Promise<{ text: string; truncated: boolean }> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let kept = 0;
    let truncated = false;
    const decoder = cb ? new StringDecoder('utf8') : undefined;
    r.on('data', (d: Buffer) => {
      if (kept < maxBytes) {
        const take = Math.min(d.length, maxBytes - kept);
        parts.push(take === d.length ? d : d.subarray(0, take));
        kept += take;
        if (take < d.length) truncated = true;
      } else if (d.length > 0) truncated = true;
      if (decoder) {
        const text = decoder.write(d);
        if (text) cb!(text);
      }
    });
    r.once('end', () => {
      const rest = decoder?.end();
      if (rest) cb!(rest);
      resolve({ text: Buffer.concat(parts).toString('utf8'), truncated });
    });
    r.once('error', reject);
  });
}
