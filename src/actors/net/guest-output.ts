/**
 * The bytes a guest-facing side has written toward the guest but the stream
 * has not finished with: one reusable circular buffer instead of a fresh
 * batch buffer per write.
 *
 * Why: a stream holds a written buffer until its write completes, so under a
 * fast host→guest transfer there are many batches in flight. Allocating each
 * one (512 KiB, off-heap) made V8 run a major GC every few hundred
 * milliseconds on external-memory pressure — about 40% of a core on this
 * machine at 5 Gbit/s, most of it in GC helper threads.
 *
 * How: frames are appended to the current batch, a contiguous region that
 * never straddles the end of the buffer (a frame that would is preceded by a
 * flush and a skip to offset 0). `take()` hands the batch out as a view and
 * remembers where it ends; `release(end)` runs from the write's callback.
 * Stream writes complete in order, so releasing is just moving the tail.
 * Positions are free-running byte counts (`% size` gives the offset).
 */

export class GuestOutput {
  readonly buf: Buffer;
  /** End of the bytes appended so far. */
  private head = 0;
  /** Start of the oldest bytes a write still holds. */
  private tail = 0;
  /** Start of the batch being filled. */
  private batchStart = 0;
  /** Bumped by `reset()`, so callbacks of writes to an abandoned stream release nothing. */
  private generation = 0;

  constructor(readonly size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  /** Bytes in the batch being filled. */
  get batchBytes(): number {
    return this.head - this.batchStart;
  }

  /** Bytes appended and not yet released (the batch included). */
  get inUse(): number {
    return this.head - this.tail;
  }

  /**
   * Where the next byte goes in `buf`. A non-empty batch is contiguous from
   * its start, so when it ends exactly at the end of the buffer this is
   * `size` (not 0): the next frame cannot join it.
   */
  private get nextOffset(): number {
    return this.batchBytes > 0 ? (this.batchStart % this.size) + this.batchBytes : this.head % this.size;
  }

  /** Whether `n` more bytes go at the end of the current batch without wrapping. */
  fitsInBatch(n: number): boolean {
    return this.nextOffset + n <= this.size && this.inUse + n <= this.size;
  }

  /**
   * Room for `n` bytes at the end of the batch: the offset in `buf`, or -1
   * when the buffer is too full (the caller writes that frame on its own).
   * With an empty batch, a frame that would straddle the end starts at 0.
   */
  reserve(n: number): number {
    let at = this.nextOffset;
    if (at + n > this.size) {
      if (this.batchBytes > 0) return -1; // take() the batch first
      const skip = this.size - at;
      if (this.inUse + skip + n > this.size) return -1;
      this.head += skip;
      this.batchStart = this.head;
      at = 0;
    }
    if (this.inUse + n > this.size) return -1;
    this.head += n;
    return at;
  }

  /**
   * The batch as a view into `buf`, and the release to call once its write
   * completed; undefined when the batch is empty.
   */
  take(): { data: Buffer; release: () => void } | undefined {
    const len = this.batchBytes;
    if (len === 0) return undefined;
    const from = this.batchStart % this.size;
    const end = this.head;
    const generation = this.generation;
    this.batchStart = this.head;
    return {
      data: this.buf.subarray(from, from + len),
      release: () => {
        if (generation === this.generation && end > this.tail) this.tail = end;
      },
    };
  }

  /** Forgets everything (the stream it was written to is gone). */
  reset(): void {
    this.generation++;
    this.head = 0;
    this.tail = 0;
    this.batchStart = 0;
  }
}
