/**
 * The network identity handoff: the one codec for what the host tells a
 * machine restored from a memory snapshot (a fork's child, a sandbox resumed
 * from disk) so it stops being the machine it was saved from, and for the
 * datagram by which it proves the new identity works.
 *
 *   HANDOFF payload (agent request 0x1c, TLV like every request): the
 *   identity as net_config's fields (MAC, address/prefix, gateway, DNS,
 *   hostname, MTU), a 16-byte nonce, a 32-byte RNG seed, the host's wall
 *   clock (Unix ns) and the gateway UDP port to acknowledge on.
 *
 *   ack datagram (guest → gateway:ackPort, UDP, from the new address and
 *   MAC): `AVMHOFF1` + the nonce. It travels the child's own data path, so
 *   its arrival — not the agent's RESULT — is what makes a child ready.
 *
 * The agent's side is guest/agent/handoff.c (decoder in proto.c); test/vm's
 * handoff tests run payloads through `actorvm-agent handoff-codec` and back
 * through this file, so the two cannot drift apart.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { encodeNetConfig, type NetConfig } from './agent-messages.js';
import { readTlv, TlvWriter, tlvStr, tlvU32 } from './agent-tlv.js';

const NetTag = { IFNAME: 1, MAC: 2, ADDR: 3, GATEWAY: 4, DNS: 5, HOSTNAME: 6, MTU: 7 } as const;
const HandoffTag = { NONCE: 16, SEED: 17, CLOCK_NS: 18, ACK_PORT: 19 } as const;
const HandoffResultTag = { APPLY_US: 1 } as const;

export const HANDOFF_NONCE_BYTES = 16;
export const HANDOFF_SEED_BYTES = 32;
/** The gateway port acks go to unless the host picks another. Datagrams to it never leave the host. */
export const HANDOFF_ACK_PORT = 65012;
const ACK_MAGIC = Buffer.from('AVMHOFF1', 'latin1');
export const HANDOFF_ACK_BYTES = ACK_MAGIC.length + HANDOFF_NONCE_BYTES;

/** The identity a restored machine takes on: net_config's fields, address and gateway required. */
export type HandoffIdentity = Required<Pick<NetConfig, 'mac' | 'address' | 'gateway' | 'hostname'>> &
  Pick<NetConfig, 'iface' | 'dns' | 'mtu'>;

export interface HandoffPayload {
  identity: HandoffIdentity;
  nonce: Uint8Array;
  seed: Uint8Array;
  /** The host's wall clock when sent, Unix nanoseconds. */
  clockNs: bigint;
  /** Gateway UDP port for the ack; 0 = none (the fallback resend asks for none). */
  ackPort: number;
}

/*
 * The identity's checks, as the agent makes them (guest/agent/proto.c
 * net_field), so that the host never sends what the agent would refuse: a
 * refused handoff is a child that never gets its identity.
 */
const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i;
/** valid_hostname: 1..64 letters, digits, '-' and '.', in any order. */
const HOSTNAME = /^[A-Za-z0-9.-]{1,64}$/;
/** avm_parse_cidr; the prefix is required here (the agent would take a bare address as /32). */
const CIDR = /^([0-9.]+)\/(0|[1-9][0-9]?)$/;
/** AVM_MAX_DNS. */
const MAX_DNS = 4;
/** IFNAMSIZ less its NUL. */
const MAX_IFNAME_BYTES = 15;

const bad = (field: string, value: unknown): TypeError =>
  new TypeError(`handoff: bad ${field} ${JSON.stringify(value)}`);

/** An IPv4 address as the agent's inet_pton (musl) takes it: dotted quad, octets 0..255, no leading zeros. */
const ipv4 = (s: unknown): boolean => typeof s === 'string' && isIPv4(s);

/** Throws a TypeError naming the field the agent would refuse. */
function checkIdentity(id: HandoffIdentity): void {
  if (id.iface !== undefined) {
    const n = typeof id.iface === 'string' ? Buffer.byteLength(id.iface) : 0;
    if (n === 0 || n > MAX_IFNAME_BYTES || /[\0/]/.test(id.iface)) throw bad('iface', id.iface);
  }
  if (typeof id.mac !== 'string' || !MAC.test(id.mac)) throw bad('mac', id.mac);
  const cidr = typeof id.address === 'string' ? CIDR.exec(id.address) : null;
  if (!cidr || !ipv4(cidr[1]) || Number(cidr[2]) > 32) throw bad('address', id.address);
  if (!ipv4(id.gateway)) throw bad('gateway', id.gateway);
  if (typeof id.hostname !== 'string' || !HOSTNAME.test(id.hostname)) throw bad('hostname', id.hostname);
  if (id.mtu !== undefined && (!Number.isInteger(id.mtu) || id.mtu < 68 || id.mtu > 65535))
    throw bad('mtu', id.mtu);
  if (id.dns !== undefined) {
    if (!Array.isArray(id.dns) || id.dns.length > MAX_DNS) throw bad('dns', id.dns);
    for (const d of id.dns) {
      // IPv4 or IPv6 (no zone: inet_pton has none), in the agent's 46-byte buffer.
      const ok = ipv4(d) || (typeof d === 'string' && d.length <= 45 && !d.includes('%') && isIPv6(d));
      if (!ok) throw bad('dns', d);
    }
  }
}

