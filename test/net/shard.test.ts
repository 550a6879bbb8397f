/**
 * Unit pins of a flow shard driven by synthetic guest segments, against real
 * host sockets: handshake, data both ways, half-close and RST each way,
 * policy refusals, rate limit, flow cap, DNS cache, UDP, inbound forwards,
 * malformed input, and a 1 GiB transfer to a slow reader in bounded memory.
 */
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { finish, sum16 } from '../../src/protocol/net/checksum.js';
import { buildDnsQuery } from '../../src/protocol/net/dns.js';
import { ACK, FIN, PSH, RST, SYN } from '../../src/protocol/net/tcp.js';
import { buildTcpPacket, DNS, GATEWAY, SyntheticShard } from './synthetic.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

function shard(opts: ConstructorParameters<typeof SyntheticShard>[0] = {}): SyntheticShard {
  const s = new SyntheticShard(opts);
  cleanups.push(() => s.stop());
  return s;
}

async function server(onConn: (s: net.Socket) => void): Promise<{ port: number; srv: net.Server }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (c) => {
    sockets.add(c);
    c.on('error', () => {}); // resets are part of several tests
    c.on('close', () => sockets.delete(c));
    onConn(c);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    for (const c of sockets) c.destroy();
    return new Promise<void>((r) => srv.close(() => r()));
  });
  return { port: (srv.address() as net.AddressInfo).port, srv };
}

/** Completes a guest-initiated handshake; returns the shard's ISN and our next seq. */
async function handshake(s: SyntheticShard, port: number, sport: number, window = 65535) {
  s.sendTcp({ sport, dport: port, seq: 1000, flags: SYN, mss: 65480, wscale: 7, window });
  const synack = await s.nextTcp(sport, SYN | ACK);
  expect(synack.ack).toBe(1001);
  s.sendTcp({ sport, dport: port, seq: 1001, ack: synack.seq + 1, flags: ACK, window });
  return { iss: synack.seq, next: 1001, synack };
}

/** A host server plus a completed guest handshake to it; resolves with the accepted host socket. */
async function connected(s: SyntheticShard, sport: number, onConn: (c: net.Socket) => void = () => {}) {
  let accept!: (c: net.Socket) => void;
  const accepted = new Promise<net.Socket>((r) => (accept = r));
  const { port } = await server((c) => {
    onConn(c);
    accept(c);
  });
  const { iss, synack } = await handshake(s, port, sport);
  return { port, iss, synack, host: await accepted };
}

const nextEvent = <T>(emitter: NodeJS.EventEmitter, event: string): Promise<T> =>
  new Promise((r) => emitter.once(event, r));

