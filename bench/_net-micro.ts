/**
 * Micro-benches of the NAT, in-process against a synthetic guest (the shard
 * code that runs on a flow worker, without the threads around it):
 * one SYN, flow lookup at 1 / 100 / 1 000 / 10 000 flows, DNS cache hit vs
 * miss, and inbound accept-to-SYN latency. All traffic is on loopback.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { flowHash, newFlowHashKey } from '../src/actors/net/flow-hash.js';
import { type FlowKey, FlowTable } from '../src/actors/net/flow-table.js';
import { buildDnsQuery } from '../src/protocol/net/dns.js';
import { ACK, RST, SYN } from '../src/protocol/net/tcp.js';
import { DNS, GATEWAY, SyntheticShard } from '../test/net/synthetic.js';
import { percentile, round } from './_stats.js';

const now = (): number => performance.now();

function lookupNs(n: number): number {
  const key = newFlowHashKey();
  const table = new FlowTable<FlowKey>();
  const flows: FlowKey[] = [];
  for (let i = 0; i < n; i++) {
    const f = {
      sandbox: 1 + (i % 7),
      proto: 6,
      guestIp: 0x0a00020f,
      guestPort: 10000 + (i % 50000),
      remoteIp: 0x7f000001 + i,
      remotePort: 443,
      hash: 0,
    };
    f.hash = flowHash(key, f.sandbox, f.proto, f.guestIp, f.guestPort, f.remoteIp, f.remotePort);
    table.add(f);
    flows.push(f);
  }
  const order = flows.map((_, i) => (i * 7919) % n);
  const iterations = 2_000_000;
  let found = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) {
    const f = flows[order[i % n]];
    // What a packet costs: hash its key, find its flow.
    const h = flowHash(key, f.sandbox, f.proto, f.guestIp, f.guestPort, f.remoteIp, f.remotePort);
    if (table.get(h, f.sandbox, f.proto, f.guestIp, f.guestPort, f.remoteIp, f.remotePort)) found++;
  }
  const ns = Number(process.hrtime.bigint() - t0) / iterations;
  if (found !== iterations) throw new Error('lookup missed a flow');
  return ns;
}

async function listen(): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((c) => c.on('error', () => {}));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as net.AddressInfo).port };
}

async function synBench(): Promise<{ syn_process_us: number; syn_to_synack_p50_us: number }> {
  const s = new SyntheticShard({ allowHostLoopback: true, newFlowsPerSecond: 1e6, maxFlows: 1e6 });
  await s.attach();
  const { server, port } = await listen();
  const processing: number[] = [];
  const handshake: number[] = [];
  for (let i = 0; i < 400; i++) {
    const sport = 20000 + i;
    const t0 = now();
    s.sendTcp({ sport, dport: port, seq: 1, flags: SYN, mss: 1460, wscale: 7 });
    processing.push(now() - t0);
    await s.nextTcp(sport, SYN | ACK);
    handshake.push(now() - t0);
  }
  s.stop();
  server.close();
  return {
    syn_process_us: round(percentile(processing, 50) * 1000, 1),
    syn_to_synack_p50_us: round(percentile(handshake, 50) * 1000, 1),
  };
}

async function dnsBench(): Promise<{ dns_hit_p50_us: number; dns_miss_p50_us: number }> {
  const upstream = dgram.createSocket('udp4');
  upstream.on('message', (q, r) => {
    const answer = Buffer.concat([
      q.subarray(0, 2),
      Buffer.from([0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]),
      q.subarray(12),
      Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 192, 0, 2, 9]),
    ]);
    upstream.send(answer, r.port, r.address);
  });
  await new Promise<void>((r) => upstream.bind(0, '127.0.0.1', r));
  const s = new SyntheticShard({ dnsUpstream: `127.0.0.1:${upstream.address().port}` });
  await s.attach();
  const time = async (name: string, port: number): Promise<number> => {
    const t0 = now();
    s.sendUdp(port, DNS, 53, buildDnsQuery(port, name));
    await s.nextUdp(port);
    return now() - t0;
  };
  const miss: number[] = [];
  const hit: number[] = [];
  for (let i = 0; i < 300; i++) miss.push(await time(`n${i}.bench.test`, 30000 + i));
  for (let i = 0; i < 300; i++) hit.push(await time('n7.bench.test', 40000 + i));
  s.stop();
  upstream.close();
  return {
    dns_hit_p50_us: round(percentile(hit, 50) * 1000, 1),
    dns_miss_p50_us: round(percentile(miss, 50) * 1000, 1),
  };
}

async function acceptBench(): Promise<{ accept_to_syn_p50_us: number; accept_to_syn_p99_us: number }> {
  const s = new SyntheticShard({ maxFlows: 1e6 });
  await s.attach();
  const rule = await s.forward(7777);
  const samples: number[] = [];
  for (let i = 0; i < 300; i++) {
    const t0 = now();
    const c = net.connect(rule.hostPort, '127.0.0.1');
    c.on('error', () => {});
    const syn = await s.nextTcp(7777, SYN);
    samples.push(now() - t0);
    if (syn.src !== GATEWAY) throw new Error('unexpected SYN source');
    s.sendTcp({ sport: 7777, dport: syn.srcPort, seq: 0, ack: syn.seq + 1, flags: RST | ACK });
    c.destroy();
  }
  s.stop();
  return {
    accept_to_syn_p50_us: round(percentile(samples, 50) * 1000, 1),
    accept_to_syn_p99_us: round(percentile(samples, 99) * 1000, 1),
  };
}

export async function runMicroBenches(): Promise<Record<string, unknown>> {
  const lookups: Record<string, number> = {};
  for (const n of [1, 100, 1000, 10000]) lookups[n] = round(lookupNs(n), 1);
  return {
    flow_lookup_ns: lookups,
    flow_lookup_10000_vs_1: round(lookups[10000] / lookups[1], 2),
    ...(await synBench()),
    ...(await dnsBench()),
    ...(await acceptBench()),
  };
}
