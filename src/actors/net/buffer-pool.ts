/**
 * Recycled Buffers for host-socket writes. A write must own its bytes until
 * the kernel took them (the ring slot they came from is reused at once), so
 * guest→host data is copied into a Buffer; allocating a fresh 64 KiB
 * ArrayBuffer per segment made allocation and GC the largest costs of a bulk
 * transfer. Buffers come back when their write completes.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(
    readonly size: number,
    private readonly keep: number,
  ) {}

  /** A buffer of at least `len` bytes (pooled when `len` fits the pool's size). */
  take(len: number): Buffer {
    if (len > this.size) return Buffer.allocUnsafeSlow(len);
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  give(b: Buffer): void {
    if (b.length === this.size && this.free.length < this.keep) this.free.push(b);
  }
}
