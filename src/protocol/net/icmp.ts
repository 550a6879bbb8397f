/** ICMP echo (RFC 792) and the few errors this stack sends. */
import { finish, sum16 } from './checksum.js';
import { ETH_HEADER, ETHERTYPE_IPV4, writeEthernet } from './ethernet.js';
import { IPPROTO_ICMP, IPV4_HEADER, writeIpv4Header } from './ipv4.js';

export const ICMP_ECHO_REPLY = 0;
export const ICMP_UNREACHABLE = 3;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_HEADER = 8;

export interface IcmpEchoView {
  type: number;
  code: number;
  ident: number;
  seq: number;
  dataOff: number;
  dataLen: number;
}

export type IcmpDrop = 'icmp_short' | 'icmp_checksum';

export function newIcmpView(): IcmpEchoView {
  return { type: 0, code: 0, ident: 0, seq: 0, dataOff: 0, dataLen: 0 };
}

export function parseIcmp(
  buf: Uint8Array,
  off: number,
  len: number,
  out: IcmpEchoView,
): IcmpDrop | undefined {
  if (len < ICMP_HEADER) return 'icmp_short';
  if (finish(sum16(buf, off, len)) !== 0) return 'icmp_checksum';
  out.type = buf[off];
  out.code = buf[off + 1];
  out.ident = (buf[off + 4] << 8) | buf[off + 5];
  out.seq = (buf[off + 6] << 8) | buf[off + 7];
  out.dataOff = off + ICMP_HEADER;
  out.dataLen = len - ICMP_HEADER;
  return undefined;
}

/** A whole Ethernet frame with an ICMP message: type/code, the 4-byte rest-of-header, then `body`. */
export function buildIcmpFrame(
  dstMac: Uint8Array,
  srcMac: Uint8Array,
  srcIp: number,
  dstIp: number,
  type: number,
  code: number,
  rest: number,
  body: Uint8Array,
): Uint8Array {
  const icmpLen = ICMP_HEADER + body.byteLength;
  const f = new Uint8Array(ETH_HEADER + IPV4_HEADER + icmpLen);
  let o = writeEthernet(f, 0, dstMac, srcMac, ETHERTYPE_IPV4);
  o = writeIpv4Header(f, o, IPPROTO_ICMP, srcIp, dstIp, icmpLen);
  f[o] = type;
  f[o + 1] = code;
  f[o + 4] = rest >>> 24;
  f[o + 5] = (rest >>> 16) & 0xff;
  f[o + 6] = (rest >>> 8) & 0xff;
  f[o + 7] = rest & 0xff;
  f.set(body, o + ICMP_HEADER);
  const ck = finish(sum16(f, o, icmpLen));
  f[o + 2] = ck >>> 8;
  f[o + 3] = ck & 0xff;
  return f;
}
