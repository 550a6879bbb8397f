/**
 * Messages between the guest-facing side (in a VM actor, or a standalone link
 * actor) and the flow-table shards.
 *
 * Hot path: `packet` (guest → shard, one IPv4 packet) and `frame` (shard →
 * guest, one Ethernet frame). A frame toward the guest is built directly in
 * the ring's shared memory by a `FrameBuilder` — headers, payload copied from
 * the host socket's buffer, checksum — so the host→guest path copies the data
 * once on its way into the ring. Everything else is control plane; its
 * structured parts travel as JSON strings.
 */
import {
  bool,
  bytes,
  type Codec,
  type Reader,
  str,
  struct,
  u8,
  u16,
  u32,
  union,
} from '../../protocol/codec.js';

/** Writes one frame of `length` bytes at `buf[off]` when asked. Reused per frame, never retained. */
export interface FrameBuilder {
  length: number;
  write(buf: Uint8Array, off: number): void;
}

/**
 * A frame field: encodes a ready `Uint8Array` or a `FrameBuilder`, decodes as a
 * zero-copy `Uint8Array` view. Receivers may treat the decoded value as
 * `Uint8Array` (see `asBytes`).
 */
export const frameField: Codec<Uint8Array | FrameBuilder> = {
  size: (v) => 4 + (v instanceof Uint8Array ? v.byteLength : v.length),
  write: (v, buf, dv, off) => {
    if (v instanceof Uint8Array) return bytes.write(v, buf, dv, off);
    dv.setUint32(off, v.length);
    v.write(buf, off + 4);
    return off + 4 + v.length;
  },
  read: (r: Reader) => bytes.read(r),
};

export const asBytes = (f: Uint8Array | FrameBuilder): Uint8Array => f as Uint8Array;

/** The variants every actor hosting a guest-facing side accepts (first, so tags agree). */
export const guestLinkVariants = {
  frame: struct({ sandbox: u32, frame: frameField }),
};
export const GuestLinkMessages = union(guestLinkVariants);

/** Where a shard sends a sandbox's frames: the actor hosting its guest side. */
const LinkAddress = struct({ id: u32, thread: u32, name: str });

export const ShardMessages = union({
  /** Registers a sandbox with this shard (config is NetConfig as JSON). */
  attach: struct({ sandbox: u32, link: LinkAddress, config: str }),
  /** Closes every flow of the sandbox and forgets it; asks reply when done. */
  detach: struct({ sandbox: u32 }),
  /**
   * Gives an attached sandbox a new config (policy, timeouts) on the same
   * link: its flows and forwards are closed first, as on detach (a pooled
   * sandbox being claimed has none). Replies '{}'.
   */
  rebind: struct({ sandbox: u32, config: str }),
  /**
   * The sandbox's guest is paused (`frozen`) or runs again: while frozen its
   * flows' protocol timers (idle, RTO/persist) do not expire and nothing is
   * retransmitted into a guest that cannot answer; on thaw the paused time is
   * not counted as idle. Replies '{}'.
   */
  freeze: struct({ sandbox: u32, frozen: bool }),
  /** One IPv4 packet from the guest (no Ethernet header). */
  packet: struct({ sandbox: u32, packet: bytes }),
  /** Adds an inbound port forward; replies JSON {proto, hostIp, hostPort, guestPort}. */
  forward: struct({ sandbox: u32, proto: u8, hostIp: str, hostPort: u16, guestPort: u16 }),
  /** Removes an inbound port forward (by its host port). */
  unforward: struct({ sandbox: u32, proto: u8, hostPort: u16 }),
  /** Lists flows (sandbox 0 = all), replies JSON FlowInfo[]. */
  flows: struct({ sandbox: u32 }),
  /** Replies JSON ShardStats. */
  stats: struct({}),
});

export type ShardMessage = typeof ShardMessages extends Codec<infer T> ? T : never;

/** Replies of a shard's asks are JSON text (control plane). */
export const ShardReplies: Codec<string> = str;
