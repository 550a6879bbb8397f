/**
 * A flow-table shard: owns every flow whose keyed hash lands on it, from the
 * first packet to close, with the host sockets behind them. Shards live on
 * the flow workers (never with VM actors), so host-socket I/O and guest frame
 * handling never block each other.
 *
 * Per packet: parse IPv4 and the transport header into reusable views, look
 * the flow up (O(1)), hand the segment/datagram to it. New flows pass the
 * sandbox's egress policy, its new-flow rate limit and its flow cap first;
 * every refusal is counted and logged, and a refused TCP SYN gets a RST.
 */
import dgram from 'node:dgram';
import type net from 'node:net';
import { ipToString } from '../../protocol/net/addr.js';
import { finish, pseudoHeaderSum, sum16 } from '../../protocol/net/checksum.js';
import { ICMP_ECHO_REQUEST, newIcmpView, parseIcmp } from '../../protocol/net/icmp.js';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, newIpv4View, parseIpv4 } from '../../protocol/net/ipv4.js';
import { ACK, newTcpView, parseTcp, RST, SYN, seqAdd } from '../../protocol/net/tcp.js';
import { newUdpView, parseUdp } from '../../protocol/net/udp.js';
import { type Actor, type ActorContext, defineActor, type Reply } from '../../runtime/actor.js';
import type { NetConfig } from './config.js';
import { ShardCounters } from './counters.js';
import { DnsProxy } from './dns-proxy.js';
import type { FlowEndpoints } from './flow-base.js';
import { type FlowHashKey, flowHash } from './flow-hash.js';
import { FlowTable } from './flow-table.js';
import { IcmpProxy } from './icmp-proxy.js';
import { GuestLinkMessages, type ShardMessage, ShardMessages, ShardReplies } from './messages.js';
import { PayloadArena } from './payload-arena.js';
import { checkEgress, classify } from './policy.js';
import { PortForwards } from './port-forwards.js';
import { SandboxNet } from './sandbox-net.js';
import { type TcpEnv, TcpFlow, TcpFrameBuilder } from './tcp-flow.js';
import { type UdpEnv, UdpFlow } from './udp-flow.js';

export interface FlowShardArgs {
  index: number;
  count: number;
  hashKey: FlowHashKey;
}

type Flow = TcpFlow | UdpFlow;

/** A guest-initiated flow: to `remote` as the guest addressed it, really to `hostIp:hostPort`. */
function outbound(
  hash: number,
  guestIp: number,
  guestPort: number,
  remoteIp: number,
  remotePort: number,
  host: { ip: number; port: number },
): FlowEndpoints {
  return {
    hash,
    guestIp,
    guestPort,
    remoteIp,
    remotePort,
    hostIp: ipToString(host.ip),
    hostPort: host.port,
    direction: 'out',
  };
}

/** A flow a host peer opened through a forward: the guest sees it coming from the gateway's ephemeral port. */
function inbound(
  sb: SandboxNet,
  guestPort: number,
  eph: { port: number; hash: number },
  peerIp: string,
  peerPort: number,
): FlowEndpoints {
  const cfg = sb.config;
  return {
    hash: eph.hash,
    guestIp: cfg.guestIp,
    guestPort,
    remoteIp: cfg.gatewayIp,
    remotePort: eph.port,
    hostIp: peerIp,
    hostPort: peerPort,
    direction: 'in',
  };
}

/** Multicast and broadcast destinations: never answered, not even with a RST. */
function isGroupAddress(cfg: NetConfig, ip: number): boolean {
  const c = classify(cfg, ip);
  return c === 'multicast' || c === 'broadcast';
}

/** Inbound UDP flow → its key in `inboundPeers` (kept off the flow object, which outbound flows share). */
const peerKeys = new WeakMap<UdpFlow, string>();

const EPHEMERAL_LO = 32768;
/** Payloads this big go through an arena block (copy once, verify in place); smaller ones are summed directly. */
const ARENA_MIN = 512;
const EPHEMERAL_SPAN = 28232;

