/** Message codecs: round trips for any value (property), zero-copy bytes, typed errors on bad input. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  array,
  bool,
  bytes,
  CodecError,
  decodeBuffer,
  encodeToBuffer,
  f64,
  i32,
  optional,
  Reader,
  str,
  struct,
  u8,
  u16,
  u32,
  union,
} from '../../src/protocol/codec.js';

const Msg = union({
  frame: struct({ sandbox: u32, data: bytes }),
  open: struct({
    host: str,
    port: u16,
    tags: array(str),
    ttl: optional(i32),
    fast: bool,
    weight: f64,
    proto: u8,
  }),
  close: struct({}),
});

const msgArb = fc.oneof(
  fc.record({
    type: fc.constant('frame' as const),
    sandbox: fc.nat({ max: 0xffffffff }),
    data: fc.uint8Array(),
  }),
  fc.record({
    type: fc.constant('open' as const),
    host: fc.string(),
    port: fc.nat({ max: 0xffff }),
    tags: fc.array(fc.string({ maxLength: 8 }), { maxLength: 5 }),
    ttl: fc.option(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { nil: undefined }),
    fast: fc.boolean(),
    weight: fc.double({ noNaN: true }),
    proto: fc.nat({ max: 255 }),
  }),
  fc.constant({ type: 'close' as const }),
);

describe('codec', () => {
  it('round-trips any message and size() is exact (property)', () => {
    fc.assert(
      fc.property(msgArb, (m) => {
        const buf = encodeToBuffer(Msg, m);
        expect(buf.length).toBe(Msg.size(m));
        expect(decodeBuffer(Msg, buf)).toEqual(m);
      }),
      { numRuns: 500 },
    );
  });

  it('decodes bytes as a view into the source (zero copy)', () => {
    const buf = encodeToBuffer(Msg, { type: 'frame', sandbox: 1, data: new Uint8Array([1, 2, 3]) });
    const m = Msg.read(new Reader(buf)) as { data: Uint8Array };
    expect(m.data.buffer).toBe(buf.buffer);
    buf[buf.length - 1] = 9;
    expect(m.data[2]).toBe(9);
  });

  it('throws a typed error on truncated or malformed input, never a RangeError (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (junk) => {
        try {
          decodeBuffer(Msg, junk);
        } catch (err) {
          expect(err).toBeInstanceOf(CodecError);
          expect((err as CodecError).code).toBe('ERR_CODEC_MALFORMED');
        }
      }),
      { numRuns: 2000 },
    );
    expect(() => decodeBuffer(Msg, new Uint8Array([9]))).toThrow(CodecError);
    expect(() => Msg.size({ type: 'nope' } as never)).toThrow(CodecError);
  });
});
