/**
 * Keyed hashing of flow keys: HalfSipHash-1-3 (the 32-bit SipHash variant
 * designed for hash tables) over the flow's 5 words, with a per-runtime
 * random key. An attacker in a guest chooses ports and addresses freely; with
 * a secret key they cannot aim many flows at one shard or one bucket, which
 * keeps both shard choice and flow lookup O(1) under a flood.
 */
import { randomBytes } from 'node:crypto';

/** Two 32-bit key words; plain data so it crosses threads in spawn args. */
export type FlowHashKey = [number, number];

export function newFlowHashKey(): FlowHashKey {
  const b = randomBytes(8);
  return [b.readUInt32LE(0), b.readUInt32LE(4)];
}

// Hash state, module-level so hashing a packet allocates nothing.
const v = new Int32Array(4);

function sipRound(): void {
  let v0 = v[0];
  let v1 = v[1];
  let v2 = v[2];
  let v3 = v[3];
  v0 = (v0 + v1) | 0;
  v1 = ((v1 << 5) | (v1 >>> 27)) ^ v0;
  v0 = (v0 << 16) | (v0 >>> 16);
  v2 = (v2 + v3) | 0;
  v3 = ((v3 << 8) | (v3 >>> 24)) ^ v2;
  v0 = (v0 + v3) | 0;
  v3 = ((v3 << 7) | (v3 >>> 25)) ^ v0;
  v2 = (v2 + v1) | 0;
  v1 = ((v1 << 13) | (v1 >>> 19)) ^ v2;
  v2 = (v2 << 16) | (v2 >>> 16);
  v[0] = v0;
  v[1] = v1;
  v[2] = v2;
  v[3] = v3;
}

function absorb(m: number): void {
  v[3] ^= m;
  sipRound();
  v[0] ^= m;
}

/**
 * Hash of (sandbox, proto, guestIp, guestPort, remoteIp, remotePort).
 * Returns an unsigned 32-bit integer.
 */
export function flowHash(
  key: FlowHashKey,
  sandbox: number,
  proto: number,
  guestIp: number,
  guestPort: number,
  remoteIp: number,
  remotePort: number,
): number {
  v[0] = key[0];
  v[1] = key[1];
  v[2] = 0x6c796765 ^ key[0];
  v[3] = 0x74656462 ^ key[1];
  // One SipRound per word (the "1" of 1-3), three to finalise.
  absorb(sandbox);
  absorb(guestIp);
  absorb(remoteIp);
  absorb((guestPort << 16) | remotePort);
  absorb(proto | (20 << 24));
  v[2] ^= 0xff;
  sipRound();
  sipRound();
  sipRound();
  return (v[1] ^ v[3]) >>> 0;
}

/** Hash of a string (DNS question names pick their shard with it). */
export function stringHash(key: FlowHashKey, s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) | 0;
  return flowHash(key, 0, 0, h, s.length & 0xffff, 0, 0);
}