class FlowShard implements Actor<ShardMessage, string>, TcpEnv, UdpEnv {
  readonly counters = new ShardCounters();
  readonly builder = new TcpFrameBuilder();
  /** 32 MiB of payload blocks (see payload-arena.ts). */
  readonly arena = new PayloadArena(512);
  readonly log;
  readonly debug: boolean;
  private readonly sandboxes = new Map<number, SandboxNet>();
  /** When each frozen sandbox was frozen. */
  private readonly frozenAt = new Map<number, number>();
  private readonly table = new FlowTable<Flow>();
  private readonly dns: DnsProxy;
  private readonly icmp: IcmpProxy;
  private readonly forwards: PortForwards;
  // Parse views, reused for every packet.
  private readonly ip = newIpv4View();
  private readonly tcp = newTcpView();
  private readonly udp = newUdpView();
  private readonly icmpView = newIcmpView();

  constructor(
    private readonly ctx: ActorContext<ShardMessage>,
    private readonly args: FlowShardArgs,
  ) {
    this.log = ctx.log;
    this.debug = ctx.log.isLevelEnabled('debug');
    this.dns = new DnsProxy(this.counters, ctx.log);
    this.icmp = new IcmpProxy(this.counters, ctx.log);
    this.forwards = new PortForwards({
      acceptTcp: (sb, socket, guestPort) => this.acceptInbound(sb, socket, guestPort),
      datagram: (sb, listener, guestPort, msg, from) =>
        this.inboundDatagram(sb, listener, guestPort, msg, from),
    });
  }

  receive(msg: ShardMessage, reply: Reply<string>): void | Promise<void> {
    switch (msg.type) {
      case 'packet':
        this.onPacket(msg.sandbox, msg.packet);
        return;
      case 'attach': {
        const config = JSON.parse(msg.config) as NetConfig;
        const link = this.ctx.ref(
          { id: msg.link.id, thread: msg.link.thread, name: msg.link.name, kind: 'guest-link' },
          { messages: GuestLinkMessages, replies: ShardReplies },
        );
        this.sandboxes.set(
          msg.sandbox,
          new SandboxNet(msg.sandbox, config, link, this.args.count, Date.now()),
        );
        this.log.info({ event: 'net.sandbox_attached', sandbox: msg.sandbox }, 'sandbox attached');
        reply('{}');
        return;
      }
      case 'detach':
        this.detach(msg.sandbox);
        reply('{}');
        return;
      case 'rebind': {
        const sb = this.sandboxes.get(msg.sandbox);
        if (!sb) {
          reply.error(
            Object.assign(new Error(`sandbox ${msg.sandbox} is not attached`), {
              code: 'ERR_NET_NO_SANDBOX',
            }),
          );
          return;
        }
        this.detach(msg.sandbox);
        const config = JSON.parse(msg.config) as NetConfig;
        this.sandboxes.set(
          msg.sandbox,
          new SandboxNet(msg.sandbox, config, sb.link, this.args.count, Date.now()),
        );
        this.log.info(
          { event: 'net.sandbox_rebound', sandbox: msg.sandbox, sealed: config.policy.sealed },
          'sandbox policy rebound',
        );
        reply('{}');
        return;
      }
      case 'freeze':
        this.freeze(msg.sandbox, msg.frozen);
        reply('{}');
        return;
      case 'forward':
        return this.addForward(msg, reply);
      case 'unforward':
        reply(
          JSON.stringify({
            removed: this.forwards.remove(msg.sandbox, msg.proto === 6 ? 'tcp' : 'udp', msg.hostPort),
          }),
        );
        return;
      case 'flows':
        reply(JSON.stringify(this.flowInfos(msg.sandbox)));
        return;
      case 'stats':
        reply(JSON.stringify(this.statsJson()));
        return;
    }
  }

  // ---- packets from the guest ---------------------------------------------------

