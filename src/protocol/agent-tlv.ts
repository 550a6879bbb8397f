/**
 * Guest-agent protocol, layer 2: the TLV encoding of control payloads.
 *
 * A payload is a sequence of fields `u8 tag | u32 length | value` (big-endian).
 * Tags are scoped per message, may repeat (argv, env, capabilities), and
 * readers skip tags they do not know, which is how the protocol grows without
 * a version bump. Integers are fixed-width big-endian; strings are UTF-8.
 */
import { FramingError } from './agent-frame.js';

export interface TlvField {
  tag: number;
  value: Buffer;
}

/** Builds a TLV payload. */
export class TlvWriter {
  #parts: Buffer[] = [];

  bytes(tag: number, value: Uint8Array): this {
    const head = Buffer.allocUnsafe(5);
    head.writeUInt8(tag, 0);
    head.writeUInt32BE(value.length, 1);
    this.#parts.push(head, Buffer.from(value.buffer, value.byteOffset, value.byteLength));
    return this;
  }

  str(tag: number, value: string): this {
    return this.bytes(tag, Buffer.from(value, 'utf8'));
  }

  u8(tag: number, value: number): this {
    return this.bytes(tag, Buffer.of(value & 0xff));
  }

  u32(tag: number, value: number): this {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(value >>> 0, 0);
    return this.bytes(tag, b);
  }

  u64(tag: number, value: number | bigint): this {
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64BE(BigInt(value), 0);
    return this.bytes(tag, b);
  }

  finish(): Buffer {
    return Buffer.concat(this.#parts);
  }
}

/** Splits a TLV payload into fields; throws {@link FramingError} when a length runs past the end. */
export function readTlv(payload: Buffer): TlvField[] {
  const fields: TlvField[] = [];
  let off = 0;
  while (off < payload.length) {
    if (payload.length - off < 5) throw new FramingError('truncated TLV header');
    const tag = payload.readUInt8(off);
    const len = payload.readUInt32BE(off + 1);
    if (payload.length - off - 5 < len) throw new FramingError('TLV value runs past the payload');
    fields.push({ tag, value: payload.subarray(off + 5, off + 5 + len) });
    off += 5 + len;
  }
  return fields;
}

export const tlvU32 = (v: Buffer): number => (v.length === 4 ? v.readUInt32BE(0) : Number.NaN);
export const tlvU8 = (v: Buffer): number => (v.length === 1 ? v.readUInt8(0) : Number.NaN);
/** u64 as a number (exact below 2^53: sizes and nanosecond timestamps up to year 2255 in ms). */
export const tlvU64 = (v: Buffer): number => (v.length === 8 ? Number(v.readBigUInt64BE(0)) : Number.NaN);
export const tlvStr = (v: Buffer): string => v.toString('utf8');