export function encodeHandoff(p: HandoffPayload): Buffer {
  checkIdentity(p.identity);
  if (p.nonce.length !== HANDOFF_NONCE_BYTES) throw new TypeError('handoff: the nonce must be 16 bytes');
  if (p.seed.length !== HANDOFF_SEED_BYTES) throw new TypeError('handoff: the seed must be 32 bytes');
  if (!Number.isInteger(p.ackPort) || p.ackPort < 0 || p.ackPort > 65535)
    throw new TypeError('handoff: bad ack port');
  const w = new TlvWriter()
    .bytes(HandoffTag.NONCE, p.nonce)
    .bytes(HandoffTag.SEED, p.seed)
    .u64(HandoffTag.CLOCK_NS, p.clockNs);
  if (p.ackPort) w.u32(HandoffTag.ACK_PORT, p.ackPort);
  return Buffer.concat([encodeNetConfig(p.identity), w.finish()]);
}

/** Decodes a payload (the agent's re-encoding, in tests). Throws TypeError on a malformed or incomplete one. */
export function decodeHandoff(buf: Buffer): HandoffPayload {
  const id: Partial<HandoffIdentity> = {};
  let nonce: Uint8Array | undefined;
  let seed: Uint8Array | undefined;
  let clockNs: bigint | undefined;
  let ackPort = 0;
  for (const { tag, value } of readTlv(buf)) {
    switch (tag) {
      case NetTag.IFNAME:
        id.iface = tlvStr(value);
        break;
      case NetTag.MAC:
        id.mac = tlvStr(value);
        break;
      case NetTag.ADDR:
        id.address = tlvStr(value);
        break;
      case NetTag.GATEWAY:
        id.gateway = tlvStr(value);
        break;
      case NetTag.DNS:
        id.dns = tlvStr(value).split(',');
        break;
      case NetTag.HOSTNAME:
        id.hostname = tlvStr(value);
        break;
      case NetTag.MTU:
        id.mtu = tlvU32(value);
        break;
      case HandoffTag.NONCE:
        nonce = Uint8Array.from(value);
        break;
      case HandoffTag.SEED:
        seed = Uint8Array.from(value);
        break;
      case HandoffTag.CLOCK_NS:
        if (value.length !== 8) throw new TypeError('handoff: bad clock');
        clockNs = value.readBigUInt64BE(0);
        break;
      case HandoffTag.ACK_PORT:
        ackPort = tlvU32(value);
        break;
    }
  }
  if (!nonce || !seed || clockNs === undefined || !id.address || !id.mac || !id.gateway || !id.hostname)
    throw new TypeError('handoff: incomplete payload');
  return { identity: id as HandoffIdentity, nonce, seed, clockNs, ackPort };
}

/** The agent's RESULT for a HANDOFF: how long applying took in the guest. */
export function decodeHandoffResult(buf: Buffer): { applyUs: number } {
  for (const { tag, value } of readTlv(buf))
    if (tag === HandoffResultTag.APPLY_US) return { applyUs: tlvU32(value) };
  return { applyUs: Number.NaN };
}

/** The ack datagram's payload for `nonce` (what the agent sends). */
export function encodeHandoffAck(nonce: Uint8Array): Buffer {
  return Buffer.concat([ACK_MAGIC, nonce]);
}

/** Is buf[off, off+len) the ack for `nonce`? */
export function isHandoffAck(buf: Uint8Array, off: number, len: number, nonce: Uint8Array): boolean {
  if (len !== HANDOFF_ACK_BYTES) return false;
  for (let i = 0; i < ACK_MAGIC.length; i++) if (buf[off + i] !== ACK_MAGIC[i]) return false;
  for (let i = 0; i < HANDOFF_NONCE_BYTES; i++)
    if (buf[off + ACK_MAGIC.length + i] !== nonce[i]) return false;
  return true;
}
