/**
 * Bad input and failure: random and mutated packets never crash a shard or
 * the guest-facing side (fast-check), and a shard crashed on purpose is
 * restarted by its supervisor and re-attached while flows owned by the other
 * shard carry on.
 */
import net from 'node:net';
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveNetConfig } from '../../src/actors/net/config.js';
import { newFlowHashKey } from '../../src/actors/net/flow-hash.js';
import { GuestNetwork } from '../../src/actors/net/guest-network.js';
import { finish, pseudoHeaderSum, sum16 } from '../../src/protocol/net/checksum.js';
import { ACK, SYN } from '../../src/protocol/net/tcp.js';
import { startNetHarness } from './fixtures.js';
import { buildTcpPacket, buildUdpPacket, DNS, GUEST, SyntheticShard } from './synthetic.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** Re-computes IPv4 and transport checksums so a mutated packet reaches the deeper parsers. */
function fixChecksums(p: Uint8Array): Uint8Array {
  if (p.length < 20) return p;
  const ihl = (p[0] & 0x0f) * 4;
  if (ihl < 20 || ihl > p.length) return p;
  p[10] = 0;
  p[11] = 0;
  const ck = finish(sum16(p, 0, ihl));
  p[10] = ck >>> 8;
  p[11] = ck & 0xff;
  const proto = p[9];
  const len = p.length - ihl;
  const at = proto === 6 ? 16 : proto === 17 ? 6 : -1;
  if (at >= 0 && len > at + 1) {
    p[ihl + at] = 0;
    p[ihl + at + 1] = 0;
    const src = ((p[12] << 24) | (p[13] << 16) | (p[14] << 8) | p[15]) >>> 0;
    const dst = ((p[16] << 24) | (p[17] << 16) | (p[18] << 8) | p[19]) >>> 0;
    const t = finish(sum16(p, ihl, len, pseudoHeaderSum(src, dst, proto, len)));
    p[ihl + at] = t >>> 8;
    p[ihl + at + 1] = t & 0xff;
  }
  return p;
}

describe('shard under random input (property)', () => {
  it('never throws, whatever the packet, and keeps serving', async () => {
    // Mutations rewrite destination addresses: only the gateway (host loopback) may be
    // reached, so no fuzzed packet can ever leave this machine.
    const s = new SyntheticShard({ allowOut: ['10.0.2.2/32'], dnsUpstream: '127.0.0.1:9' });
    cleanups.push(() => s.stop());
    await s.attach();
    const seeds = [
      buildTcpPacket({ sport: 1234, dport: 80, seq: 1, flags: SYN, mss: 1460, wscale: 7 }),
      buildTcpPacket({ sport: 1235, dport: 80, seq: 9, ack: 3, flags: ACK, payload: new Uint8Array(40) }),
      buildUdpPacket(GUEST, 5353, DNS, 53, new Uint8Array(30)),
      buildUdpPacket(GUEST, 5354, 0x0a000202, 9, new Uint8Array(8)),
    ];
    const mutated = fc
      .record({
        seed: fc.constantFrom(...seeds),
        flips: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), {
          maxLength: 12,
        }),
        cut: fc.option(fc.nat()),
        tail: fc.uint8Array({ maxLength: 64 }),
        fix: fc.boolean(),
      })
      .map(({ seed, flips, cut, tail, fix }) => {
        let p = Uint8Array.from([...seed, ...tail]);
        for (const f of flips) p[f.at % p.length] = f.value;
        if (cut !== null) p = p.subarray(0, cut % (p.length + 1));
        return fix ? fixChecksums(p.slice()) : p;
      });
    const random = fc.uint8Array({ maxLength: 200 }).map((p) => (p.length > 20 ? fixChecksums(p) : p));
    fc.assert(
      fc.property(fc.oneof(mutated, random), (pkt) => {
        s.packet(pkt);
      }),
      { numRuns: 5000 },
    );
    const server = net.createServer((c) => c.on('error', () => {}));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => void server.close());
    const port = (server.address() as net.AddressInfo).port;
    s.sendTcp({ sport: 50000, dport: port, seq: 1, flags: SYN });
    await s.nextTcp(50000, SYN | ACK);
    const st = await s.stats();
    expect(st.packetsIn).toBeGreaterThan(5000);
    const flows = JSON.parse(await s.ask({ type: 'flows', sandbox: 0 })) as { host: string }[];
    expect(flows.every((f) => f.host.startsWith('127.0.0.1:'))).toBe(true);
  });
});

describe('guest-facing side under random input (property)', () => {
  it('never throws on random frames and drops the stream on an impossible length', () => {
    const log = pino({ level: 'silent' });
    const told: Uint8Array[] = [];
    const shard = {
      tell: (m: { packet: Uint8Array }) => told.push(m.packet.slice()) > 0,
      writable: async () => {},
    };
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 14, maxLength: 300 }), { maxLength: 20 }), (frames) => {
        const g = new GuestNetwork(1, resolveNetConfig(), [shard as never], newFlowHashKey(), log);
        const stream = new PassThrough();
        g.attachStream(stream);
        for (const f of frames) {
          const hdr = Buffer.alloc(4);
          hdr.writeUInt32BE(f.length);
          stream.write(Buffer.concat([hdr, f]));
        }
        expect(stream.destroyed).toBe(false);
      }),
      { numRuns: 500 },
    );
    const g = new GuestNetwork(1, resolveNetConfig(), [shard as never], newFlowHashKey(), log);
    const stream = new PassThrough();
    g.attachStream(stream);
    stream.write(Buffer.from([0, 0, 0, 5, 1, 2, 3, 4, 5])); // length 5 < 14: a framing error
    expect(stream.destroyed).toBe(true);
    expect(g.stats().drops.framing).toBe(1);
  });
});