  private onPacket(sandbox: number, pkt: Uint8Array): void {
    const c = this.counters;
    c.packetsIn++;
    c.bytesIn += pkt.length;
    const sb = this.sandboxes.get(sandbox);
    if (!sb) {
      c.drop('unknown_sandbox');
      return;
    }
    const ip = this.ip;
    const bad = parseIpv4(pkt, 0, pkt.length, ip);
    if (bad) {
      c.drop(bad);
      return;
    }
    // Only the sandbox's own address may open flows (the guest side checks too; this is the wall).
    if (ip.src !== sb.config.guestIp) {
      c.drop('spoofed_source');
      return;
    }
    const verify = sb.config.verifyChecksums;
    if (ip.proto === IPPROTO_TCP) {
      const t = this.tcp;
      const e = parseTcp(pkt, ip.payloadOff, ip.payloadLen, ip.src, ip.dst, false, t);
      if (e) {
        c.drop(e);
        return;
      }
      const hash = flowHash(this.args.hashKey, sandbox, IPPROTO_TCP, ip.src, t.srcPort, ip.dst, t.dstPort);
      const flow = this.table.get(hash, sandbox, IPPROTO_TCP, ip.src, t.srcPort, ip.dst, t.dstPort) as
        | TcpFlow
        | undefined;
      let block = -1;
      if (verify) {
        block = flow && t.payloadLen >= ARENA_MIN ? this.arena.alloc() : -1;
        if (!this.tcpChecksumOk(pkt, block)) {
          this.arena.release(block);
          c.drop('tcp_checksum');
          return;
        }
      }
      if (flow) flow.onSegment(t, pkt, block);
      else if ((t.flags & (SYN | ACK | RST)) === SYN) this.openTcp(sb, hash, ip.src, ip.dst);
      else if (!(t.flags & RST) && !isGroupAddress(sb.config, ip.dst)) this.rstNoFlow(sb, ip.src, ip.dst);
      return;
    }
    if (ip.proto === IPPROTO_UDP) {
      const u = this.udp;
      const e = parseUdp(pkt, ip.payloadOff, ip.payloadLen, ip.src, ip.dst, u);
      if (e) {
        c.drop(e);
        return;
      }
      const payload = pkt.subarray(u.payloadOff, u.payloadOff + u.payloadLen);
      if (
        ip.dst === sb.config.dnsIp &&
        u.dstPort === 53 &&
        sb.config.policy.dns &&
        !sb.config.policy.sealed
      ) {
        this.dns.onQuery(sb, u.srcPort, payload);
        return;
      }
      const hash = flowHash(this.args.hashKey, sandbox, IPPROTO_UDP, ip.src, u.srcPort, ip.dst, u.dstPort);
      let flow = this.table.get(hash, sandbox, IPPROTO_UDP, ip.src, u.srcPort, ip.dst, u.dstPort) as
        | UdpFlow
        | undefined;
      if (!flow) flow = this.openUdp(sb, hash, ip.src, u.srcPort, ip.dst, u.dstPort);
      flow?.fromGuest(payload);
      return;
    }
    if (ip.proto === IPPROTO_ICMP) {
      const v = this.icmpView;
      const e = parseIcmp(pkt, ip.payloadOff, ip.payloadLen, v);
      if (e) {
        c.drop(e);
        return;
      }
      if (v.type !== ICMP_ECHO_REQUEST) {
        c.drop('icmp_type');
        return;
      }
      const verdict = checkEgress(sb.config, ip.dst, 0);
      if (!verdict.ok) {
        this.refuse(sb, 'icmp', ip.dst, 0, verdict.reason);
        return;
      }
      this.icmp.echo(
        sb,
        ip.dst,
        verdict.hostIp,
        v.ident,
        v.seq,
        pkt.subarray(v.dataOff, v.dataOff + v.dataLen),
      );
      return;
    }
    c.drop('protocol');
  }

