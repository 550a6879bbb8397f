/** ARP for IPv4 over Ethernet (RFC 826): just enough to answer who-has. */
import { ETH_HEADER, ETHERTYPE_ARP, writeEthernet } from './ethernet.js';

export const ARP_LEN = 28;
export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

export interface ArpView {
  op: number;
  senderMac: Uint8Array;
  senderIp: number;
  targetIp: number;
}

/** Parses an ARP packet at `off` (after Ethernet). Returns false when it is not IPv4-over-Ethernet ARP. */
export function parseArp(buf: Uint8Array, off: number, len: number, out: ArpView): boolean {
  if (len < ARP_LEN) return false;
  const htype = (buf[off] << 8) | buf[off + 1];
  const ptype = (buf[off + 2] << 8) | buf[off + 3];
  if (htype !== 1 || ptype !== 0x0800 || buf[off + 4] !== 6 || buf[off + 5] !== 4) return false;
  out.op = (buf[off + 6] << 8) | buf[off + 7];
  out.senderMac = buf.subarray(off + 8, off + 14);
  out.senderIp = readIp(buf, off + 14);
  out.targetIp = readIp(buf, off + 24);
  return true;
}

/** Builds a complete Ethernet frame answering `who-has targetIp` with `ourMac`. */
export function buildArpReply(
  ourMac: Uint8Array,
  ourIp: number,
  toMac: Uint8Array,
  toIp: number,
): Uint8Array {
  const f = new Uint8Array(ETH_HEADER + ARP_LEN);
  let o = writeEthernet(f, 0, toMac, ourMac, ETHERTYPE_ARP);
  f.set([0, 1, 0x08, 0x00, 6, 4, 0, ARP_REPLY], o);
  o += 8;
  f.set(ourMac, o);
  writeIp(f, o + 6, ourIp);
  f.set(toMac, o + 10);
  writeIp(f, o + 16, toIp);
  return f;
}

export const readIp = (buf: Uint8Array, off: number): number =>
  ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;

export function writeIp(buf: Uint8Array, off: number, ip: number): void {
  buf[off] = ip >>> 24;
  buf[off + 1] = (ip >>> 16) & 0xff;
  buf[off + 2] = (ip >>> 8) & 0xff;
  buf[off + 3] = ip & 0xff;
}
