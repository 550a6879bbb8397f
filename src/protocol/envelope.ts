/**
 * The envelope every actor message carries inside a ring record.
 *
 *     0      1      2             4             8            12           16
 *     +------+------+-------------+-------------+-------------+------------+----
 *     | kind | 0    | 0           | target id   | sender id   | corr id    | body…
 *     +------+------+-------------+-------------+-------------+------------+----
 *
 * kind: TELL (no reply), ASK (the target answers with REPLY or REPLY_ERROR
 * carrying the same corr id), REPLY (body encoded with the target kind's reply
 * codec), REPLY_ERROR (body = code, message). Ids are u32, big-endian.
 * The ring a record arrives on tells the receiver which thread sent it, so the
 * envelope need not.
 */
import { type Codec, CodecError, Reader, str, struct } from './codec.js';

export const TELL = 1;
export const ASK = 2;
export const REPLY = 3;
export const REPLY_ERROR = 4;
export type EnvelopeKind = typeof TELL | typeof ASK | typeof REPLY | typeof REPLY_ERROR;

export const ENVELOPE_BYTES = 16;

/** Writes an envelope header at `off`; the body follows at `off + ENVELOPE_BYTES`. */
export function writeEnvelope(
  buf: Uint8Array,
  dv: DataView,
  off: number,
  kind: EnvelopeKind,
  target: number,
  sender: number,
  corr: number,
): void {
  buf[off] = kind;
  buf[off + 1] = 0;
  dv.setUint16(off + 2, 0);
  dv.setUint32(off + 4, target);
  dv.setUint32(off + 8, sender);
  dv.setUint32(off + 12, corr);
}

/** Fields of a received envelope; reused across records to avoid allocation. */
export interface EnvelopeView {
  kind: number;
  target: number;
  sender: number;
  corr: number;
  bodyOff: number;
  bodyEnd: number;
}

export function readEnvelope(dv: DataView, off: number, len: number, out: EnvelopeView): EnvelopeView {
  if (len < ENVELOPE_BYTES) throw new CodecError('record shorter than an envelope', { len });
  out.kind = dv.getUint8(off);
  out.target = dv.getUint32(off + 4);
  out.sender = dv.getUint32(off + 8);
  out.corr = dv.getUint32(off + 12);
  out.bodyOff = off + ENVELOPE_BYTES;
  out.bodyEnd = off + len;
  return out;
}

/** Body of REPLY_ERROR: enough to rebuild a typed error on the asking side (details as JSON, may be ''). */
export const ReplyErrorBody: Codec<{ code: string; message: string; details: string }> = struct({
  code: str,
  message: str,
  details: str,
});

export { Reader };
