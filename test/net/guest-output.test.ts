/**
 * The guest side's reusable output buffer: batches never straddle its end,
 * space comes back only when the write that holds it completes (in order), a
 * full buffer says so instead of overwriting, and a reset disowns the
 * callbacks of writes to an abandoned stream. Checked against a model of what
 * a stream would receive.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestOutput } from '../../src/actors/net/guest-output.js';

/** Appends `bytes` (all equal to `fill`) if it fits; returns whether it did. */
function append(out: GuestOutput, n: number, fill: number): boolean {
  const at = out.reserve(n);
  if (at < 0) return false;
  out.buf.fill(fill, at, at + n);
  return true;
}

describe('guest output buffer', () => {
  it('hands out appended frames as one batch view and takes the space back on release', () => {
    const out = new GuestOutput(64);
    expect(append(out, 10, 1)).toBe(true);
    expect(append(out, 6, 2)).toBe(true);
    expect(out.batchBytes).toBe(16);
    const b = out.take()!;
    expect([...b.data]).toEqual([...Array(10).fill(1), ...Array(6).fill(2)]);
    expect(out.batchBytes).toBe(0);
    expect(out.inUse).toBe(16);
    expect(out.take()).toBeUndefined();
    b.release();
    expect(out.inUse).toBe(0);
  });

  it('never lets a batch straddle the end: a frame that would wraps to 0 once the batch is taken', () => {
    const out = new GuestOutput(32);
    expect(append(out, 20, 1)).toBe(true);
    expect(out.fitsInBatch(16)).toBe(false);
    expect(out.reserve(16)).toBe(-1); // the batch must go first
    const first = out.take()!;
    first.release();
    expect(out.reserve(16)).toBe(0); // skipped the 12-byte tail
    const second = out.take()!;
    expect(second.data.byteOffset - out.buf.byteOffset).toBe(0);
    expect(second.data.length).toBe(16);
  });

  it('refuses instead of overwriting bytes a write still holds', () => {
    const out = new GuestOutput(32);
    expect(append(out, 24, 7)).toBe(true);
    const held = out.take()!;
    expect(out.reserve(16)).toBe(-1); // would wrap over the held bytes
    expect(out.reserve(8)).toBe(24); // the tail still has room
    expect([...held.data]).toEqual(Array(24).fill(7));
    held.release();
  });

  it('ignores releases of writes made before a reset', () => {
    const out = new GuestOutput(32);
    append(out, 8, 1);
    const stale = out.take()!;
    out.reset();
    append(out, 30, 2);
    const live = out.take()!;
    stale.release();
    expect(out.inUse).toBe(30);
    live.release();
    expect(out.inUse).toBe(0);
  });

  it('never extends a batch that ends exactly at the end of the buffer past the wrap', () => {
    // Found by the property below: the batch filled the buffer to its last byte,
    // the oldest write completed, and the next frame went to offset 0 — into the
    // same batch, whose view then missed it.
    const out = new GuestOutput(64);
    append(out, 41, 1);
    const first = out.take()!;
    append(out, 23, 2);
    first.release();
    expect(out.fitsInBatch(1)).toBe(false);
    expect(out.reserve(1)).toBe(-1);
    const second = out.take()!;
    expect([...second.data]).toEqual(Array(23).fill(2));
    expect(append(out, 1, 3)).toBe(true);
    expect([...out.take()!.data]).toEqual([3]);
  });

  it('delivers exactly the appended bytes, in order, for any interleaving (property)', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('append' as const), n: fc.integer({ min: 1, max: 40 }) }),
      fc.record({ kind: fc.constant('take' as const) }),
      fc.record({ kind: fc.constant('complete' as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const out = new GuestOutput(64);
        const written: number[] = []; // what the "stream" received, in order
        const expected: number[] = []; // what was appended and accepted
        const inFlight: { data: Buffer; release: () => void }[] = [];
        let next = 1;
        const complete = (): void => {
          const w = inFlight.shift();
          if (!w) return;
          written.push(...w.data); // a stream reads the bytes by the time it completes
          w.release();
        };
        for (const o of ops) {
          if (o.kind === 'append') {
            if (!out.fitsInBatch(o.n)) {
              const b = out.take();
              if (b) inFlight.push(b);
            }
            const fill = next++ & 0xff;
            if (append(out, o.n, fill)) expected.push(...Array(o.n).fill(fill));
          } else if (o.kind === 'take') {
            const b = out.take();
            if (b) inFlight.push(b);
          } else complete();
        }
        const b = out.take();
        if (b) inFlight.push(b);
        while (inFlight.length) complete();
        expect(written).toEqual(expected);
        expect(out.inUse).toBe(0);
      }),
      { numRuns: 2000 },
    );
  });
});
