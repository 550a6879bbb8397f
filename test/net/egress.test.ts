/**
 * Egress policy by destination class, before any rule: the verdict table of
 * policy.ts, then a flow shard fed hand-made guest packets to every class
 * (TCP SYN and UDP), asserting that no host socket is ever opened for what
 * must stay inside: 0.0.0.0/8, 127/8, broadcast, multicast, the DNS address's
 * other ports, the sandbox's subnet, forged sources. TCP DNS is answered
 * through the proxy's upstream; `dns: false` refuses both transports.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveNetConfig } from '../../src/actors/net/config.js';
import { checkEgress, classify, HOST_LOOPBACK } from '../../src/actors/net/policy.js';
import { parseIp } from '../../src/protocol/net/addr.js';
import { buildDnsQuery } from '../../src/protocol/net/dns.js';
import { ACK, PSH, RST, SYN } from '../../src/protocol/net/tcp.js';
import { buildTcpPacket, buildUdpPacket, DNS, GUEST, SyntheticShard } from './synthetic.js';

const ip = (s: string): number => parseIp(s)!;

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

function shard(opts: ConstructorParameters<typeof SyntheticShard>[0] = {}): SyntheticShard {
  const s = new SyntheticShard({ dnsUpstream: '127.0.0.1:9', ...opts });
  cleanups.push(() => s.stop());
  return s;
}

describe('egress verdicts by destination class', () => {
  it('classifies every destination before the rules', () => {
    const cfg = resolveNetConfig();
    const cases: [string, string][] = [
      ['10.0.2.2', 'gateway'],
      ['10.0.2.3', 'dns'],
      ['0.0.0.0', 'this_network'],
      ['0.1.2.3', 'this_network'],
      ['127.0.0.1', 'loopback'],
      ['127.9.9.9', 'loopback'],
      ['169.254.169.254', 'link_local'],
      ['224.0.0.1', 'multicast'],
      ['239.255.255.250', 'multicast'],
      ['255.255.255.255', 'broadcast'],
      ['10.0.2.255', 'broadcast'],
      ['240.0.0.1', 'reserved'],
      ['10.0.2.99', 'sandbox_net'],
      ['10.0.3.1', 'external'],
      ['192.0.2.1', 'external'],
    ];
    for (const [addr, cls] of cases) expect(classify(cfg, ip(addr)), addr).toBe(cls);
  });

  it('never lets a wide allow rule open host loopback or link-local', () => {
    for (const allowOut of [['10.0.0.0/8'], ['0.0.0.0/0'], ['0.0.0.0/0:80'], ['10.0.2.0/24']]) {
      const cfg = resolveNetConfig({ allowOut });
      expect(checkEgress(cfg, ip('10.0.2.2'), 80), `${allowOut} → gateway`).toMatchObject({
        ok: false,
        reason: 'host_loopback',
      });
      expect(checkEgress(cfg, ip('169.254.169.254'), 80), `${allowOut} → metadata`).toMatchObject({
        ok: false,
        reason: 'link_local',
      });
      for (const dst of ['0.0.0.0', '127.0.0.1']) {
        expect(checkEgress(cfg, ip(dst), 80).ok, `${allowOut} → ${dst}`).toBe(false);
      }
    }
    // Only a rule naming the gateway itself, or the switch, opens host loopback.
    expect(checkEgress(resolveNetConfig({ allowOut: ['10.0.2.2/32:80'] }), ip('10.0.2.2'), 80)).toEqual({
      ok: true,
      hostIp: HOST_LOOPBACK,
    });
    expect(checkEgress(resolveNetConfig({ allowOut: ['10.0.2.2/32:80'] }), ip('10.0.2.2'), 81).ok).toBe(
      false,
    );
    expect(checkEgress(resolveNetConfig({ allowHostLoopback: true }), ip('10.0.2.2'), 81)).toEqual({
      ok: true,
      hostIp: HOST_LOOPBACK,
    });
    expect(
      checkEgress(
        resolveNetConfig({ allowHostLoopback: true, denyOut: ['10.0.2.2/32:22'] }),
        ip('10.0.2.2'),
        22,
      ).ok,
    ).toBe(false);
    // Link-local only by a rule inside 169.254/16, or the switch.
    expect(
      checkEgress(resolveNetConfig({ allowOut: ['169.254.169.254/32:80'] }), ip('169.254.169.254'), 80).ok,
    ).toBe(true);
    expect(checkEgress(resolveNetConfig({ allowLinkLocal: true }), ip('169.254.1.1'), 80).ok).toBe(true);
    // 0.0.0.0/8 and 127/8 stay refused whatever is switched on.
    const all = resolveNetConfig({ allowHostLoopback: true, allowLinkLocal: true, allowOut: ['0.0.0.0/0'] });
    expect(checkEgress(all, ip('0.0.0.0'), 80)).toMatchObject({ ok: false, reason: 'this_network' });
    expect(checkEgress(all, ip('127.0.0.1'), 80)).toMatchObject({ ok: false, reason: 'loopback' });
    expect(checkEgress(all, ip('10.0.2.99'), 80)).toMatchObject({ ok: false, reason: 'sandbox_net' });
  });

  it('serves DNS on port 53 only, through the upstream, unless dns is off', () => {
    const up = { ip: HOST_LOOPBACK, port: 5353 };
    const cfg = resolveNetConfig({ allowOut: ['192.0.2.0/24'] });
    expect(checkEgress(cfg, DNS, 53, up)).toEqual({ ok: true, hostIp: HOST_LOOPBACK, hostPort: 5353 });
    expect(checkEgress(cfg, DNS, 80, up)).toMatchObject({ ok: false, reason: 'dns_port' });
    expect(checkEgress(resolveNetConfig({ dns: false }), DNS, 53, up)).toMatchObject({
      ok: false,
      reason: 'dns_disabled',
    });
  });
});

async function hostServers(): Promise<{ tcpPort: number; udpPort: number; seen: () => number }> {
  let seen = 0;
  const tcp = net.createServer((c) => {
    seen++;
    c.destroy();
  });
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  const udp = dgram.createSocket('udp4');
  udp.on('message', () => seen++);
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
  cleanups.push(() => {
    tcp.close();
    udp.close();
  });
  return { tcpPort: (tcp.address() as net.AddressInfo).port, udpPort: udp.address().port, seen: () => seen };
}

describe('flow shard: what must stay inside never becomes a host socket', () => {
  it('refuses TCP and UDP to this network, loopback, DNS ports, the subnet, reserved; drops group addresses silently', async () => {
    const s = shard({ allowOut: ['0.0.0.0/0'], allowHostLoopback: false });
    await s.attach();
    const host = await hostServers();
    const refused: [string, number, string][] = [
      ['0.0.0.0', host.tcpPort, 'this_network'],
      ['127.0.0.1', host.tcpPort, 'loopback'],
      ['10.0.2.2', host.tcpPort, 'host_loopback'],
      ['10.0.2.3', 80, 'dns_port'],
      ['10.0.2.99', 80, 'sandbox_net'],
      ['240.0.0.1', 80, 'reserved'],
    ];
    let sport = 45000;
    for (const [dst, port, reason] of refused) {
      s.sendTcp({ sport, dst: ip(dst), dport: port, seq: 1, flags: SYN });
      await s.nextTcp(sport, RST); // refused out loud
      s.sendUdp(sport + 1, ip(dst), dst === '10.0.2.3' ? 80 : host.udpPort, Buffer.from('x'));
      sport += 2;
      expect((await s.stats()).refusals[reason], dst).toBe(2);
    }
    for (const [dst, reason] of [
      ['10.0.2.255', 'broadcast'],
      ['255.255.255.255', 'broadcast'],
      ['224.0.0.1', 'multicast'],
    ] as const) {
      const before = s.frames.length;
      s.sendTcp({ sport, dst: ip(dst), dport: host.tcpPort, seq: 1, flags: SYN });
      s.sendTcp({ sport, dst: ip(dst), dport: host.tcpPort, seq: 1, ack: 1, flags: ACK }); // no flow, still no RST
      s.sendUdp(sport + 1, ip(dst), host.udpPort, Buffer.from('x'));
      sport += 2;
      expect(s.frames.length, `${dst} is never answered`).toBe(before);
      expect((await s.stats()).refusals[reason]).toBeGreaterThan(0);
    }
    const st = await s.stats();
    expect(st.flowsOpened).toBe(0); // not one host socket
    expect(host.seen()).toBe(0);
  });

  it('drops packets whose source is not the sandbox address, before any policy', async () => {
    const s = shard({ allowHostLoopback: true });
    await s.attach();
    const host = await hostServers();
    const forged = buildTcpPacket({ sport: 46000, dport: host.tcpPort, seq: 1, flags: SYN });
    forged.set([10, 0, 2, 99], 12); // another guest's address; the IPv4 checksum is now wrong too
    const fixed = buildUdpPacket(ip('10.0.2.99'), 46001, ip('10.0.2.2'), host.udpPort, Buffer.from('x'));
    s.packet(fixed);
    s.packet(forged);
    const st = await s.stats();
    expect(st.drops.spoofed_source).toBeGreaterThanOrEqual(1);
    expect(st.flowsOpened).toBe(0);
    expect(s.frames.length).toBe(0);
    expect(host.seen()).toBe(0);
    // The real address still works.
    s.packet(buildUdpPacket(GUEST, 46002, ip('10.0.2.2'), host.udpPort, Buffer.from('x')));
    expect((await s.stats()).flowsOpened).toBe(1);
  });

  it('answers DNS over TCP through the upstream, and refuses both transports with dns: false', async () => {
    // A DNS-over-TCP upstream on loopback: answers every query with one A record.
    const upstream = net.createServer((c) => {
      c.on('error', () => {}); // the shard resets it when the test ends
      c.once('data', (d) => {
        const q = d.subarray(2, 2 + d.readUInt16BE(0));
        const answer = Buffer.concat([
          q,
          Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]),
        ]);
        answer[2] |= 0x80; // QR
        answer.writeUInt16BE(1, 6); // ANCOUNT
        const len = Buffer.alloc(2);
        len.writeUInt16BE(answer.length);
        c.end(Buffer.concat([len, answer]));
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      upstream.close();
    });
    const port = (upstream.address() as net.AddressInfo).port;
    const s = shard({ dnsUpstream: `127.0.0.1:${port}` });
    await s.attach();
    s.sendTcp({ sport: 47000, dst: DNS, dport: 53, seq: 100, flags: SYN });
    const synack = await s.nextTcp(47000, SYN | ACK);
    expect(synack.src).toBe(DNS);
    const query = buildDnsQuery(0x4242, 'example.test', 1);
    const framed = Buffer.concat([Buffer.from([query.length >> 8, query.length & 255]), query]);
    s.sendTcp({
      sport: 47000,
      dst: DNS,
      dport: 53,
      seq: 101,
      ack: synack.seq + 1,
      flags: ACK | PSH,
      payload: framed,
    });
    const reply = await s.nextTcp(47000, ACK, 5_000);
    const data = reply.data.length ? reply.data : (await s.nextTcp(47000, PSH)).data;
    expect(data.readUInt16BE(2)).toBe(0x4242); // the guest's own id
    expect(data.readUInt16BE(2 + 6)).toBe(1); // one answer

    const off = shard({ dnsUpstream: `127.0.0.1:${port}`, dns: false });
    await off.attach();
    off.sendTcp({ sport: 47001, dst: DNS, dport: 53, seq: 1, flags: SYN });
    await off.nextTcp(47001, RST);
    off.sendUdp(47002, DNS, 53, query);
    const st = await off.stats();
    expect(st.refusals.dns_disabled).toBe(2);
    expect(st.dns.queries).toBe(0);
  });
});
