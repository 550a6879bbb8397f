/**
 * Payload blocks of a flow shard, living inside the memory of a WebAssembly
 * checksum kernel.
 *
 * Guest→host: a segment's payload is copied once, from the ring into a
 * block; its checksum is verified there in place, and the host socket writes
 * straight from the block. Host→guest: host sockets read (`onread`) straight
 * into blocks; segments are checksummed from them in place and copied once
 * into the ring. Without the arena each direction paid one more full copy
 * (into the kernel's scratch memory) and a 64 KiB allocation per packet.
 *
 * Blocks are 64 KiB, handed out from a free list; when they run out callers
 * fall back to ordinary Buffers (and the copying checksum), so the arena
 * bounds nothing but its own size.
 */

import { sum16Js } from '../../protocol/net/checksum.js';
import { loadWasmChecksum, WASM_PAGES, type WasmChecksum } from '../../protocol/net/checksum-wasm.js';

export const BLOCK = 65536;

export class PayloadArena {
  private readonly kernel: WasmChecksum | undefined;
  private readonly free: number[] = [];
  private readonly views: Buffer[] = [];
  /** Allocations that found the arena empty (exported as a counter). */
  exhausted = 0;

  constructor(blocks: number) {
    // The first WASM_PAGES pages stay the kernel's; blocks start after them.
    this.kernel = loadWasmChecksum(WASM_PAGES + blocks);
    if (!this.kernel) return;
    const base = WASM_PAGES * 65536;
    const buffer = this.kernel.mem.buffer;
    for (let i = 0; i < blocks; i++) {
      this.views.push(Buffer.from(buffer, base + i * BLOCK, BLOCK));
      this.free.push(blocks - 1 - i);
    }
  }

  get available(): number {
    return this.free.length;
  }

  /** A free block index, or -1 (the caller uses an ordinary Buffer). */
  alloc(): number {
    const b = this.free.pop();
    if (b === undefined) {
      this.exhausted++;
      return -1;
    }
    return b;
  }

  release(block: number): void {
    if (block >= 0) this.free.push(block);
  }

  /** The whole block as a Buffer (a view: no copy). */
  view(block: number): Buffer {
    return this.views[block];
  }

  /** Big-endian one's-complement partial sum of block[from .. from+len), computed in place. */
  sum(block: number, from: number, len: number): number {
    const k = this.kernel!;
    const view = this.views[block];
    const at = view.byteOffset + from;
    const simd = len & ~15;
    let s = 0;
    if (simd > 0) {
      const swapped = k.sum(at, simd);
      s = ((swapped & 0xff) << 8) | (swapped >>> 8);
    }
    return simd < len ? sum16Js(view, from + simd, len - simd, s) : s;
  }
}
