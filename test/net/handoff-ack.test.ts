/**
 * The handoff ack (src/protocol/handoff.ts) is what makes a restored child
 * ready, so a forged one must never count: the guest-facing side accepts it
 * only from the guest's fixed MAC and address, to the gateway's ack port,
 * carrying the awaited nonce. Every ack datagram ends at the guest-facing
 * side: none reaches a flow shard (and so a host socket), accepted or not.
 */
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { resolveNetConfig } from '../../src/actors/net/config.js';
import { newFlowHashKey } from '../../src/actors/net/flow-hash.js';
import { GuestNetwork } from '../../src/actors/net/guest-network.js';
import { encodeHandoffAck, HANDOFF_ACK_PORT } from '../../src/protocol/handoff.js';
import { parseMac } from '../../src/protocol/net/addr.js';
import { ETH_HEADER, ETHERTYPE_IPV4, writeEthernet } from '../../src/protocol/net/ethernet.js';
import { buildUdpPacket, GATEWAY, GUEST } from './synthetic.js';

const GUEST_MAC = '52:54:00:00:01:2a';

/** A GuestNetwork for a VM's NIC (fixed MAC), over two fake shards that record what they are told. */
function network() {
  const told: Uint8Array[][] = [[], []];
  const shards = told.map((got) => ({
    tell: (m: { packet: Uint8Array }) => got.push(m.packet.slice()) > 0,
    writable: async () => {},
  }));
  const config = resolveNetConfig();
  expect([config.guestIp, config.gatewayIp]).toEqual([GUEST, GATEWAY]);
  const g = new GuestNetwork(
    1,
    config,
    shards as never,
    newFlowHashKey(),
    pino({ level: 'silent' }),
    GUEST_MAC,
  );
  /** Feeds one Ethernet frame from `srcMac` carrying `ip`, as the frame stream would (length-prefixed). */
  const send = (ip: Uint8Array, srcMac = GUEST_MAC): void => {
    const frame = new Uint8Array(ETH_HEADER + ip.length);
    writeEthernet(frame, 0, g.gatewayMac, parseMac(srcMac), ETHERTYPE_IPV4);
    frame.set(ip, ETH_HEADER);
    const hdr = Buffer.alloc(4);
    hdr.writeUInt32BE(frame.length);
    g.feed(Buffer.concat([hdr, frame]));
  };
  return { g, told, send };
}

/** The ack datagram for `nonce`, from `src` to the gateway's ack port. */
const ack = (nonce: Uint8Array, src = GUEST): Uint8Array =>
  buildUdpPacket(src, 40000, GATEWAY, HANDOFF_ACK_PORT, encodeHandoffAck(nonce));

/** Watches a pending ack: `acked()` is its ms once the promise resolved, else undefined. */
function watch(w: { acked: Promise<number> }): () => Promise<number | undefined> {
  let ms: number | undefined;
  void w.acked.then((v) => {
    ms = v;
  });
  return async () => {
    await new Promise((r) => setImmediate(r));
    return ms;
  };
}

describe('handoff ack: only the guest, from its own MAC and address, with the nonce', () => {
  it('refuses forged acks (wrong MAC, wrong source, wrong nonce, test drop) and takes the right one', async () => {
    const { g, told, send } = network();
    const nonce = randomBytes(16);
    const wait = g.awaitHandoffAck(nonce);
    const acked = watch(wait);

    // (a) The right datagram from another MAC: dropped before IP is looked at.
    send(ack(nonce), '52:54:00:00:01:2b');
    expect(await acked()).toBeUndefined();
    expect(g.stats().drops).toEqual({ spoofed_mac: 1 });

    // (b) The guest's MAC, another source address (a neighbour's, or none at all).
    send(ack(nonce, 0x0a000210));
    send(ack(nonce, 0));
    expect(await acked()).toBeUndefined();
    expect(g.stats().drops).toEqual({ spoofed_mac: 1, spoofed_source: 2 });

    // (c) The guest's MAC and address, another nonce (a stale ack, a guess); a truncated one too.
    send(ack(randomBytes(16)));
    send(buildUdpPacket(GUEST, 40000, GATEWAY, HANDOFF_ACK_PORT, encodeHandoffAck(nonce).subarray(0, 20)));
    expect(await acked()).toBeUndefined();
    expect(g.stats().drops).toEqual({ spoofed_mac: 1, spoofed_source: 2, handoff_ack_unexpected: 2 });

    // (d) The right ack while the test hook drops them.
    g.dropHandoffAcks = true;
    send(ack(nonce));
    expect(await acked()).toBeUndefined();
    expect(g.stats().drops).toEqual({
      spoofed_mac: 1,
      spoofed_source: 2,
      handoff_ack_unexpected: 2,
      handoff_ack_test_drop: 1,
    });

    // (e) The right ack: accepted, with how long it took.
    g.dropHandoffAcks = false;
    send(ack(nonce));
    const ms = await acked();
    expect(typeof ms).toBe('number');
    expect(ms).toBeGreaterThanOrEqual(0);
    await expect(wait.acked).resolves.toBe(ms);

    // Once acked, the same datagram again (a replay) is unexpected.
    send(ack(nonce));
    expect(g.stats().drops.handoff_ack_unexpected).toBe(3);

    // No ack datagram, accepted or refused, reached a shard.
    expect(told.flat()).toEqual([]);
    expect(g.stats().toShards).toBe(0);
    expect(g.stats().framesIn).toBe(8);
  });

  it('an ack nobody awaits, or one after the wait was cancelled, is unexpected and reaches no shard', async () => {
    const { g, told, send } = network();
    const nonce = randomBytes(16);
    send(ack(nonce));
    expect(g.stats().drops).toEqual({ handoff_ack_unexpected: 1 });

    const wait = g.awaitHandoffAck(nonce);
    const acked = watch(wait);
    wait.cancel();
    send(ack(nonce));
    expect(await acked()).toBeUndefined();
    expect(g.stats().drops).toEqual({ handoff_ack_unexpected: 2 });
    expect(told.flat()).toEqual([]);

    // The same guest's other UDP does reach a shard: the fakes are wired.
    send(buildUdpPacket(GUEST, 40000, GATEWAY, 5353, new Uint8Array([1, 2, 3])));
    expect(told.flat()).toHaveLength(1);
  });
});
