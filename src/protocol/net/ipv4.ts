/**
 * IPv4 (RFC 791). Parsing fills a caller-owned view (no allocation per
 * packet) and returns a drop reason instead of throwing: a malformed packet is
 * a counter, never an exception.
 *
 * Fragments are dropped and counted (reason `fragment`): guests here use path
 * MTU discovery (DF set) and the link MTU covers the largest frame, so
 * reassembly would buy nothing but a memory-exhaustion surface.
 */
import { readIp, writeIp } from './arp.js';
import { finish, sum16 } from './checksum.js';

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPV4_HEADER = 20;

export interface Ipv4View {
  headerLen: number;
  totalLen: number;
  id: number;
  ttl: number;
  proto: number;
  src: number;
  dst: number;
  /** Offset of the transport header in the buffer. */
  payloadOff: number;
  payloadLen: number;
}

export type Ipv4Drop = 'short' | 'version' | 'header_length' | 'total_length' | 'checksum' | 'fragment';

export function newIpv4View(): Ipv4View {
  return { headerLen: 0, totalLen: 0, id: 0, ttl: 0, proto: 0, src: 0, dst: 0, payloadOff: 0, payloadLen: 0 };
}

/** Parses and validates the IPv4 packet at `off` (`len` bytes available). Returns undefined or why to drop it. */
export function parseIpv4(buf: Uint8Array, off: number, len: number, out: Ipv4View): Ipv4Drop | undefined {
  if (len < IPV4_HEADER) return 'short';
  const vihl = buf[off];
  if (vihl >>> 4 !== 4) return 'version';
  const headerLen = (vihl & 0x0f) * 4;
  if (headerLen < IPV4_HEADER || headerLen > len) return 'header_length';
  const totalLen = (buf[off + 2] << 8) | buf[off + 3];
  // Ethernet may pad short packets: the frame can be longer than the packet, never shorter.
  if (totalLen < headerLen || totalLen > len) return 'total_length';
  if (finish(sum16(buf, off, headerLen)) !== 0) return 'checksum';
  const fragField = (buf[off + 6] << 8) | buf[off + 7];
  if ((fragField & 0x2000) !== 0 || (fragField & 0x1fff) !== 0) return 'fragment';
  out.headerLen = headerLen;
  out.totalLen = totalLen;
  out.id = (buf[off + 4] << 8) | buf[off + 5];
  out.ttl = buf[off + 8];
  out.proto = buf[off + 9];
  out.src = readIp(buf, off + 12);
  out.dst = readIp(buf, off + 16);
  out.payloadOff = off + headerLen;
  out.payloadLen = totalLen - headerLen;
  return undefined;
}

let nextId = 1;

/**
 * Writes a 20-byte IPv4 header (DF set, TTL 64) with its checksum; returns the
 * offset after it. `payloadLen` is the transport header plus data.
 */
export function writeIpv4Header(
  buf: Uint8Array,
  off: number,
  proto: number,
  src: number,
  dst: number,
  payloadLen: number,
): number {
  const total = IPV4_HEADER + payloadLen;
  buf[off] = 0x45;
  buf[off + 1] = 0;
  buf[off + 2] = total >>> 8;
  buf[off + 3] = total & 0xff;
  const id = nextId;
  nextId = (nextId + 1) & 0xffff;
  buf[off + 4] = id >>> 8;
  buf[off + 5] = id & 0xff;
  buf[off + 6] = 0x40; // DF
  buf[off + 7] = 0;
  buf[off + 8] = 64;
  buf[off + 9] = proto;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  writeIp(buf, off + 12, src);
  writeIp(buf, off + 16, dst);
  const ck = finish(sum16(buf, off, IPV4_HEADER));
  buf[off + 10] = ck >>> 8;
  buf[off + 11] = ck & 0xff;
  return off + IPV4_HEADER;
}
