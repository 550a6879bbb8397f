/**
 * Guest-agent protocol, layer 1: frames.
 *
 * Every frame is a 12-byte big-endian header and a payload:
 *
 *     u32 length | u32 stream | u8 type | u8 flags | u8 channel | u8 reserved
 *
 * `length` counts payload bytes only and is capped at {@link MAX_FRAME_PAYLOAD}.
 * docs/protocol.md is the full contract; guest/agent/proto.h is the agent's copy.
 */
import { ActorvmError } from '../errors.js';

export const AGENT_PROTOCOL_VERSION = 1;
export const FRAME_HEADER_BYTES = 12;
/** Largest payload of any frame (16 MiB); a larger length is a framing error. */
export const MAX_FRAME_PAYLOAD = 16 * 1024 * 1024;
/** Largest DATA payload (64 KiB). */
export const MAX_CHUNK = 64 * 1024;
/** Initial per-channel credit in each direction, unless HELLO says otherwise. */
export const DEFAULT_WINDOW = 256 * 1024;

export const FrameType = {
  HELLO: 0x01,
  ERROR: 0x02,
  RESET: 0x03,
  RUN: 0x10,
  PUT_FILE: 0x11,
  GET_FILE: 0x12,
  STAT: 0x13,
  LIST: 0x14,
  MKDIR: 0x15,
  PING: 0x16,
  SHUTDOWN: 0x17,
  NET_CONFIG: 0x18,
  REMOVE: 0x19,
  RENAME: 0x1a,
  WATCH: 0x1b,
  HANDOFF: 0x1c,
  DATA: 0x20,
  WINDOW: 0x21,
  SIGNAL: 0x22,
  CANCEL: 0x23,
  RESIZE: 0x24,
  STARTED: 0x30,
  EXIT: 0x31,
  FILE_INFO: 0x32,
  RESULT: 0x33,
} as const;
export type FrameTypeCode = (typeof FrameType)[keyof typeof FrameType];

/** Length of the nonce a RESET carries. */
export const RESET_NONCE_BYTES = 16;
/**
 * What the agent writes, before the echoed nonce and a fresh HELLO, in answer to
 * RESET. Not a frame: a host that cannot know where stale bytes end scans for it.
 */
export const RESET_MAGIC = Buffer.from([0xff, 0x00, 0x41, 0x56, 0x4d, 0x52, 0x53, 0x54]); // "\xff\0AVMRST"

/** DATA flag: last frame of its channel. */
export const FLAG_END = 0x01;

/** Channels of a stream: 0 carries host→agent data (stdin, file upload), 1 stdout or file download, 2 stderr. */
export const Channel = { IN: 0, OUT: 1, ERR: 2 } as const;
export type ChannelId = (typeof Channel)[keyof typeof Channel];

export interface Frame {
  type: number;
  stream: number;
  flags: number;
  channel: number;
  payload: Buffer;
}

/** A byte stream that cannot be split into frames (oversized or truncated frame). */
export class FramingError extends ActorvmError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('ERR_AGENT_PROTOCOL', message, details);
  }
}

export function encodeHeader(type: number, stream: number, length: number, flags = 0, channel = 0): Buffer {
  if (length > MAX_FRAME_PAYLOAD) {
    throw new FramingError(`frame payload of ${length} bytes exceeds ${MAX_FRAME_PAYLOAD}`, { length });
  }
  const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  h.writeUInt32BE(length, 0);
  h.writeUInt32BE(stream >>> 0, 4);
  h.writeUInt8(type, 8);
  h.writeUInt8(flags, 9);
  h.writeUInt8(channel, 10);
  h.writeUInt8(0, 11);
  return h;
}

/** One frame as one buffer (header and payload copied together). */
export function encodeFrame(
  type: number,
  stream: number,
  payload: Uint8Array = Buffer.alloc(0),
  flags = 0,
  channel = 0,
): Buffer {
  return Buffer.concat([encodeHeader(type, stream, payload.length, flags, channel), payload]);
}

/**
 * Incremental frame splitter. Feed it whatever the transport delivers; it returns
 * the complete frames and keeps the rest. Chunks are kept as a list and only
 * joined for a frame that straddles them, so large DATA frames are not copied
 * more than once.
 */
export class FrameDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;
  readonly #maxPayload: number;

  constructor(maxPayload = MAX_FRAME_PAYLOAD) {
    this.#maxPayload = maxPayload;
  }

  /** Bytes received that do not yet form a complete frame. */
  get pendingBytes(): number {
    return this.#buffered;
  }

  /** Adds bytes; returns every frame they complete. Throws {@link FramingError} on an oversized frame. */
  push(chunk: Buffer): Frame[] {
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const frames: Frame[] = [];
    while (this.#buffered >= FRAME_HEADER_BYTES) {
      const head = this.#peek(FRAME_HEADER_BYTES);
      const length = head.readUInt32BE(0);
      if (length > this.#maxPayload) {
        throw new FramingError(`frame length ${length} exceeds the ${this.#maxPayload}-byte cap`, { length });
      }
      if (this.#buffered < FRAME_HEADER_BYTES + length) break;
      this.#take(FRAME_HEADER_BYTES);
      const payload = this.#take(length);
      frames.push({
        type: head.readUInt8(8),
        stream: head.readUInt32BE(4),
        flags: head.readUInt8(9),
        channel: head.readUInt8(10),
        payload,
      });
    }
    return frames;
  }

  /** Call at end of input: throws {@link FramingError} when a frame was cut short. */
  end(): void {
    if (this.#buffered > 0) {
      throw new FramingError(`stream ended inside a frame (${this.#buffered} bytes pending)`, {
        pending: this.#buffered,
      });
    }
  }

  #peek(n: number): Buffer {
    const first = this.#chunks[0];
    if (first.length >= n) return first.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    for (const c of this.#chunks) {
      if (off >= n) break;
      off += c.copy(out, off, 0, Math.min(c.length, n - off));
    }
    return out;
  }

  #take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    this.#buffered -= n;
    const first = this.#chunks[0];
    if (first.length > n) {
      this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.#chunks.shift();
      return first;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.#chunks[0];
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    return out;
  }
}
