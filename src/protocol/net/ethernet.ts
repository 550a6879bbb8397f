/** Ethernet II framing. */
export const ETH_HEADER = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_IPV6 = 0x86dd;
export const BROADCAST_MAC = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

export function etherType(buf: Uint8Array, off: number): number {
  return (buf[off + 12] << 8) | buf[off + 13];
}

/** True when the frame's destination is `mac` or broadcast/multicast. */
export function isForUs(buf: Uint8Array, off: number, mac: Uint8Array): boolean {
  if (buf[off] & 1) return true; // group bit: broadcast or multicast
  for (let i = 0; i < 6; i++) if (buf[off + i] !== mac[i]) return false;
  return true;
}

export function writeEthernet(
  buf: Uint8Array,
  off: number,
  dst: Uint8Array,
  src: Uint8Array,
  type: number,
): number {
  buf.set(dst, off);
  buf.set(src, off + 6);
  buf[off + 12] = type >>> 8;
  buf[off + 13] = type & 0xff;
  return off + ETH_HEADER;
}
