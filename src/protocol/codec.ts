/**
 * Binary codecs for typed actor messages.
 *
 * A message kind is a TypeScript discriminated union; its codec is built from
 * the combinators below, so the type is inferred from the codec and the two can
 * never drift:
 *
 *     const PingMessages = union({
 *       ping: struct({ seq: u32, payload: bytes }),
 *       stop: struct({}),
 *     });
 *     type PingMessage = Infer<typeof PingMessages>;
 *     // { type: 'ping'; seq: number; payload: Uint8Array } | { type: 'stop' }
 *
 * Encoding writes straight into the destination buffer (usually a ring's shared
 * memory), so `size()` must be exact. Decoding reads from a `Reader` cursor;
 * `bytes` fields decode as *views* into the source buffer, never copies: that is
 * what makes ring delivery zero-copy, and it is why a handler must copy a byte
 * field it wants to keep beyond its own return.
 *
 * Integers are big-endian, like every wire format in this project.
 */
import { ActorvmError } from '../errors.js';

/** Decoding ran past the end of the record or found an impossible value. */
export class CodecError extends ActorvmError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('ERR_CODEC_MALFORMED', message, details);
  }
}

/** A read cursor over one record. */
export class Reader {
  buf: Uint8Array;
  dv: DataView;
  off: number;
  end: number;

  constructor(buf: Uint8Array, off = 0, end = buf.length, dv?: DataView) {
    this.buf = buf;
    this.dv = dv ?? new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.off = off;
    this.end = end;
  }

  /** Re-point the cursor at another record without allocating (hot path). */
  reset(off: number, end: number): this {
    this.off = off;
    this.end = end;
    return this;
  }

  need(n: number): number {
    const at = this.off;
    if (at + n > this.end) throw new CodecError('record truncated', { need: n, have: this.end - at });
    this.off = at + n;
    return at;
  }
}

/** Encoder/decoder pair for values of type `T`. */
export interface Codec<T> {
  /** Exact number of bytes `write` will produce for `v`. */
  size(v: T): number;
  /** Writes `v` at `off` of `buf` (and its DataView `dv`), returns the offset after it. */
  write(v: T, buf: Uint8Array, dv: DataView, off: number): number;
  /** Reads one value at the reader's cursor, advancing it. */
  read(r: Reader): T;
}

/** The TypeScript type a codec encodes. */
export type Infer<C> = C extends Codec<infer T> ? T : never;

export const u8: Codec<number> = {
  size: () => 1,
  write: (v, buf, _dv, off) => {
    buf[off] = v;
    return off + 1;
  },
  read: (r) => r.buf[r.need(1)],
};

export const u16: Codec<number> = {
  size: () => 2,
  write: (v, _buf, dv, off) => {
    dv.setUint16(off, v);
    return off + 2;
  },
  read: (r) => r.dv.getUint16(r.need(2)),
};

export const u32: Codec<number> = {
  size: () => 4,
  write: (v, _buf, dv, off) => {
    dv.setUint32(off, v >>> 0);
    return off + 4;
  },
  read: (r) => r.dv.getUint32(r.need(4)),
};

export const i32: Codec<number> = {
  size: () => 4,
  write: (v, _buf, dv, off) => {
    dv.setInt32(off, v | 0);
    return off + 4;
  },
  read: (r) => r.dv.getInt32(r.need(4)),
};

/** A JavaScript number (IEEE double): counters, timestamps, sizes beyond 2^32. */
export const f64: Codec<number> = {
  size: () => 8,
  write: (v, _buf, dv, off) => {
    dv.setFloat64(off, v);
    return off + 8;
  },
  read: (r) => r.dv.getFloat64(r.need(8)),
};

export const bool: Codec<boolean> = {
  size: () => 1,
  write: (v, buf, _dv, off) => {
    buf[off] = v ? 1 : 0;
    return off + 1;
  },
  read: (r) => r.buf[r.need(1)] !== 0,
};

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

/** UTF-8 string with a u32 byte-length prefix. */
export const str: Codec<string> = {
  size: (v) => 4 + Buffer.byteLength(v, 'utf8'),
  write: (v, buf, dv, off) => {
    const { written } = utf8Encoder.encodeInto(v, buf.subarray(off + 4));
    dv.setUint32(off, written);
    return off + 4 + written;
  },
  read: (r) => {
    const len = r.dv.getUint32(r.need(4));
    const at = r.need(len);
    return utf8Decoder.decode(r.buf.subarray(at, at + len));
  },
};

/**
 * Opaque bytes with a u32 length prefix. Decodes as a view into the source
 * buffer: valid only while the record is (until the handler returns).
 */
export const bytes: Codec<Uint8Array> = {
  size: (v) => 4 + v.byteLength,
  write: (v, buf, dv, off) => {
    dv.setUint32(off, v.byteLength);
    buf.set(v, off + 4);
    return off + 4 + v.byteLength;
  },
  read: (r) => {
    const len = r.dv.getUint32(r.need(4));
    const at = r.need(len);
    return r.buf.subarray(at, at + len);
  },
};