describe('flow shard: TCP', () => {
  it('sends SYN-ACK once the host connect succeeds, with our MSS and window scale', async () => {
    const s = shard({ allowHostLoopback: true });
    await s.attach();
    const { synack } = await connected(s, 40000);
    expect(synack.mss).toBe(65480);
    expect(synack.wscale).toBe(7);
    expect(synack.src).toBe(GATEWAY);
    expect((await s.stats()).flowsByState['tcp:established']).toBe(1);
  });

  it('answers RST when the host refuses the connection', async () => {
    const s = shard({ allowHostLoopback: true });
    await s.attach();
    const { port, srv } = await server(() => {});
    await new Promise<void>((r) => srv.close(() => r())); // nothing listens there now
    s.sendTcp({ sport: 40001, dport: port, seq: 5, flags: SYN });
    const rst = await s.nextTcp(40001, RST);
    expect(rst.ack).toBe(6);
    const st = await s.stats();
    expect(st.refusals.host_refused).toBe(1);
    expect(st.flows).toBe(0);
  });

  it('relays data both ways with correct sequence numbers and acknowledgements', async () => {
    const s = shard({ allowHostLoopback: true });
    await s.attach();
    let got!: Promise<Buffer>;
    const { port, iss, host } = await connected(s, 40002, (c) => {
      got = new Promise((resolve) => c.once('data', resolve));
    });
    s.sendTcp({
      sport: 40002,
      dport: port,
      seq: 1001,
      ack: iss + 1,
      flags: ACK | PSH,
      payload: Buffer.from('ping'),
    });
    const ackOfPing = await s.nextTcp(40002, ACK);
    expect(ackOfPing.ack).toBe(1005);
    expect((await got).toString()).toBe('ping');
    host.write('pong');
    const pong = await s.nextTcp(40002, PSH);
    expect(pong.seq).toBe(iss + 1);
    expect(pong.data.toString()).toBe('pong');
    s.sendTcp({ sport: 40002, dport: port, seq: 1005, ack: iss + 5, flags: ACK });
    const flows = JSON.parse(await s.ask({ type: 'flows', sandbox: 1 }));
    expect(flows[0]).toMatchObject({ proto: 'tcp', state: 'established', bytesToHost: 4, bytesToGuest: 4 });
  });

  it('half-closes guest → host: the host sees EOF and can still send until it closes', async () => {
    const s = shard({ allowHostLoopback: true });
    await s.attach();
    const { port, iss, host } = await connected(s, 40003);
    const hostEnd = nextEvent(host, 'end');
    host.resume();
    s.sendTcp({ sport: 40003, dport: port, seq: 1001, ack: iss + 1, flags: FIN | ACK });
    expect((await s.nextTcp(40003, ACK)).ack).toBe(1002);
    await hostEnd;
    host.end('after your FIN');
    const data = await s.nextTcp(40003, PSH);
    expect(data.data.toString()).toBe('after your FIN');
    const fin = await s.nextTcp(40003, FIN);
    expect(fin.seq).toBe(iss + 1 + 14);
    s.sendTcp({ sport: 40003, dport: port, seq: 1002, ack: fin.seq + 1, flags: ACK });
    expect((await s.stats()).flows).toBe(0); // LAST_ACK → closed on that ACK
  });

  it('half-closes host → guest: the guest gets FIN and can still send', async () => {
    const s = shard({ allowHostLoopback: true });
    await s.attach();
    const { port, iss, host } = await connected(s, 40004);
    const received: Buffer[] = [];
    host.on('data', (d) => received.push(d));
    const hostEnd = nextEvent(host, 'end');
    host.end();
    const fin = await s.nextTcp(40004, FIN);
    expect(fin.seq).toBe(iss + 1);
    s.sendTcp({
      sport: 40004,
      dport: port,
      seq: 1001,
      ack: iss + 2,
      flags: ACK | PSH,
      payload: Buffer.from('still here'),
    });
    expect((await s.nextTcp(40004, ACK)).ack).toBe(1011);
    s.sendTcp({ sport: 40004, dport: port, seq: 1011, ack: iss + 2, flags: FIN | ACK });
    expect((await s.nextTcp(40004, ACK)).ack).toBe(1012);
    await hostEnd;
    expect(Buffer.concat(received).toString()).toBe('still here');
    expect((await s.stats()).flowsByState['tcp:time_wait']).toBe(1);
  });

  it('carries RST both ways', async () => {
    const s = shard({ allowHostLoopback: true });
    await s.attach();
    const hosts: net.Socket[] = [];
    const { port } = await server((c) => {
      c.on('error', () => {});
      hosts.push(c);
    });
    // guest → host
    const a = await handshake(s, port, 40005);
    while (hosts.length < 1) await new Promise((r) => setImmediate(r));
    const closed = nextEvent<boolean>(hosts[0], 'close');
    const err = new Promise<NodeJS.ErrnoException>((r) => hosts[0].once('error', r));
    s.sendTcp({ sport: 40005, dport: port, seq: 1001, ack: a.iss + 1, flags: RST | ACK });
    expect((await err).code).toBe('ECONNRESET');
    await closed;
    // host → guest
    await handshake(s, port, 40006);
    while (hosts.length < 2) await new Promise((r) => setImmediate(r));
    hosts[1].resetAndDestroy();
    const rst = await s.nextTcp(40006, RST);
    expect(rst.flags & RST).toBe(RST);
    expect((await s.stats()).flows).toBe(0);
  });

  it('answers a segment of no flow with RST', async () => {
    const s = shard({ allowHostLoopback: true });
    await s.attach();
    s.sendTcp({ sport: 40007, dport: 9, seq: 77, ack: 555, flags: ACK, payload: Buffer.from('x') });
    const rst = await s.nextTcp(40007, RST);
    expect(rst.seq).toBe(555);
  });
});

