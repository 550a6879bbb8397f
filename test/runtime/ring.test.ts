/**
 * The ring in one thread: layout, wrap-around, limits, stats, and a
 * model-based property test (fast-check) against a plain queue.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  createRing,
  RingConsumer,
  RingProducer,
  RingRecordTooLargeError,
  readRingStats,
} from '../../src/runtime/ring.js';

const payload = (seq: number, size: number): Uint8Array => {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (seq * 31 + i * 7) & 0xff;
  return b;
};

function drainAll(c: RingConsumer): Uint8Array[] {
  const out: Uint8Array[] = [];
  c.drain((d, off, len) => out.push(d.slice(off, off + len)));
  return out;
}

describe('ring (single thread)', () => {
  it('delivers records only after publish, in order, byte for byte', () => {
    const d = createRing(1024, 't');
    const p = new RingProducer(d);
    const c = new RingConsumer(d);
    expect(p.tryWrite(payload(1, 10))).toBe(true);
    expect(p.tryWrite(payload(2, 0))).toBe(true);
    expect(drainAll(c)).toEqual([]);
    p.publish();
    expect(drainAll(c)).toEqual([payload(1, 10), payload(2, 0)]);
    expect(drainAll(c)).toEqual([]);
  });

  it('wraps records that do not fit in the tail to the start', () => {
    const d = createRing(256, 't');
    const p = new RingProducer(d);
    const c = new RingConsumer(d);
    const seen: Uint8Array[] = [];
    for (let seq = 0; seq < 200; seq++) {
      const size = (seq * 37) % 100;
      expect(p.tryWrite(payload(seq, size))).toBe(true);
      p.publish();
      seen.push(...drainAll(c));
    }
    expect(seen.length).toBe(200);
    for (const [seq, rec] of seen.entries()) expect(rec).toEqual(payload(seq, (seq * 37) % 100));
  });

  it('refuses a record larger than it can ever hold with a typed error and stays intact', () => {
    const d = createRing(256, 't');
    const p = new RingProducer(d);
    const c = new RingConsumer(d);
    expect(p.maxRecord).toBe(124);
    p.tryWrite(payload(1, 5));
    expect(() => p.reserve(125)).toThrow(RingRecordTooLargeError);
    try {
      p.reserve(1000);
    } catch (err) {
      expect((err as RingRecordTooLargeError).code).toBe('ERR_RING_RECORD_TOO_LARGE');
    }
    expect(p.tryWrite(payload(2, 124))).toBe(true);
    p.publish();
    expect(drainAll(c)).toEqual([payload(1, 5), payload(2, 124)]);
  });

  it('an empty ring always takes a maximum-size record, wherever its positions are', () => {
    for (let shift = 0; shift < 256; shift += 4) {
      const d = createRing(256, 't');
      const p = new RingProducer(d);
      const c = new RingConsumer(d);
      // Move both positions to `shift` with empty records (4 bytes each).
      for (let i = 0; i < shift / 4; i++) p.tryWrite(new Uint8Array(0));
      p.publish();
      drainAll(c);
      expect(p.tryWrite(payload(shift, p.maxRecord))).toBe(true);
      p.publish();
      expect(drainAll(c)).toEqual([payload(shift, p.maxRecord)]);
    }
  });

  it('reports full instead of overwriting, and counts it', () => {
    const d = createRing(256, 't');
    const p = new RingProducer(d);
    const c = new RingConsumer(d);
    let written = 0;
    while (p.tryWrite(payload(written, 60))) written++;
    expect(written).toBe(4); // 4 × 64 bytes fill 256
    p.publish();
    const s = readRingStats(d);
    expect(s.fullEvents).toBe(1);
    expect(s.records).toBe(4);
    expect(s.depthBytes).toBe(256);
    expect(s.highWaterBytes).toBe(256);
    expect(drainAll(c).length).toBe(4);
    expect(readRingStats(d).depthBytes).toBe(0);
    expect(readRingStats(d).recordsRead).toBe(4);
  });

  it('a handler that throws consumes its record and does not wedge the ring', () => {
    const d = createRing(256, 't');
    const p = new RingProducer(d);
    const c = new RingConsumer(d);
    for (let i = 0; i < 3; i++) p.tryWrite(payload(i, 8));
    p.publish();
    let calls = 0;
    expect(() =>
      c.drain((data, off) => {
        calls++;
        if (data[off] === payload(1, 8)[0]) throw new Error('poison');
      }),
    ).toThrow('poison');
    expect(calls).toBe(2);
    expect(drainAll(c)).toEqual([payload(2, 8)]);
  });

  it('matches a FIFO model under any interleaving of writes, publishes and drains (property)', () => {
    type Op = { op: 'write'; size: number } | { op: 'publish' } | { op: 'drain'; max: number };
    const opArb: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ op: fc.constant('write' as const), size: fc.nat({ max: 124 }) }),
      fc.constant({ op: 'publish' as const }),
      fc.record({ op: fc.constant('drain' as const), max: fc.integer({ min: 1, max: 8 }) }),
    );
    fc.assert(
      fc.property(fc.constantFrom(256, 512, 1024), fc.array(opArb, { maxLength: 400 }), (capacity, ops) => {
        const d = createRing(capacity, 'model');
        const p = new RingProducer(d);
        const c = new RingConsumer(d);
        const unpublished: Uint8Array[] = [];
        const published: Uint8Array[] = [];
        let seq = 0;
        for (const o of ops) {
          if (o.op === 'write') {
            const rec = payload(seq, Math.min(o.size, p.maxRecord));
            if (p.tryWrite(rec)) {
              unpublished.push(rec);
              seq++;
            }
          } else if (o.op === 'publish') {
            p.publish();
            published.push(...unpublished.splice(0));
          } else {
            const got: Uint8Array[] = [];
            c.drain((data, off, len) => got.push(data.slice(off, off + len)), o.max);
            const expected = published.splice(0, Math.min(o.max, published.length));
            expect(got).toEqual(expected);
          }
        }
        p.publish();
        published.push(...unpublished.splice(0));
        expect(drainAll(c)).toEqual(published);
      }),
      { numRuns: 300 },
    );
  });
});
