/**
 * The main thread's ends of an operation's byte streams, with the credit
 * windows of src/actors/vm/messages.ts: output is acknowledged as the reader
 * consumes it, input waits for credit before sending more.
 */
import { Readable } from 'node:stream';
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