describe('flow shard: egress policy', () => {
  it('refuses the host loopback by default, allows it when asked or by an allow rule', async () => {
    const { port } = await server(() => {});
    const closed = shard();
    await closed.attach();
    closed.sendTcp({ sport: 41000, dport: port, seq: 1, flags: SYN });
    await closed.nextTcp(41000, RST);
    expect((await closed.stats()).refusals.host_loopback).toBe(1);

    const rule = shard({ allowOut: [`10.0.2.2/32:${port}`] });
    await rule.attach();
    rule.sendTcp({ sport: 41001, dport: port, seq: 1, flags: SYN });
    await rule.nextTcp(41001, SYN | ACK);
    rule.sendTcp({ sport: 41002, dport: port + 1 > 65535 ? port - 1 : port + 1, seq: 1, flags: SYN });
    await rule.nextTcp(41002, RST);
  });

  it('refuses link-local and denied destinations, and allow-lists restrict everything else', async () => {
    const s = shard({ denyOut: ['192.0.2.0/24'], allowHostLoopback: true });
    await s.attach();
    s.sendTcp({ sport: 41010, dst: 0xa9fea9fe, dport: 80, seq: 1, flags: SYN }); // 169.254.169.254
    await s.nextTcp(41010, RST);
    s.sendTcp({ sport: 41011, dst: 0xc0000201, dport: 80, seq: 1, flags: SYN }); // 192.0.2.1
    await s.nextTcp(41011, RST);
    const st = await s.stats();
    expect(st.refusals).toMatchObject({ link_local: 1, denied: 1 });

    const only = shard({ allowOut: ['198.51.100.0/24:443'] });
    await only.attach();
    only.sendTcp({ sport: 41012, dst: 0xc6336401, dport: 80, seq: 1, flags: SYN });
    await only.nextTcp(41012, RST);
    expect((await only.stats()).refusals.not_allowed).toBe(1);
  });

  it('rate-limits new flows', async () => {
    const s = shard({ allowHostLoopback: true, newFlowsPerSecond: 1 });
    await s.attach();
    const { port } = await server((c) => c.destroy());
    for (let i = 0; i < 100; i++) s.sendTcp({ sport: 42000 + i, dport: port, seq: 1, flags: SYN });
    const st = await s.stats();
    // The burst is 64 flows; the rest within the same instant are refused.
    expect(st.refusals.rate_limit).toBeGreaterThanOrEqual(30);
    expect(st.flowsOpened).toBeLessThanOrEqual(70);
  });

  it('caps concurrent flows per sandbox and refuses more with RST', async () => {
    const s = shard({ allowHostLoopback: true, maxFlows: 5 });
    await s.attach();
    const { port } = await server(() => {});
    for (let i = 0; i < 5; i++) await handshake(s, port, 43000 + i);
    s.sendTcp({ sport: 43010, dport: port, seq: 1, flags: SYN });
    await s.nextTcp(43010, RST);
    const st = await s.stats();
    expect(st.flows).toBe(5);
    expect(st.refusals.flow_cap).toBe(1);
  });
});