  /**
   * Verifies the TCP checksum of the segment in `this.ip`/`this.tcp`. With an
   * arena block the payload is first copied there (the one copy out of the
   * ring it needs anyway) and summed in place.
   */
  private tcpChecksumOk(pkt: Uint8Array, block: number): boolean {
    const ip = this.ip;
    const t = this.tcp;
    const pseudo = pseudoHeaderSum(ip.src, ip.dst, IPPROTO_TCP, ip.payloadLen);
    if (block < 0) return finish(sum16(pkt, ip.payloadOff, ip.payloadLen, pseudo)) === 0;
    this.arena.view(block).set(pkt.subarray(t.payloadOff, t.payloadOff + t.payloadLen));
    // The header is a whole number of 32-bit words, so the payload starts at an even position.
    const header = sum16(pkt, ip.payloadOff, t.payloadOff - ip.payloadOff, pseudo);
    return finish(header + this.arena.sum(block, 0, t.payloadLen)) === 0;
  }

  /**
   * Gate for every new outbound flow: policy, rate, cap. Returns where the
   * flow really goes, or undefined (refused; `silent` when nobody should hear of it).
   */
  private admit(
    sb: SandboxNet,
    proto: 'tcp' | 'udp',
    dst: number,
    port: number,
  ): { ip: number; port: number } | { refused: true; silent: boolean } {
    const verdict = checkEgress(sb.config, dst, port, sb.dnsUpstream);
    if (!verdict.ok) {
      this.refuse(sb, proto, dst, port, verdict.reason);
      return { refused: true, silent: verdict.silent };
    }
    if (sb.flows >= sb.maxFlows) {
      this.refuse(sb, proto, dst, port, 'flow_cap');
      return { refused: true, silent: false };
    }
    if (!sb.limiter.take(Date.now())) {
      this.refuse(sb, proto, dst, port, 'rate_limit');
      return { refused: true, silent: false };
    }
    return { ip: verdict.hostIp, port: verdict.hostPort ?? port };
  }

  private refuse(sb: SandboxNet, proto: string, dst: number, port: number, reason: string): void {
    this.counters.refuse(reason);
    const n = this.counters.refusals.get(reason)!;
    // Every refusal is counted; the log gets the first ones and then every power of two, so a flood stays cheap.
    if (n <= 20 || (n & (n - 1)) === 0) {
      this.log.warn(
        { event: 'net.refused', sandbox: sb.id, proto, dst: ipToString(dst), port, reason, count: n },
        'egress refused',
      );
    }
  }

  private openTcp(sb: SandboxNet, hash: number, src: number, dst: number): void {
    const t = this.tcp;
    const host = this.admit(sb, 'tcp', dst, t.dstPort);
    if ('refused' in host) {
      if (!host.silent) this.sendRst(sb, src, t.srcPort, dst, t.dstPort, 0, seqAdd(t.seq, 1));
      return;
    }
    const flow = new TcpFlow(this, sb, outbound(hash, src, t.srcPort, dst, t.dstPort, host));
    this.addFlow(flow);
    flow.connect(t);
  }

  private openUdp(sb: SandboxNet, hash: number, src: number, sport: number, dst: number, dport: number) {
    const host = this.admit(sb, 'udp', dst, dport);
    if ('refused' in host) return undefined;
    const socket = dgram.createSocket('udp4');
    const flow = new UdpFlow(this, sb, outbound(hash, src, sport, dst, dport, host), socket);
    this.addFlow(flow);
    return flow;
  }

  /** RST for a segment that matches no flow (RFC 9293 §3.10.7.1). */
  private rstNoFlow(sb: SandboxNet, src: number, dst: number): void {
    const t = this.tcp;
    this.counters.drop('tcp_no_flow');
    if (t.flags & ACK) this.sendRst(sb, src, t.srcPort, dst, t.dstPort, t.ack, 0, false);
    else this.sendRst(sb, src, t.srcPort, dst, t.dstPort, 0, seqAdd(t.seq, t.payloadLen + (t.flags & 1)));
  }

