/**
 * Host→guest bytes of one TCP flow that the guest has not acknowledged yet,
 * as the list of Buffers the host socket delivered (no coalescing copy).
 * Offset 0 is the oldest unacknowledged byte (SND.UNA).
 */
export class SendQueue {
  private bufs: Buffer[] = [];
  /** Bytes of bufs[0] already acknowledged. */
  private head = 0;
  /** Bytes held, from SND.UNA. */
  length = 0;

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.bufs.push(b);
    this.length += b.length;
  }

  /** Drops `n` acknowledged bytes from the front. */
  consume(n: number): void {
    let left = Math.min(n, this.length);
    this.length -= left;
    while (left > 0) {
      const first = this.bufs[0];
      const avail = first.length - this.head;
      if (left < avail) {
        this.head += left;
        return;
      }
      left -= avail;
      this.bufs.shift();
      this.head = 0;
    }
  }

  /** Copies `len` bytes starting `from` bytes after SND.UNA into `dst` at `dstOff`. */
  copyOut(from: number, len: number, dst: Uint8Array, dstOff: number): void {
    let skip = from + this.head;
    let i = 0;
    while (i < this.bufs.length && skip >= this.bufs[i].length) {
      skip -= this.bufs[i].length;
      i++;
    }
    let left = len;
    let o = dstOff;
    while (left > 0 && i < this.bufs.length) {
      const b = this.bufs[i];
      const n = Math.min(left, b.length - skip);
      dst.set(skip === 0 && n === b.length ? b : b.subarray(skip, skip + n), o);
      o += n;
      left -= n;
      skip = 0;
      i++;
    }
  }

  clear(): void {
    this.bufs = [];
    this.head = 0;
    this.length = 0;
  }
}
