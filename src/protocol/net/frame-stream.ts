/**
 * QEMU's stream netdev framing, also spoken by the agent's TAP relay: each
 * Ethernet frame is preceded by its length as a 4-byte big-endian integer.
 * The decoder carries partial frames across reads and hands out complete
 * frames as views (into the chunk when the frame lies within it, else into a
 * reassembly buffer) — valid only during the callback.
 */
import { ActorvmError } from '../../errors.js';

export const MIN_FRAME = 14;
export const MAX_FRAME = 65535;

export class FramingError extends ActorvmError {
  constructor(length: number) {
    super('ERR_NET_FRAMING', `frame length ${length} outside ${MIN_FRAME}..${MAX_FRAME}`, { length });
  }
}

export type FrameHandler = (buf: Uint8Array, off: number, len: number) => void;

export class FrameDecoder {
  /** Reassembly of a frame (or length prefix) split across chunks. */
  private partial = new Uint8Array(4 + MAX_FRAME);
  private partialLen = 0;

  constructor(private readonly onFrame: FrameHandler) {}

  /** Feeds one chunk from the stream. Throws FramingError on an impossible length (drop the stream). */
  push(chunk: Uint8Array): void {
    let i = 0;
    const n = chunk.length;
    if (this.partialLen > 0) {
      i = this.fillPartial(chunk);
      if (i < 0) return;
    }
    while (i + 4 <= n) {
      const len = ((chunk[i] << 24) | (chunk[i + 1] << 16) | (chunk[i + 2] << 8) | chunk[i + 3]) >>> 0;
      if (len < MIN_FRAME || len > MAX_FRAME) throw new FramingError(len);
      if (i + 4 + len > n) break;
      this.onFrame(chunk, i + 4, len);
      i += 4 + len;
    }
    if (i < n) {
      this.partial.set(chunk.subarray(i), 0);
      this.partialLen = n - i;
      if (this.partialLen >= 4) this.checkPartialLength();
    }
  }

  /** Completes the pending frame from the head of `chunk`; returns where the rest starts, or -1 if still partial. */
  private fillPartial(chunk: Uint8Array): number {
    let used = 0;
    if (this.partialLen < 4) {
      used = Math.min(4 - this.partialLen, chunk.length);
      this.partial.set(chunk.subarray(0, used), this.partialLen);
      this.partialLen += used;
      if (this.partialLen < 4) return -1;
      this.checkPartialLength();
    }
    const p = this.partial;
    const len = ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
    const want = 4 + len - this.partialLen;
    const take = Math.min(want, chunk.length - used);
    p.set(chunk.subarray(used, used + take), this.partialLen);
    this.partialLen += take;
    if (take < want) return -1;
    this.partialLen = 0;
    this.onFrame(p, 4, len);
    return used + take;
  }

  private checkPartialLength(): void {
    const p = this.partial;
    const len = ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
    if (len < MIN_FRAME || len > MAX_FRAME) {
      this.partialLen = 0;
      throw new FramingError(len);
    }
  }
}

/** Writes the 4-byte length prefix of a `len`-byte frame at `off`. */
export function writeFrameLength(buf: Uint8Array, off: number, len: number): void {
  buf[off] = len >>> 24;
  buf[off + 1] = (len >>> 16) & 0xff;
  buf[off + 2] = (len >>> 8) & 0xff;
  buf[off + 3] = len & 0xff;
}