describe('flow shard: UDP and DNS', () => {
  it('relays a UDP round trip over a connected host socket and reaps it when idle', async () => {
    const s = shard({ allowHostLoopback: true, udpIdleTimeoutMs: 200 });
    await s.attach();
    const echo = dgram.createSocket('udp4');
    echo.on('message', (m, r) => echo.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
    await new Promise<void>((r) => echo.bind(0, '127.0.0.1', r));
    cleanups.push(() => void echo.close());
    const reaped = s.nextLog((e) => e.event === 'flow.removed' && e.proto === 'udp');
    s.sendUdp(5000, GATEWAY, echo.address().port, Buffer.from('hi'));
    const back = await s.nextUdp(5000);
    expect(back.data.toString()).toBe('echo:hi');
    expect(back.src).toBe(GATEWAY);
    expect(back.srcPort).toBe(echo.address().port);
    expect((await s.stats()).flowsByState['udp:open']).toBe(1);
    // The idle reap is a protocol timer: wait for the flow's removal event.
    expect((await reaped).reason).toBe('idle_timeout');
    expect((await s.stats()).flows).toBe(0);
  });

  it('caches DNS answers by question, rewrites the id, and does not cache TTL-0 answers', async () => {
    const upstream = dgram.createSocket('udp4');
    let asked = 0;
    upstream.on('message', (q, r) => {
      asked++;
      const name = q.subarray(12, q.length - 4);
      const ttl = name.includes(Buffer.from('zero')) ? 0 : 60;
      // Header: same id, QR|RD|RA, 1 question, 1 answer; the question; an A record via pointer.
      const answer = Buffer.concat([
        q.subarray(0, 2),
        Buffer.from([0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]),
        q.subarray(12),
        Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, ttl, 0, 4, 192, 0, 2, 7]),
      ]);
      upstream.send(answer, r.port, r.address);
    });
    await new Promise<void>((r) => upstream.bind(0, '127.0.0.1', r));
    cleanups.push(() => void upstream.close());
    const s = shard({ dnsUpstream: `127.0.0.1:${upstream.address().port}` });
    await s.attach();
    s.sendUdp(6000, DNS, 53, buildDnsQuery(0x1111, 'example.test'));
    const first = await s.nextUdp(6000);
    expect(first.data.readUInt16BE(0)).toBe(0x1111);
    s.sendUdp(6001, DNS, 53, buildDnsQuery(0x2222, 'EXAMPLE.test'));
    const second = await s.nextUdp(6001);
    expect(second.data.readUInt16BE(0)).toBe(0x2222);
    expect(second.data.subarray(-4)).toEqual(Buffer.from([192, 0, 2, 7]));
    expect(asked).toBe(1);
    s.sendUdp(6002, DNS, 53, buildDnsQuery(0x3333, 'zero.test'));
    await s.nextUdp(6002);
    s.sendUdp(6003, DNS, 53, buildDnsQuery(0x4444, 'zero.test'));
    await s.nextUdp(6003);
    expect(asked).toBe(3);
    expect((await s.stats()).dns).toMatchObject({ queries: 4, hits: 1, misses: 3 });
  });
});

describe('flow shard: inbound forwards', () => {
  it('turns an accepted host connection into a SYN to the guest and relays both ways', async () => {
    const s = shard();
    await s.attach();
    const rule = await s.forward(8080);
    expect(rule.hostPort).toBeGreaterThan(0);
    const client = net.connect(rule.hostPort, '127.0.0.1');
    client.on('error', () => {});
    cleanups.push(() => void client.destroy());
    const syn = await s.nextTcp(8080, SYN);
    expect(syn.src).toBe(GATEWAY);
    s.sendTcp({
      sport: 8080,
      dport: syn.srcPort,
      seq: 9000,
      ack: syn.seq + 1,
      flags: SYN | ACK,
      mss: 1460,
      wscale: 7,
    });
    const ack = await s.nextTcp(8080, ACK);
    expect(ack.ack).toBe(9001);
    const fromGuest = new Promise<Buffer>((r) => client.once('data', r));
    s.sendTcp({
      sport: 8080,
      dport: syn.srcPort,
      seq: 9001,
      ack: syn.seq + 1,
      flags: ACK | PSH,
      payload: Buffer.from('hello host'),
    });
    expect((await fromGuest).toString()).toBe('hello host');
    client.write('hello guest');
    const data = await s.nextTcp(8080, PSH);
    expect(data.data.toString()).toBe('hello guest');
    expect(
      JSON.parse(await s.ask({ type: 'unforward', sandbox: 1, proto: 6, hostPort: rule.hostPort })).removed,
    ).toBe(true);
  });

  it('closes the host connection when the guest refuses it', async () => {
    const s = shard();
    await s.attach();
    const rule = await s.forward(8081);
    const client = net.connect(rule.hostPort, '127.0.0.1');
    client.on('error', () => {});
    const closed = nextEvent(client, 'close');
    const syn = await s.nextTcp(8081, SYN);
    s.sendTcp({ sport: 8081, dport: syn.srcPort, seq: 0, ack: syn.seq + 1, flags: RST | ACK });
    await closed;
    expect((await s.stats()).flows).toBe(0);
  });
});

