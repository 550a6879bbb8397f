/**
 * TCP segments (RFC 9293): parse into a reusable view, build with checksum.
 * Options understood: MSS and window scale (RFC 7323). Others (SACK-permitted,
 * timestamps) are skipped, which makes the guest run without them: our SYN-ACK
 * never offers them.
 */
import { readIp } from './arp.js';
import { finish, pseudoHeaderSum, sum16 } from './checksum.js';
import { ETH_HEADER, ETHERTYPE_IPV4, writeEthernet } from './ethernet.js';
import { IPPROTO_TCP, IPV4_HEADER, writeIpv4Header } from './ipv4.js';

export const FIN = 0x01;
export const SYN = 0x02;
export const RST = 0x04;
export const PSH = 0x08;
export const ACK = 0x10;
export const URG = 0x20;

export const TCP_HEADER = 20;

export interface TcpView {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  /** Raw window field (not scaled). */
  window: number;
  /** MSS option, or 0 when absent. */
  mss: number;
  /** Window-scale shift, or -1 when the option is absent. */
  wscale: number;
  payloadOff: number;
  payloadLen: number;
}

export type TcpDrop = 'tcp_short' | 'tcp_header_length' | 'tcp_checksum';

export function newTcpView(): TcpView {
  return {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    mss: 0,
    wscale: -1,
    payloadOff: 0,
    payloadLen: 0,
  };
}

/**
 * Parses the TCP segment at `off` (`len` bytes, from the IP header's length).
 * When `verify` is set the checksum is checked against the pseudo-header.
 */
export function parseTcp(
  buf: Uint8Array,
  off: number,
  len: number,
  src: number,
  dst: number,
  verify: boolean,
  out: TcpView,
): TcpDrop | undefined {
  if (len < TCP_HEADER) return 'tcp_short';
  const dataOff = (buf[off + 12] >>> 4) * 4;
  if (dataOff < TCP_HEADER || dataOff > len) return 'tcp_header_length';
  if (verify && finish(sum16(buf, off, len, pseudoHeaderSum(src, dst, IPPROTO_TCP, len))) !== 0) {
    return 'tcp_checksum';
  }
  out.srcPort = (buf[off] << 8) | buf[off + 1];
  out.dstPort = (buf[off + 2] << 8) | buf[off + 3];
  out.seq = readIp(buf, off + 4);
  out.ack = readIp(buf, off + 8);
  out.flags = buf[off + 13];
  out.window = (buf[off + 14] << 8) | buf[off + 15];
  out.mss = 0;
  out.wscale = -1;
  if (dataOff > TCP_HEADER) parseOptions(buf, off + TCP_HEADER, off + dataOff, out);
  out.payloadOff = off + dataOff;
  out.payloadLen = len - dataOff;
  return undefined;
}

function parseOptions(buf: Uint8Array, start: number, end: number, out: TcpView): void {
  let i = start;
  while (i < end) {
    const kind = buf[i];
    if (kind === 0) return; // end of options
    if (kind === 1) {
      i++;
      continue;
    }
    if (i + 1 >= end) return;
    const olen = buf[i + 1];
    if (olen < 2 || i + olen > end) return;
    if (kind === 2 && olen === 4) out.mss = (buf[i + 2] << 8) | buf[i + 3];
    else if (kind === 3 && olen === 3) out.wscale = Math.min(buf[i + 2], 14);
    i += olen;
  }
}

/** Fields of a segment to build. */
export interface TcpSegment {
  srcIp: number;
  dstIp: number;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  /** Include MSS option (SYN segments). 0 = none. */
  mss?: number;
  /** Include window-scale option (SYN segments). -1/undefined = none. */
  wscale?: number;
}

/** A zeroed segment to fill in and reuse. */
export function newTcpSegment(): TcpSegment {
  return {
    srcIp: 0,
    dstIp: 0,
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    mss: 0,
    wscale: -1,
  };
}

/** Bytes an Ethernet frame for this segment needs. */
export function tcpFrameLength(seg: TcpSegment, payloadLen: number): number {
  return ETH_HEADER + IPV4_HEADER + TCP_HEADER + optionsLength(seg) + payloadLen;
}

function optionsLength(seg: TcpSegment): number {
  let n = 0;
  if (seg.mss) n += 4;
  if (seg.wscale !== undefined && seg.wscale >= 0) n += 4; // NOP + 3-byte option
  return n;
}

