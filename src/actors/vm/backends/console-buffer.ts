/**
 * The last bytes a machine wrote to its console, for error messages and
 * inspection: a fixed-size ring, so a chatty guest costs a bounded amount of
 * memory no matter how long it runs.
 */
export class ConsoleBuffer {
  readonly #buf: Buffer;
  #end = 0; // next write position
  #full = false;
  #total = 0;

  constructor(capacity = 64 * 1024) {
    this.#buf = Buffer.alloc(capacity);
  }

  /** Bytes ever written (not just retained). */
  get totalBytes(): number {
    return this.#total;
  }

  write(chunk: Uint8Array): void {
    this.#total += chunk.length;
    const cap = this.#buf.length;
    if (chunk.length >= cap) {
      this.#buf.set(chunk.subarray(chunk.length - cap));
      this.#end = 0;
      this.#full = true;
      return;
    }
    const first = Math.min(chunk.length, cap - this.#end);
    this.#buf.set(chunk.subarray(0, first), this.#end);
    if (first < chunk.length) {
      this.#buf.set(chunk.subarray(first), 0);
      this.#full = true;
    }
    const next = (this.#end + chunk.length) % cap;
    if (this.#end + chunk.length >= cap) this.#full = true;
    this.#end = next;
  }

  /** The retained bytes, oldest first. */
  bytes(): Buffer {
    if (!this.#full) return Buffer.from(this.#buf.subarray(0, this.#end));
    return Buffer.concat([this.#buf.subarray(this.#end), this.#buf.subarray(0, this.#end)]);
  }

  /** The last `maxBytes` (default all retained) as text; a split UTF-8 sequence at the start is dropped. */
  tail(maxBytes = this.#buf.length): string {
    const b = this.bytes();
    let s = b.subarray(Math.max(0, b.length - maxBytes));
    while (s.length && (s[0] & 0xc0) === 0x80) s = s.subarray(1);
    return s.toString('utf8');
  }
}