/** A copy of `pkt` with its IPv4 header edited and its checksum recomputed. */
function withHeader(pkt: Uint8Array, edit: (p: Uint8Array) => void): Uint8Array {
  const p = pkt.slice();
  edit(p);
  p[10] = 0;
  p[11] = 0;
  const ck = finish(sum16(p, 0, 20));
  p[10] = ck >>> 8;
  p[11] = ck & 0xff;
  return p;
}

describe('flow shard: bad input', () => {
  it('counts and drops malformed packets and keeps working', async () => {
    const s = shard({ allowHostLoopback: true });
    await s.attach();
    const good = buildTcpPacket({ sport: 44000, dport: 9, seq: 1, flags: SYN });
    const badIpSum = good.slice();
    badIpSum[10] ^= 0xff;
    const truncated = good.subarray(0, 30);
    const badTcpSum = buildTcpPacket({ sport: 44001, dport: 9, seq: 1, flags: SYN, badChecksum: true });
    const fragment = withHeader(good, (p) => (p[6] = 0x20)); // more fragments
    const unknown = withHeader(good, (p) => (p[9] = 47)); // GRE
    for (const p of [badIpSum, truncated, badTcpSum, fragment, unknown, new Uint8Array(3)]) s.packet(p);
    const st = await s.stats();
    expect(st.drops).toEqual({
      checksum: 1,
      total_length: 1,
      tcp_checksum: 1,
      fragment: 1,
      protocol: 1,
      short: 1,
    });
    expect(st.packetsIn).toBe(6);
    const { port } = await server(() => {});
    await handshake(s, port, 44002);
  });
});

describe('flow shard: bulk transfer', () => {
  it('moves 1 GiB to a slow host reader with bounded memory, closing the window under pressure', async () => {
    const s = shard({ allowHostLoopback: true });
    await s.attach();
    const total = 1 << 30;
    const hash = createHash('sha256');
    let received = 0;
    let done!: Promise<void>;
    const { port, iss, host } = await connected(s, 45000, (c) => {
      // A slow reader: every 64 MiB it stops reading for a while.
      let sincePause = 0;
      done = new Promise((resolve) =>
        c.on('data', (d: Buffer) => {
          hash.update(d);
          received += d.length;
          sincePause += d.length;
          if (sincePause >= 64 << 20) {
            sincePause = 0;
            c.pause();
            setTimeout(() => c.resume(), 150);
          }
          if (received === total) resolve();
        }),
      );
    });
    const mss = 65480;
    const chunk = Buffer.alloc(mss);
    for (let i = 0; i < mss; i++) chunk[i] = (i * 7) & 0xff;
    const expected = createHash('sha256');
    let sent = 0;
    let acked = 0;
    let window = 65535 << 7;
    let minWindow = window;
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    while (acked < total) {
      while (sent < total && sent - acked + mss <= window) {
        const n = Math.min(mss, total - sent);
        chunk[0] = sent & 0xff; // vary the content per segment
        const payload = chunk.subarray(0, n);
        expected.update(payload);
        s.sendTcp({ sport: 45000, dport: port, seq: (1001 + sent) >>> 0, ack: iss + 1, flags: ACK, payload });
        sent += n;
      }
      const a = await s.nextTcp(45000, ACK, 30_000);
      acked = (a.ack - 1001) >>> 0;
      window = a.window << 7;
      minWindow = Math.min(minWindow, window);
      rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
    }
    await done;
    expect(received).toBe(total);
    expect(hash.digest('hex')).toBe(expected.digest('hex'));
    expect(minWindow).toBeLessThan(1 << 20); // the slow reader closed the window…
    expect(rssPeak - rssBefore).toBeLessThan(256 << 20); // …instead of growing our memory
    host.destroy();
  }, 180_000);
});