  private sendRst(
    sb: SandboxNet,
    guestIp: number,
    guestPort: number,
    remoteIp: number,
    remotePort: number,
    seq: number,
    ack: number,
    withAck = true,
  ): void {
    const b = this.builder
      .set(remoteIp, remotePort, guestIp, guestPort, seq, ack, withAck ? RST | ACK : RST, 0)
      .prepare(sb, undefined, 0, 0);
    this.counters.framesOut++;
    sb.send(b);
  }

  // ---- inbound ------------------------------------------------------------------

  /** An ephemeral gateway port whose flow key hashes to this shard (so the guest's answers come here). */
  private ephemeralPort(
    sb: SandboxNet,
    proto: number,
    guestPort: number,
  ): { port: number; hash: number } | undefined {
    const { hashKey, index, count } = this.args;
    const cfg = sb.config;
    const start = (Math.random() * EPHEMERAL_SPAN) | 0;
    for (let i = 0; i < EPHEMERAL_SPAN; i++) {
      const port = EPHEMERAL_LO + ((start + i) % EPHEMERAL_SPAN);
      const hash = flowHash(hashKey, sb.id, proto, cfg.guestIp, guestPort, cfg.gatewayIp, port);
      if (hash % count !== index) continue;
      if (this.table.get(hash, sb.id, proto, cfg.guestIp, guestPort, cfg.gatewayIp, port)) continue;
      return { port, hash };
    }
    return undefined;
  }

  private acceptInbound(sb: SandboxNet, socket: net.Socket, guestPort: number): void {
    const eph = sb.flows < sb.maxFlows ? this.ephemeralPort(sb, IPPROTO_TCP, guestPort) : undefined;
    if (!eph) {
      this.counters.refuse('inbound_flow_cap');
      socket.destroy();
      return;
    }
    const flow = new TcpFlow(
      this,
      sb,
      inbound(sb, guestPort, eph, socket.remoteAddress ?? '?', socket.remotePort ?? 0),
    );

    this.addFlow(flow);
    flow.accept(socket);
  }

  private readonly inboundPeers = new Map<string, UdpFlow>();

  private inboundDatagram(
    sb: SandboxNet,
    listener: dgram.Socket,
    guestPort: number,
    msg: Buffer,
    from: dgram.RemoteInfo,
  ): void {
    const peer = `${sb.id}/${listener.address().port}/${from.address}:${from.port}`;
    let flow = this.inboundPeers.get(peer);
    if (!flow) {
      const eph = sb.flows < sb.maxFlows ? this.ephemeralPort(sb, IPPROTO_UDP, guestPort) : undefined;
      if (!eph) {
        this.counters.refuse('inbound_flow_cap');
        return;
      }
      flow = new UdpFlow(this, sb, inbound(sb, guestPort, eph, from.address, from.port), listener);

      this.inboundPeers.set(peer, flow);
      peerKeys.set(flow, peer);
      this.addFlow(flow);
    }
    flow.fromHost(msg);
  }

  private async addForward(
    msg: Extract<ShardMessage, { type: 'forward' }>,
    reply: Reply<string>,
  ): Promise<void> {
    const sb = this.sandboxes.get(msg.sandbox);
    if (!sb) {
      reply.error(
        Object.assign(new Error(`sandbox ${msg.sandbox} is not attached`), { code: 'ERR_NET_NO_SANDBOX' }),
      );
      return;
    }
    try {
      const rule = await this.forwards.add(
        sb,
        msg.proto === 6 ? 'tcp' : 'udp',
        msg.hostIp,
        msg.hostPort,
        msg.guestPort,
      );
      this.log.info({ event: 'net.forward_added', ...rule }, 'port forward added');
      reply(JSON.stringify(rule));
    } catch (err) {
      reply.error(err);
    }
  }

  // ---- bookkeeping -----------------------------------------------------------------