/**
 * Writes Ethernet, IPv4 and TCP headers for a segment with `plen` payload
 * bytes at `off`; returns the offset where the payload goes. The caller puts
 * the payload there, then calls `finishTcpChecksum`.
 */
export function writeTcpHeaders(
  buf: Uint8Array,
  off: number,
  dstMac: Uint8Array,
  srcMac: Uint8Array,
  seg: TcpSegment,
  plen: number,
): number {
  const optLen = optionsLength(seg);
  let o = writeEthernet(buf, off, dstMac, srcMac, ETHERTYPE_IPV4);
  o = writeIpv4Header(buf, o, IPPROTO_TCP, seg.srcIp, seg.dstIp, TCP_HEADER + optLen + plen);
  const t = o;
  buf[t] = seg.srcPort >>> 8;
  buf[t + 1] = seg.srcPort & 0xff;
  buf[t + 2] = seg.dstPort >>> 8;
  buf[t + 3] = seg.dstPort & 0xff;
  write32(buf, t + 4, seg.seq);
  write32(buf, t + 8, seg.ack);
  buf[t + 12] = ((TCP_HEADER + optLen) / 4) << 4;
  buf[t + 13] = seg.flags;
  buf[t + 14] = seg.window >>> 8;
  buf[t + 15] = seg.window & 0xff;
  buf[t + 16] = 0;
  buf[t + 17] = 0;
  buf[t + 18] = 0;
  buf[t + 19] = 0;
  let p = t + TCP_HEADER;
  if (seg.mss) {
    buf[p] = 2;
    buf[p + 1] = 4;
    buf[p + 2] = seg.mss >>> 8;
    buf[p + 3] = seg.mss & 0xff;
    p += 4;
  }
  if (seg.wscale !== undefined && seg.wscale >= 0) {
    buf[p] = 1;
    buf[p + 1] = 3;
    buf[p + 2] = 3;
    buf[p + 3] = seg.wscale;
    p += 4;
  }
  return p;
}

/**
 * Computes the TCP checksum of the segment whose Ethernet frame starts at
 * `frameOff` (headers from `writeTcpHeaders`, payload in place). This is the
 * one full pass over the data the host→guest path makes.
 */
export function finishTcpChecksum(buf: Uint8Array, frameOff: number, seg: TcpSegment, plen: number): void {
  // Headers are whole 32-bit words, so the payload starts at an even position.
  const payload = frameOff + ETH_HEADER + IPV4_HEADER + TCP_HEADER + optionsLength(seg);
  finishTcpChecksumWith(buf, frameOff, seg, plen, plen > 0 ? sum16(buf, payload, plen) : 0);
}

/**
 * Like `finishTcpChecksum`, with the payload's partial sum supplied by the
 * caller (computed from where the payload came from): only the header is
 * summed here.
 */
export function finishTcpChecksumWith(
  buf: Uint8Array,
  frameOff: number,
  seg: TcpSegment,
  plen: number,
  payloadSum: number,
): void {
  const t = frameOff + ETH_HEADER + IPV4_HEADER;
  const hlen = TCP_HEADER + optionsLength(seg);
  const tcpLen = hlen + plen;
  const ck = finish(
    sum16(buf, t, hlen, pseudoHeaderSum(seg.srcIp, seg.dstIp, IPPROTO_TCP, tcpLen) + payloadSum),
  );
  buf[t + 16] = ck >>> 8;
  buf[t + 17] = ck & 0xff;
}

/** A whole frame in one go (control segments and tests). Returns the frame length. */
export function writeTcpFrame(
  buf: Uint8Array,
  off: number,
  dstMac: Uint8Array,
  srcMac: Uint8Array,
  seg: TcpSegment,
  pbuf: Uint8Array | undefined,
  poff: number,
  plen: number,
): number {
  const p = writeTcpHeaders(buf, off, dstMac, srcMac, seg, plen);
  if (plen > 0 && pbuf) buf.set(pbuf.subarray(poff, poff + plen), p);
  finishTcpChecksum(buf, off, seg, plen);
  return p + plen - off;
}

function write32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}

/** Sequence-space arithmetic (mod 2^32). */
export const seqAdd = (a: number, b: number): number => (a + b) >>> 0;
export const seqDiff = (a: number, b: number): number => (a - b) | 0;
export const seqLt = (a: number, b: number): boolean => ((a - b) | 0) < 0;
export const seqLe = (a: number, b: number): boolean => ((a - b) | 0) <= 0;
