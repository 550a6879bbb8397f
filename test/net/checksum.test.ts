/** The checksum kernels agree with the byte-loop reference, however the bytes are laid out (property). */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PayloadArena } from '../../src/actors/net/payload-arena.js';
import { SendQueue } from '../../src/actors/net/send-queue.js';
import { checksumKernel, finish, sum16, sum16Js } from '../../src/protocol/net/checksum.js';

describe('checksum', () => {
  it('uses the WebAssembly SIMD kernel on this machine', () => {
    expect(checksumKernel).toBe('wasm-simd');
  });

  it('sum16 equals the byte loop for any bytes, offset and length', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 70_000 }), fc.nat(), fc.nat(), (bytes, a, b) => {
        const off = a % bytes.length;
        const len = b % (bytes.length - off + 1);
        expect(finish(sum16(bytes, off, len))).toBe(finish(sum16Js(bytes, off, len)));
      }),
      { numRuns: 300 },
    );
  });

  it('sums arena blocks in place like the byte loop', () => {
    const arena = new PayloadArena(2);
    const b = arena.alloc();
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 65_536 }), fc.nat(), (bytes, a) => {
        const view = arena.view(b);
        view.set(bytes);
        const from = a % bytes.length;
        const len = bytes.length - from;
        expect(finish(arena.sum(b, from, len))).toBe(finish(sum16Js(view, from, len)));
      }),
      { numRuns: 200 },
    );
  });

  it('sums a send queue of odd-sized arena and heap pieces like one contiguous string', () => {
    const arena = new PayloadArena(64);
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ bytes: fc.uint8Array({ minLength: 1, maxLength: 5000 }), inArena: fc.boolean() }),
          {
            minLength: 1,
            maxLength: 12,
          },
        ),
        fc.nat(),
        fc.nat(),
        fc.nat(),
        (pieces, c, f, l) => {
          const q = new SendQueue(arena);
          for (const p of pieces) {
            const block = p.inArena ? arena.alloc() : -1;
            if (block >= 0) {
              const v = arena.view(block);
              v.set(p.bytes);
              q.push(v.subarray(0, p.bytes.length), block);
            } else q.push(Buffer.from(p.bytes));
          }
          const all = Buffer.concat(pieces.map((p) => p.bytes));
          const consumed = c % all.length;
          q.consume(consumed);
          const rest = all.subarray(consumed);
          const from = rest.length ? f % rest.length : 0;
          const len = rest.length - from ? l % (rest.length - from + 1) : 0;
          expect(finish(q.sum(from, len))).toBe(finish(sum16Js(rest, from, len)));
          const out = new Uint8Array(len);
          q.copyOut(from, len, out, 0);
          expect(Buffer.from(out)).toEqual(rest.subarray(from, from + len));
          q.clear();
          expect(arena.available).toBe(64);
        },
      ),
      { numRuns: 300 },
    );
  });
});
