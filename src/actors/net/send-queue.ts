/**
 * Host→guest bytes of one TCP flow that the guest has not acknowledged yet,
 * as the pieces the host socket delivered (no coalescing copy): arena blocks
 * when the socket read into the payload arena, ordinary Buffers otherwise.
 * Offset 0 is the oldest unacknowledged byte (SND.UNA).
 */
import { sum16 } from '../../protocol/net/checksum.js';
import type { PayloadArena } from './payload-arena.js';

interface Piece {
  buf: Uint8Array;
  /** Arena block holding `buf`, or -1 for an ordinary Buffer. */
  block: number;
}

const fold16 = (s: number): number => {
  let v = s;
  while (v > 0xffff) v = (v & 0xffff) + Math.floor(v / 0x10000);
  return v;
};

export class SendQueue {
  private pieces: Piece[] = [];
  /** Bytes of pieces[0] already acknowledged. */
  private head = 0;
  /** Bytes held, from SND.UNA. */
  length = 0;

  constructor(private readonly arena: PayloadArena | undefined) {}

  push(buf: Uint8Array, block = -1): void {
    if (buf.length === 0) {
      this.arena?.release(block);
      return;
    }
    this.pieces.push({ buf, block });
    this.length += buf.length;
  }

  /** Drops `n` acknowledged bytes from the front, returning emptied blocks to the arena. */
  consume(n: number): void {
    let left = Math.min(n, this.length);
    this.length -= left;
    while (left > 0) {
      const first = this.pieces[0];
      const avail = first.buf.length - this.head;
      if (left < avail) {
        this.head += left;
        return;
      }
      left -= avail;
      this.pieces.shift();
      this.arena?.release(first.block);
      this.head = 0;
    }
  }

  /** Calls `fn(piece, start, n)` for each piece overlapping [from, from+len) after SND.UNA. */
  private forRange(
    from: number,
    len: number,
    fn: (p: Piece, start: number, n: number, pos: number) => void,
  ): void {
    let skip = from + this.head;
    let i = 0;
    while (i < this.pieces.length && skip >= this.pieces[i].buf.length) {
      skip -= this.pieces[i].buf.length;
      i++;
    }
    let left = len;
    let pos = 0;
    while (left > 0 && i < this.pieces.length) {
      const p = this.pieces[i];
      const n = Math.min(left, p.buf.length - skip);
      fn(p, skip, n, pos);
      pos += n;
      left -= n;
      skip = 0;
      i++;
    }
  }

  /** Copies `len` bytes starting `from` bytes after SND.UNA into `dst` at `dstOff`. */
  copyOut(from: number, len: number, dst: Uint8Array, dstOff: number): void {
    this.forRange(from, len, (p, start, n, pos) => {
      dst.set(start === 0 && n === p.buf.length ? p.buf : p.buf.subarray(start, start + n), dstOff + pos);
    });
  }

  /**
   * One's-complement partial sum of the range as one contiguous byte string,
   * computed from where the bytes already are (in place for arena blocks).
   * A piece starting at an odd position contributes its sum byte-swapped
   * (RFC 1071 §2B).
   */
  sum(from: number, len: number): number {
    let total = 0;
    const arena = this.arena;
    this.forRange(from, len, (p, start, n, pos) => {
      const part =
        p.block >= 0 && arena
          ? arena.sum(p.block, p.buf.byteOffset - arena.view(p.block).byteOffset + start, n)
          : sum16(p.buf, start, n);
      if (pos & 1) {
        const f = fold16(part);
        total += ((f & 0xff) << 8) | (f >>> 8);
      } else total += part;
    });
    return total;
  }

  clear(): void {
    for (const p of this.pieces) this.arena?.release(p.block);
    this.pieces = [];
    this.head = 0;
    this.length = 0;
  }
}