  private addFlow(flow: Flow): void {
    this.table.add(flow);
    flow.sb.flows++;
    this.counters.flowsOpened++;
  }

  removeTcp(flow: TcpFlow, reason: string): void {
    this.removeFlow(flow, reason);
  }

  removeUdp(flow: UdpFlow, reason: string): void {
    const peer = peerKeys.get(flow);
    if (peer) {
      this.inboundPeers.delete(peer);
      peerKeys.delete(flow);
    }
    this.removeFlow(flow, reason);
  }

  private removeFlow(flow: Flow, reason: string): void {
    if (!this.table.delete(flow)) return;
    flow.sb.flows--;
    this.counters.flowsClosed++;
    if (this.debug) {
      this.log.debug(
        {
          event: 'flow.removed',
          proto: flow.proto === IPPROTO_TCP ? 'tcp' : 'udp',
          sandbox: flow.sb.id,
          flow: flow.describe(),
          reason,
          bytesToHost: flow.bytesToHost,
          bytesToGuest: flow.bytesToGuest,
        },
        'flow removed',
      );
    }
  }

  private detach(sandbox: number): void {
    const sb = this.sandboxes.get(sandbox);
    if (!sb) return;
    this.forwards.removeSandbox(sandbox);
    for (const f of [...this.table.values()]) {
      if (f.sb !== sb) continue;
      if (f instanceof TcpFlow) f.abort('sandbox_detached');
      else f.close('sandbox_detached');
    }
    this.dns.forget(sb);
    this.icmp.forget(sb);
    this.sandboxes.delete(sandbox);
    this.frozenAt.delete(sandbox);
    this.log.info({ event: 'net.sandbox_detached', sandbox }, 'sandbox detached');
  }

  /** Holds (or releases) the timers of a paused sandbox's flows; thawing credits them the paused time. */
  private freeze(sandbox: number, frozen: boolean): void {
    const sb = this.sandboxes.get(sandbox);
    if (!sb || sb.frozen === frozen) return;
    sb.frozen = frozen;
    const now = Date.now();
    if (frozen) this.frozenAt.set(sandbox, now);
    else {
      const pausedMs = now - (this.frozenAt.get(sandbox) ?? now);
      this.frozenAt.delete(sandbox);
      for (const f of this.table.values()) if (f.sb === sb) f.thawed(pausedMs);
    }
    this.log.info({ event: frozen ? 'net.sandbox_frozen' : 'net.sandbox_thawed', sandbox }, 'flows frozen');
  }

  private flowInfos(sandbox: number): unknown[] {
    const now = Date.now();
    const out: unknown[] = [];
    for (const f of this.table.values()) if (sandbox === 0 || f.sb.id === sandbox) out.push(f.info(now));
    return out;
  }

  private statsJson(): Record<string, unknown> {
    const byState: Record<string, number> = {};
    for (const f of this.table.values()) {
      const k = `${f.proto === IPPROTO_TCP ? 'tcp' : 'udp'}:${f.state}`;
      byState[k] = (byState[k] ?? 0) + 1;
    }
    return {
      shard: this.args.index,
      sandboxes: this.sandboxes.size,
      flows: this.table.size,
      flowsByState: byState,
      ...this.counters.toJSON(),
      dns: this.dns.stats,
      icmp: this.icmp.stats,
      forwards: this.forwards.rules(),
    };
  }

  inspect(): unknown {
    return this.statsJson();
  }

  stop(): void {
    for (const f of [...this.table.values()]) {
      if (f instanceof TcpFlow) f.abort('shard_stopped');
      else f.close('shard_stopped');
    }
    this.forwards.close();
    this.dns.close();
    this.icmp.close();
  }
}

export default defineActor({
  name: 'net.flow-shard',
  module: import.meta.url,
  placement: 'flow',
  messages: ShardMessages,
  replies: ShardReplies,
  create: (ctx: ActorContext<ShardMessage>, args: FlowShardArgs) => new FlowShard(ctx, args),
});
