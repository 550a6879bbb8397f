/**
 * The server side of DHCP (RFC 2131/2132), enough for an unmodified guest to
 * configure itself: DISCOVER → OFFER, REQUEST → ACK (or NAK for an address
 * that is not its), INFORM → ACK. One guest per link, one address.
 */
import { readIp, writeIp } from './arp.js';

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;
const MAGIC = 0x63825363;
const FIXED = 236;

export const DHCPDISCOVER = 1;
export const DHCPOFFER = 2;
export const DHCPREQUEST = 3;
export const DHCPACK = 5;
export const DHCPNAK = 6;
export const DHCPRELEASE = 7;
export const DHCPINFORM = 8;

export interface DhcpRequest {
  xid: number;
  flags: number;
  ciaddr: number;
  chaddr: Uint8Array;
  messageType: number;
  requestedIp: number;
  serverId: number;
}

/** Parses a client message; undefined when it is not a well-formed BOOTREQUEST. */
export function parseDhcp(buf: Uint8Array, off: number, len: number): DhcpRequest | undefined {
  if (len < FIXED + 4 || buf[off] !== 1 || buf[off + 1] !== 1 || buf[off + 2] !== 6) return undefined;
  if (readIp(buf, off + FIXED) !== MAGIC) return undefined;
  const req: DhcpRequest = {
    xid: readIp(buf, off + 4),
    flags: (buf[off + 10] << 8) | buf[off + 11],
    ciaddr: readIp(buf, off + 12),
    chaddr: buf.slice(off + 28, off + 34),
    messageType: 0,
    requestedIp: 0,
    serverId: 0,
  };
  let i = off + FIXED + 4;
  const end = off + len;
  while (i < end) {
    const code = buf[i];
    if (code === 255) break;
    if (code === 0) {
      i++;
      continue;
    }
    if (i + 1 >= end) return undefined;
    const olen = buf[i + 1];
    if (i + 2 + olen > end) return undefined;
    const v = i + 2;
    if (code === 53 && olen >= 1) req.messageType = buf[v];
    else if (code === 50 && olen === 4) req.requestedIp = readIp(buf, v);
    else if (code === 54 && olen === 4) req.serverId = readIp(buf, v);
    i = v + olen;
  }
  return req.messageType === 0 ? undefined : req;
}

export interface DhcpLease {
  serverIp: number;
  clientIp: number;
  netmask: number;
  router: number;
  dns: number[];
  leaseSeconds: number;
  mtu: number;
  hostname?: string;
}

/** Builds the reply payload (the UDP body) of `type` for `req`. */
export function buildDhcpReply(req: DhcpRequest, type: number, lease: DhcpLease): Uint8Array {
  const opts: number[] = [53, 1, type, 54, 4, ...ipBytes(lease.serverIp)];
  if (type !== DHCPNAK) {
    opts.push(1, 4, ...ipBytes(lease.netmask));
    opts.push(3, 4, ...ipBytes(lease.router));
    if (lease.dns.length > 0) opts.push(6, 4 * lease.dns.length, ...lease.dns.flatMap(ipBytes));
    if (type !== DHCPACK || req.messageType !== DHCPINFORM) {
      opts.push(51, 4, ...u32Bytes(lease.leaseSeconds));
    }
    opts.push(26, 2, lease.mtu >>> 8, lease.mtu & 0xff);
    if (lease.hostname) {
      const name = new TextEncoder().encode(lease.hostname.slice(0, 63));
      opts.push(12, name.length, ...name);
    }
  }
  opts.push(255);
  const out = new Uint8Array(Math.max(300, FIXED + 4 + opts.length));
  out[0] = 2; // BOOTREPLY
  out[1] = 1;
  out[2] = 6;
  writeIp(out, 4, req.xid);
  out[10] = req.flags >>> 8;
  out[11] = req.flags & 0xff;
  if (req.messageType === DHCPINFORM) writeIp(out, 12, req.ciaddr);
  else if (type !== DHCPNAK) writeIp(out, 16, lease.clientIp);
  writeIp(out, 20, lease.serverIp);
  out.set(req.chaddr, 28);
  writeIp(out, FIXED, MAGIC);
  out.set(opts, FIXED + 4);
  return out;
}

const ipBytes = (ip: number): number[] => [ip >>> 24, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff];
const u32Bytes = ipBytes;
