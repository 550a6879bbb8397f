/**
 * The handoff payload has one wire format and two implementations: the
 * host's (src/protocol/handoff.ts) and the agent's (guest/agent/proto.c +
 * handoff.c). Every payload here goes host encode → agent decode → agent
 * re-encode (`actorvm-agent handoff-codec`) → host decode, and must come
 * back equal; payloads the agent must refuse are refused with the reason.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { agentBinaryPath } from '../../src/agent/local.js';
import { encodeNetConfig } from '../../src/protocol/agent-messages.js';
import { TlvWriter } from '../../src/protocol/agent-tlv.js';
import {
  decodeHandoff,
  encodeHandoff,
  encodeHandoffAck,
  HANDOFF_ACK_PORT,
  type HandoffPayload,
  isHandoffAck,
} from '../../src/protocol/handoff.js';

function agentRoundTrip(payload: Buffer): { status: number | null; out: Buffer; err: string } {
  const r = spawnSync(agentBinaryPath(), ['handoff-codec'], { input: payload });
  return { status: r.status, out: r.stdout, err: r.stderr.toString() };
}

function payload(
  over: Partial<HandoffPayload> = {},
  id: Partial<HandoffPayload['identity']> = {},
): HandoffPayload {
  return {
    identity: {
      mac: '52:54:00:00:01:2a',
      address: '10.0.2.15/24',
      gateway: '10.0.2.2',
      dns: ['10.0.2.3'],
      hostname: 'sandbox-42',
      mtu: 1500,
      ...id,
    },
    nonce: randomBytes(16),
    seed: randomBytes(32),
    clockNs: BigInt(Date.now()) * 1_000_000n + 123_456n,
    ackPort: HANDOFF_ACK_PORT,
    ...over,
  };
}

/**
 * A valid payload followed by identity fields the host would refuse to
 * encode (the agent checks every field it is sent, a later one included).
 */
function withRaw(id: Partial<HandoffPayload['identity']>): Buffer {
  return Buffer.concat([encodeHandoff(payload()), encodeNetConfig(id)]);
}