describe('shard supervision', () => {
  it('restarts a crashed shard and re-attaches it while flows on the other shard continue', async () => {
    const h = await startNetHarness({ shardsPerWorker: 2 });
    cleanups.push(() => h.stop());
    const echo = net.createServer((c) => {
      c.on('error', () => {});
      c.pipe(c);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    cleanups.push(() => void echo.close());
    const port = (echo.address() as net.AddressInfo).port;
    const g = await h.guest({ allowHostLoopback: true });
    const driver = [
      'import socket, sys',
      `conns = [socket.create_connection(("10.0.2.2", ${port})) for _ in range(12)]`,
      'print(" ".join(str(s.getsockname()[1]) for s in conns), flush=True)',
      'for line in sys.stdin:',
      '    out = []',
      '    for s in conns:',
      '        try:',
      '            s.settimeout(5)',
      '            s.sendall(b"x")',
      '            out.append("ok" if s.recv(1) == b"x" else "eof")',
      '        except OSError:',
      '            out.append("reset")',
      '    print(" ".join(out), flush=True)',
    ].join('\n');
    const proc = g.agent.run({ argv: ['python3', '-u', '-c', driver] }, { stdin: 'pipe' });
    const lines: string[] = [];
    const waiters: (() => void)[] = [];
    let partial = '';
    proc.stdout.on('data', (d: Buffer) => {
      partial += d.toString();
      let i = partial.indexOf('\n');
      while (i >= 0) {
        lines.push(partial.slice(0, i));
        partial = partial.slice(i + 1);
        i = partial.indexOf('\n');
        for (const w of waiters.splice(0)) w();
      }
    });
    const nextLine = async (): Promise<string> => {
      while (lines.length === 0) await new Promise<void>((r) => waiters.push(r));
      return lines.shift()!;
    };
    const ports = (await nextLine()).split(' ').map(Number);
    const flows = await h.net.flows(g.sandbox);
    const shardOf = ports.map((p) => flows.find((f) => f.guest === `10.0.2.15:${p}`)!.shard);
    expect(new Set(shardOf).size).toBe(2); // 12 keyed-hash flows landed on both shards

    const victim = h.system.find('flow-shard-0')!;
    const restarted = new Promise<void>((resolve) =>
      h.system.on('restart', (e: { actor: { id: number } }) => e.actor.id === victim.id && resolve()),
    );
    expect(await h.system.injectFailure(victim, 'chaos drill')).toBe(true);
    await restarted;

    proc.stdin!.write('round\n');
    const results = (await nextLine()).split(' ');
    for (const [i, r] of results.entries()) expect(r).toBe(shardOf[i] === 0 ? 'reset' : 'ok');
    // The restarted shard knows the sandbox again: new connections work everywhere.
    const after = await g.agent.exec({
      argv: [
        'python3',
        '-c',
        `import socket\nfor _ in range(8):\n    s = socket.create_connection(("10.0.2.2", ${port}))\n    s.sendall(b"y")\n    assert s.recv(1) == b"y"\nprint("fine")`,
      ],
    });
    expect(after.stdout.toString().trim()).toBe('fine');
    proc.stdin!.end();
    await proc.result;
  });

  it('replays a forward added before a shard crash: the same host port reaches the guest afterwards', async () => {
    const h = await startNetHarness({ shardsPerWorker: 2 });
    cleanups.push(() => h.stop());
    const g = await h.guest();
    // A guest echo server on 8080 (it lives in the guest's network namespace).
    const server = g.agent.run({
      argv: [
        'python3',
        '-u',
        '-c',
        [
          'import socket',
          's = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
          's.bind(("0.0.0.0", 8080)); s.listen(8); print("listening", flush=True)',
          'while True:',
          '    c, _ = s.accept(); c.sendall(c.recv(64)); c.close()',
        ].join('\n'),
      ],
    });
    await new Promise<void>((r) => server.stdout.once('data', () => r()));
    const rule = await h.net.forward(g.sandbox, { guestPort: 8080 });
    const echoOnce = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const c = net.connect(rule.hostPort, '127.0.0.1', () => c.write('ping'));
        let got = '';
        c.on('data', (d) => (got += d));
        c.on('end', () => resolve(got));
        c.on('error', reject);
      });
    expect(await echoOnce()).toBe('ping');

    const owner = (await h.net.stats()).findIndex((st) =>
      (st.forwards as { hostPort: number }[]).some((f) => f.hostPort === rule.hostPort),
    );
    expect(owner).toBeGreaterThanOrEqual(0);
    const victim = h.system.find(`flow-shard-${owner}`)!;
    const replayed = new Promise<void>((resolve) =>
      h.net.on('replayed', (e: { shard: string }) => e.shard === victim.name && resolve()),
    );
    expect(await h.system.injectFailure(victim, 'chaos drill')).toBe(true);
    await replayed;
    expect(await echoOnce()).toBe('ping');
    server.cancel();
    await server.result;
  });
});
