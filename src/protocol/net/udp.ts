/** UDP (RFC 768): parse into a view, build a whole frame with checksum. */
import { finish, pseudoHeaderSum, sum16 } from './checksum.js';
import { ETH_HEADER, ETHERTYPE_IPV4, writeEthernet } from './ethernet.js';
import { IPPROTO_UDP, IPV4_HEADER, writeIpv4Header } from './ipv4.js';

export const UDP_HEADER = 8;

export interface UdpView {
  srcPort: number;
  dstPort: number;
  payloadOff: number;
  payloadLen: number;
}

export type UdpDrop = 'udp_short' | 'udp_length' | 'udp_checksum';

export function newUdpView(): UdpView {
  return { srcPort: 0, dstPort: 0, payloadOff: 0, payloadLen: 0 };
}

export function parseUdp(
  buf: Uint8Array,
  off: number,
  len: number,
  src: number,
  dst: number,
  out: UdpView,
): UdpDrop | undefined {
  if (len < UDP_HEADER) return 'udp_short';
  const ulen = (buf[off + 4] << 8) | buf[off + 5];
  if (ulen < UDP_HEADER || ulen > len) return 'udp_length';
  const ck = (buf[off + 6] << 8) | buf[off + 7];
  // Zero means "no checksum" in IPv4; otherwise it must verify.
  if (ck !== 0 && finish(sum16(buf, off, ulen, pseudoHeaderSum(src, dst, IPPROTO_UDP, ulen))) !== 0) {
    return 'udp_checksum';
  }
  out.srcPort = (buf[off] << 8) | buf[off + 1];
  out.dstPort = (buf[off + 2] << 8) | buf[off + 3];
  out.payloadOff = off + UDP_HEADER;
  out.payloadLen = ulen - UDP_HEADER;
  return undefined;
}

export function udpFrameLength(payloadLen: number): number {
  return ETH_HEADER + IPV4_HEADER + UDP_HEADER + payloadLen;
}

/** Who a UDP frame is from and to, on both layers. */
export interface UdpEnds {
  dstMac: Uint8Array;
  srcMac: Uint8Array;
  srcIp: number;
  srcPort: number;
  dstIp: number;
  dstPort: number;
}

/** Writes an Ethernet+IPv4+UDP frame at `off`, copying `payload`. Returns the frame length. */
export function writeUdpFrame(buf: Uint8Array, off: number, e: UdpEnds, payload: Uint8Array): number {
  const ulen = UDP_HEADER + payload.byteLength;
  let o = writeEthernet(buf, off, e.dstMac, e.srcMac, ETHERTYPE_IPV4);
  o = writeIpv4Header(buf, o, IPPROTO_UDP, e.srcIp, e.dstIp, ulen);
  buf[o] = e.srcPort >>> 8;
  buf[o + 1] = e.srcPort & 0xff;
  buf[o + 2] = e.dstPort >>> 8;
  buf[o + 3] = e.dstPort & 0xff;
  buf[o + 4] = ulen >>> 8;
  buf[o + 5] = ulen & 0xff;
  buf[o + 6] = 0;
  buf[o + 7] = 0;
  buf.set(payload, o + UDP_HEADER);
  let ck = finish(sum16(buf, o, ulen, pseudoHeaderSum(e.srcIp, e.dstIp, IPPROTO_UDP, ulen)));
  if (ck === 0) ck = 0xffff; // zero means "no checksum"
  buf[o + 6] = ck >>> 8;
  buf[o + 7] = ck & 0xff;
  return o + ulen - off;
}

/** Convenience: a fresh frame buffer. */
export function buildUdpFrame(e: UdpEnds, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(udpFrameLength(payload.byteLength));
  writeUdpFrame(f, 0, e, payload);
  return f;
}
