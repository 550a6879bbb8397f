/** IPv4 and MAC address helpers. IPv4 addresses are unsigned 32-bit numbers on the hot path. */

export function ipToString(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}

/** Parses dotted-quad IPv4; returns undefined when it is not one. */
export function parseIp(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s.trim());
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

/** "a.b.c.d[:port]" as numbers (port `defaultPort` when absent); undefined when malformed. */
export function parseIpPort(text: string, defaultPort: number): { ip: number; port: number } | undefined {
  const [host, portText, extra] = text.split(':');
  const ip = parseIp(host);
  const port = portText === undefined ? defaultPort : /^\d{1,5}$/.test(portText) ? Number(portText) : 0;
  if (ip === undefined || extra !== undefined || port < 1 || port > 65535) return undefined;
  return { ip, port };
}

export function mustParseIp(s: string): number {
  const ip = parseIp(s);
  if (ip === undefined) throw new TypeError(`not an IPv4 address: '${s}'`);
  return ip;
}

/** A CIDR block as (network, mask). */
export interface Cidr {
  net: number;
  mask: number;
  prefix: number;
}

export function parseCidr(s: string): Cidr | undefined {
  const [addr, len] = s.split('/');
  const ip = parseIp(addr);
  const prefix = len === undefined ? 32 : Number(len);
  if (ip === undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) return undefined;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { net: (ip & mask) >>> 0, mask, prefix };
}

export const inCidr = (ip: number, c: Cidr): boolean => (ip & c.mask) >>> 0 === c.net;

export function macToString(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':');
}

export function parseMac(s: string): Uint8Array {
  const parts = s.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new TypeError(`not a MAC address: '${s}'`);
  }
  return Uint8Array.from(parts.map((p) => Number.parseInt(p, 16)));
}