/** A value that may be absent: one presence byte, then the value. */
export function optional<T>(c: Codec<T>): Codec<T | undefined> {
  return {
    size: (v) => (v === undefined ? 1 : 1 + c.size(v)),
    write: (v, buf, dv, off) => {
      if (v === undefined) {
        buf[off] = 0;
        return off + 1;
      }
      buf[off] = 1;
      return c.write(v, buf, dv, off + 1);
    },
    read: (r) => (r.buf[r.need(1)] === 0 ? undefined : c.read(r)),
  };
}

/** A list with a u32 count prefix. */
export function array<T>(c: Codec<T>): Codec<T[]> {
  return {
    size: (v) => {
      let n = 4;
      for (const e of v) n += c.size(e);
      return n;
    },
    write: (v, buf, dv, off) => {
      dv.setUint32(off, v.length);
      let at = off + 4;
      for (const e of v) at = c.write(e, buf, dv, at);
      return at;
    },
    read: (r) => {
      const n = r.dv.getUint32(r.need(4));
      // Every element takes at least one byte, so a count beyond what is left is malformed
      // (and must not make us allocate a huge array).
      if (n > r.end - r.off) throw new CodecError('array count exceeds record', { count: n });
      const out = new Array<T>(n);
      for (let i = 0; i < n; i++) out[i] = c.read(r);
      return out;
    },
  };
}

type Shape = Record<string, Codec<any>>;
type StructOf<S extends Shape> = { [K in keyof S]: Infer<S[K]> };

/** Fields in declaration order, no names on the wire. */
export function struct<S extends Shape>(shape: S): Codec<StructOf<S>> {
  const keys = Object.keys(shape);
  const codecs = keys.map((k) => shape[k]);
  const n = keys.length;
  return {
    size: (v) => {
      let total = 0;
      for (let i = 0; i < n; i++) total += codecs[i].size((v as any)[keys[i]]);
      return total;
    },
    write: (v, buf, dv, off) => {
      let at = off;
      for (let i = 0; i < n; i++) at = codecs[i].write((v as any)[keys[i]], buf, dv, at);
      return at;
    },
    read: (r) => {
      const out: Record<string, unknown> = {};
      for (let i = 0; i < n; i++) out[keys[i]] = codecs[i].read(r);
      return out as StructOf<S>;
    },
  };
}

type Variants = Record<string, Codec<object>>;
/** The discriminated union a `union()` codec carries: each variant plus `type`. */
export type UnionOf<V extends Variants> = {
  [K in keyof V & string]: { type: K } & Infer<V[K]>;
}[keyof V & string];

/**
 * A discriminated union keyed by `type`. The tag on the wire is the variant's
 * position (u8), so variants may be appended but never reordered.
 */
export function union<V extends Variants>(variants: V): Codec<UnionOf<V>> & { readonly tags: string[] } {
  const tags = Object.keys(variants);
  if (tags.length > 255) throw new RangeError('a union holds at most 255 variants');
  const codecs = tags.map((t) => variants[t]);
  const tagOf = new Map(tags.map((t, i) => [t, i]));
  const index = (v: { type: string }): number => {
    const i = tagOf.get(v.type);
    if (i === undefined) throw new CodecError(`unknown message type '${v.type}'`);
    return i;
  };
  return {
    tags,
    size: (v) => 1 + codecs[index(v)].size(v),
    write: (v, buf, dv, off) => {
      const i = index(v);
      buf[off] = i;
      return codecs[i].write(v, buf, dv, off + 1);
    },
    read: (r) => {
      const i = r.buf[r.need(1)];
      const c = codecs[i];
      if (c === undefined) throw new CodecError('unknown union tag', { tag: i });
      const v = c.read(r) as Record<string, unknown>;
      v.type = tags[i];
      return v as UnionOf<V>;
    },
  };
}

/** A codec for "no payload" (e.g. actors whose asks reply with nothing). */
export const empty: Codec<void> = {
  size: () => 0,
  write: (_v, _buf, _dv, off) => off,
  read: () => undefined,
};

/** Encodes `v` into a fresh buffer (tests, in-thread copies, control paths). */
export function encodeToBuffer<T>(c: Codec<T>, v: T): Uint8Array {
  const buf = new Uint8Array(c.size(v));
  c.write(v, buf, new DataView(buf.buffer), 0);
  return buf;
}

/** Decodes one value that must fill `buf` exactly. */
export function decodeBuffer<T>(c: Codec<T>, buf: Uint8Array): T {
  const r = new Reader(buf);
  const v = c.read(r);
  if (r.off !== r.end) throw new CodecError('trailing bytes after value', { trailing: r.end - r.off });
  return v;
}