describe('handoff codec, host and agent', () => {
  const cases: [string, HandoffPayload][] = [
    ['a typical child', payload()],
    ['every optional field', payload({}, { iface: 'eth1', dns: ['10.0.2.3', '1.1.1.1', '::1'], mtu: 65520 })],
    ['no ack port (the fallback resend)', payload({ ackPort: 0 })],
    [
      'a long hostname and the largest clock',
      payload({ clockNs: 2n ** 64n - 1n }, { hostname: 'a'.repeat(63) }),
    ],
  ];
  for (const [what, p] of cases) {
    it(`round-trips ${what}`, () => {
      const r = agentRoundTrip(encodeHandoff(p));
      expect(r.err).toBe('');
      expect(r.status).toBe(0);
      const back = decodeHandoff(r.out);
      expect(back).toEqual({ ...p, nonce: Uint8Array.from(p.nonce), seed: Uint8Array.from(p.seed) });
    });
  }

  it('the agent refuses incomplete or malformed payloads, with the reason', () => {
    const bad: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['no nonce', new TlvWriter().str(3, '10.0.2.15/24').bytes(17, randomBytes(32)).u64(18, 1).finish()],
      ['short nonce', new TlvWriter().str(3, '10.0.2.15/24').bytes(16, randomBytes(15)).finish()],
      [
        'no address',
        new TlvWriter().bytes(16, randomBytes(16)).bytes(17, randomBytes(32)).u64(18, 1).finish(),
      ],
      ['bad MAC', withRaw({ mac: '52:54:00:zz:01:2a' })],
      ['bad hostname', withRaw({ hostname: 'bad host' })],
      [
        'ack port out of range',
        Buffer.concat([encodeHandoff(payload({ ackPort: 0 })), new TlvWriter().u32(19, 70000).finish()]),
      ],
      ['a length past the end', Buffer.from([16, 0, 0, 0, 99, 1, 2])],
    ];
    for (const [what, b] of bad) {
      const r = agentRoundTrip(b);
      expect(r.status, what).toBe(65);
      expect(r.err, what).toMatch(/^BAD_REQUEST: /);
    }
  });

  it('the host refuses to encode what the agent would refuse', () => {
    // Each identity field the agent checks (proto.c net_field), refused by both, the host naming the field.
    const refused: [string, Partial<HandoffPayload['identity']>][] = [
      ['mac', { mac: '52:54:00:zz:01:2a' }],
      ['mac', { mac: '52:54:00:00:01' }],
      ['mac', { mac: '52-54-00-00-01-2a' }],
      ['mac', { mac: '52:54:00:00:01:2a:ff' }],
      ['address', { address: '10.0.2.256/24' }],
      ['address', { address: '10.0.2.15/33' }],
      ['address', { address: '10.0.2/24' }],
      ['address', { address: '10.0.2.15/' }],
      ['address', { address: '010.0.2.15/24' }],
      ['address', { address: 'fd00::2/64' }],
      ['gateway', { gateway: '10.0.2.300' }],
      ['gateway', { gateway: 'gateway' }],
      ['gateway', { gateway: '10.0.2.2/24' }],
      ['hostname', { hostname: 'bad host' }],
      ['hostname', { hostname: 'a'.repeat(65) }],
      ['hostname', { hostname: '' }],
      ['hostname', { hostname: 'sandbox_1' }],
      ['hostname', { hostname: 'sändbox' }],
      ['mtu', { mtu: 67 }],
      ['mtu', { mtu: 65536 }],
      ['dns', { dns: ['10.0.2.3', '1.1.1.1', '8.8.8.8', '9.9.9.9', '::1'] }],
      ['dns', { dns: ['dns.example'] }],
      ['dns', { dns: ['10.0.2.999'] }],
      ['iface', { iface: 'eth/0' }],
      ['iface', { iface: 'a'.repeat(16) }],
    ];
    for (const [field, id] of refused) {
      const what = `${field} ${JSON.stringify(id)}`;
      expect(() => encodeHandoff(payload({}, id)), what).toThrow(TypeError);
      expect(() => encodeHandoff(payload({}, id)), what).toThrow(new RegExp(`handoff: bad ${field}\\b`));
      const r = agentRoundTrip(withRaw(id));
      expect(r.status, what).toBe(65);
      expect(r.err, what).toMatch(/^BAD_REQUEST: /);
    }
    // The host is stricter in one place: a bare address (the agent would take it as /32).
    expect(() => encodeHandoff(payload({}, { address: '10.0.2.15' }))).toThrow(/handoff: bad address/);
    // The edges the agent accepts, the host encodes too (and they round-trip).
    for (const id of [
      { mac: '52:54:00:AB:cd:EF', address: '0.0.0.0/0', mtu: 68 },
      { address: '255.255.255.255/32', mtu: 65535, hostname: 'a'.repeat(64) },
      { hostname: '-x.', dns: ['10.0.2.3', '1.1.1.1', 'fd00::3', '::ffff:10.0.2.3'] },
      { dns: [] },
    ]) {
      const p = payload({}, id);
      const r = agentRoundTrip(encodeHandoff(p));
      expect(r.err, JSON.stringify(id)).toBe('');
      const back = decodeHandoff(r.out).identity;
      // The agent re-encodes a MAC in lower case, and an empty DNS list as none.
      const { dns, ...want } = { ...p.identity, mac: p.identity.mac.toLowerCase() };
      expect(back, JSON.stringify(id)).toEqual(dns?.length ? { ...want, dns } : want);
    }

    expect(() => encodeHandoff(payload({ nonce: randomBytes(8) }))).toThrow(/nonce/);
    expect(() => encodeHandoff(payload({ seed: randomBytes(31) }))).toThrow(/seed/);
    expect(() => encodeHandoff(payload({ ackPort: 65536 }))).toThrow(/port/);
    expect(() => decodeHandoff(Buffer.alloc(0))).toThrow(/incomplete/);
  });

  it('an ack matches its own nonce only', () => {
    const nonce = randomBytes(16);
    const ack = encodeHandoffAck(nonce);
    expect(isHandoffAck(ack, 0, ack.length, nonce)).toBe(true);
    expect(isHandoffAck(ack, 0, ack.length, randomBytes(16))).toBe(false);
    expect(isHandoffAck(ack, 0, ack.length - 1, nonce)).toBe(false);
    const wrongMagic = Buffer.from(ack);
    wrongMagic[0] ^= 1;
    expect(isHandoffAck(wrongMagic, 0, wrongMagic.length, nonce)).toBe(false);
  });
});
