/**
 * The host's half of per-stream flow control.
 *
 * Inbound (agent → host): an {@link InboundStream} returns credit to the agent
 * only for bytes its consumer has taken out of it, so a consumer that stops
 * reading stops the agent, and through it the guest command, within one window.
 *
 * Outbound (host → agent): an {@link OutboundCredit} counts what the agent has
 * granted; senders wait on it before each DATA frame.
 */
import { Readable } from 'node:stream';

export interface InboundStreamOptions {
  /** Returns `bytes` of credit to the agent (sends WINDOW). */
  grant(bytes: number): void;
  /** Credit the agent starts with; grants are batched to a quarter of it. */
  window: number;
  /** Called when the consumer destroys the stream before its end. */
  onAbandon?(): void;
}

export class InboundStream extends Readable {
  readonly #grant: (bytes: number) => void;
  readonly #threshold: number;
  readonly #onAbandon: (() => void) | undefined;
  #pushed = 0;
  #returned = 0;
  #ended = false;

  constructor(opts: InboundStreamOptions) {
    super();
    this.#grant = opts.grant;
    this.#threshold = Math.max(1, Math.floor(opts.window / 4));
    this.#onAbandon = opts.onAbandon;
  }

  /** Bytes from a DATA frame. */
  deliver(chunk: Buffer): void {
    if (this.destroyed || this.#ended) {
      // Nobody will read these: hand the credit straight back so the sender is not stuck.
      this.#grant(chunk.length);
      return;
    }
    this.#pushed += chunk.length;
    this.push(chunk);
    this.#settle();
  }

  /** End of the channel. */
  finish(): void {
    if (this.#ended || this.destroyed) return;
    this.#ended = true;
    this.push(null);
  }

  override _read(): void {
    // Called before the chunk being read leaves the buffer; count it once it has.
    queueMicrotask(() => this.#settle());
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const outstanding = this.#pushed - this.#returned;
    this.#returned = this.#pushed;
    if (outstanding > 0) this.#grant(outstanding);
    if (!this.#ended) {
      this.#ended = true;
      this.#onAbandon?.();
    }
    cb(err);
  }

  #settle(): void {
    if (this.destroyed) return;
    const consumed = this.#pushed - this.readableLength - this.#returned;
    if (consumed >= this.#threshold) {
      this.#returned += consumed;
      this.#grant(consumed);
    }
  }
}

export class OutboundCredit {
  #credit = 0;
  #waiters: (() => void)[] = [];
  #failure: Error | undefined;

  add(bytes: number): void {
    this.#credit += bytes;
    this.#wake();
  }

  /** Makes every current and future `acquire` reject with `err`. */
  fail(err: Error): void {
    this.#failure ??= err;
    this.#wake();
  }

  /** Waits for credit and takes up to `max` bytes of it. */
  async acquire(max: number): Promise<number> {
    while (this.#credit <= 0 && !this.#failure) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    if (this.#failure) throw this.#failure;
    const n = Math.min(max, this.#credit);
    this.#credit -= n;
    return n;
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const resolve of w) resolve();
  }
}
