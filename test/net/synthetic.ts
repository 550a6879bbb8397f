/**
 * Synthetic guest for unit pins: drives a flow shard (or the guest-facing
 * side) in this thread with hand-built IPv4 packets and captures the frames
 * it sends back, so each test can state exact sequence numbers, flags and
 * windows. Real sockets on the host side; no worker threads, no guest kernel.
 */
import { pino } from 'pino';
import { type NetConfig, type NetworkOptions, resolveNetConfig } from '../../src/actors/net/config.js';
import { newFlowHashKey } from '../../src/actors/net/flow-hash.js';
import FlowShardKind from '../../src/actors/net/flow-shard.js';
import type { FrameBuilder, ShardMessage } from '../../src/actors/net/messages.js';
import { writeIp } from '../../src/protocol/net/arp.js';
import { finish, pseudoHeaderSum, sum16 } from '../../src/protocol/net/checksum.js';
import { ETH_HEADER } from '../../src/protocol/net/ethernet.js';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  newIpv4View,
  parseIpv4,
  writeIpv4Header,
} from '../../src/protocol/net/ipv4.js';
import { newTcpView, parseTcp, type TcpView } from '../../src/protocol/net/tcp.js';
import { newUdpView, parseUdp } from '../../src/protocol/net/udp.js';
import type { Actor, ActorContext, Reply } from '../../src/runtime/actor.js';

export const GUEST = 0x0a00020f; // 10.0.2.15
export const GATEWAY = 0x0a000202; // 10.0.2.2
export const DNS = 0x0a000203; // 10.0.2.3

/** A TCP segment the shard sent, decoded (payload copied). */
export interface SeenTcp extends TcpView {
  src: number;
  dst: number;
  data: Buffer;
}

export interface SeenUdp {
  src: number;
  srcPort: number;
  dstPort: number;
  data: Buffer;
}

export interface TcpOut {
  sport: number;
  dst?: number;
  dport: number;
  seq: number;
  ack?: number;
  flags: number;
  window?: number;
  mss?: number;
  wscale?: number;
  payload?: Uint8Array;
  /** Corrupt the checksum on purpose. */
  badChecksum?: boolean;
}

/** A structured log event of the shard (pino's JSON line, parsed). */
export type LogEvent = Record<string, unknown>;

/** Pending `next…()` calls: each waits for the first item its predicate matches, or times out. */
class Matchers<T> {
  private pending: { match: (item: T) => boolean; resolve: (item: T) => void }[] = [];

  get size(): number {
    return this.pending.length;
  }

  /** Hands `item` to the oldest waiter that matches it; returns whether one did. */
  offer(item: T): boolean {
    const i = this.pending.findIndex((w) => w.match(item));
    if (i < 0) return false;
    this.pending.splice(i, 1)[0].resolve(item);
    return true;
  }

  wait(match: (item: T) => boolean, timeoutMs: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = this.pending.filter((w) => w.resolve !== done);
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      const done = (item: T) => {
        clearTimeout(timer);
        resolve(item);
      };
      this.pending.push({ match, resolve: done });
    });
  }
}

export class SyntheticShard {
  readonly config: NetConfig;
  readonly shard: Actor<ShardMessage, string>;
  readonly frames: Uint8Array[] = [];
  private readonly frameWaiters = new Matchers<Uint8Array>();
  /** When set, tell() reports a backed-up guest path (frames are still captured). */
  backlogged = false;
  private writableWaiters: (() => void)[] = [];
  private readonly logWaiters = new Matchers<LogEvent>();
  readonly sandbox = 1;

  constructor(opts: NetworkOptions = {}) {
    this.config = resolveNetConfig(opts);
    // Debug level, so the shard's flow events exist; tests await them (nextLog)
    // instead of polling stats for the effect of a protocol timer.
    const log = pino({ level: 'debug' }, { write: (line: string) => this.onLog(line) });
    const link = {
      tell: (msg: { frame: Uint8Array | FrameBuilder }) => {
        const f = msg.frame;
        let bytes: Uint8Array;
        if (f instanceof Uint8Array) bytes = f.slice();
        else {
          bytes = new Uint8Array(f.length);
          f.write(bytes, 0);
        }
        this.deliver(bytes);
        return !this.backlogged;
      },
      writable: () =>
        this.backlogged ? new Promise<void>((r) => this.writableWaiters.push(r)) : Promise.resolve(),
    };
    const ctx = {
      id: 1,
      name: 'shard',
      kind: 'net.flow-shard',
      thread: 0,
      log,
      ref: () => link,
      fail: (err: unknown) => {
        throw err;
      },
    } as unknown as ActorContext<ShardMessage>;
    this.shard = FlowShardKind.create(ctx, { index: 0, count: 1, hashKey: newFlowHashKey() });
  }

  async attach(): Promise<void> {
    await this.ask({
      type: 'attach',
      sandbox: this.sandbox,
      link: { id: 9, thread: 0, name: 'link' },
      config: JSON.stringify(this.config),
    });
  }

  /** Releases a simulated backlog. */
  drainBacklog(): void {
    this.backlogged = false;
    for (const w of this.writableWaiters.splice(0)) w();
  }

  ask(msg: ShardMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      const reply = Object.assign((v: string) => resolve(v), {
        error: reject,
        expected: true,
      }) as Reply<string>;
      const r = this.shard.receive(msg, reply);
      if (r) r.catch(reject);
    });
  }

  /** Adds an inbound forward from an ephemeral 127.0.0.1 port; returns the rule. */
  async forward(
    guestPort: number,
    proto = 6,
  ): Promise<{ hostIp: string; hostPort: number; guestPort: number }> {
    return JSON.parse(
      await this.ask({
        type: 'forward',
        sandbox: this.sandbox,
        proto,
        hostIp: '127.0.0.1',
        hostPort: 0,
        guestPort,
      }),
    );
  }

  stats(): Promise<Record<string, any>> {
    return this.ask({ type: 'stats' }).then((s) => JSON.parse(s));
  }

  private deliver(frame: Uint8Array): void {
    if (!this.frameWaiters.offer(frame)) this.frames.push(frame);
  }

  private onLog(line: string): void {
    if (process.env.ACTORVM_TEST_LOG) process.stderr.write(line);
    if (this.logWaiters.size === 0) return;
    this.logWaiters.offer(JSON.parse(line) as LogEvent);
  }

  /** Resolves with the next log event matching `match` (logged from now on). */
  nextLog(match: (e: LogEvent) => boolean, timeoutMs = 10_000): Promise<LogEvent> {
    return this.logWaiters.wait(match, timeoutMs, 'a log event of the shard');
  }

  /** Resolves with the first captured (or future) frame matching `match`, removing it. */
  next(match: (f: Uint8Array) => boolean, timeoutMs = 10_000): Promise<Uint8Array> {
    const i = this.frames.findIndex(match);
    if (i >= 0) return Promise.resolve(this.frames.splice(i, 1)[0]);
    return this.frameWaiters.wait(match, timeoutMs, 'a frame from the shard');
  }

  /** Next TCP segment toward the guest port `gport` (optionally with all of `flags`). */
  async nextTcp(gport: number, flags = 0, timeoutMs?: number): Promise<SeenTcp> {
    const f = await this.next((fr) => {
      const t = decodeTcp(fr);
      return t !== undefined && t.dstPort === gport && (t.flags & flags) === flags;
    }, timeoutMs);
    return decodeTcp(f)!;
  }

  async nextUdp(gport: number, timeoutMs?: number): Promise<SeenUdp> {
    const f = await this.next((fr) => decodeUdp(fr)?.dstPort === gport, timeoutMs);
    return decodeUdp(f)!;
  }

  /** Sends one TCP segment from the guest. */
  sendTcp(o: TcpOut): void {
    this.packet(buildTcpPacket(o));
  }

  sendUdp(sport: number, dst: number, dport: number, payload: Uint8Array): void {
    this.packet(buildUdpPacket(GUEST, sport, dst, dport, payload));
  }

  packet(pkt: Uint8Array): void {
    const r = this.shard.receive({ type: 'packet', sandbox: this.sandbox, packet: pkt }, noReply);
    if (r) throw new Error('packet handling must be synchronous');
  }

  stop(): void {
    this.shard.stop?.('stop');
  }
}

const noReply = Object.assign(() => {}, { error: () => {}, expected: false }) as Reply<string>;

export function buildTcpPacket(o: TcpOut): Uint8Array {
  const payload = o.payload ?? new Uint8Array(0);
  const opts: number[] = [];
  if (o.mss) opts.push(2, 4, o.mss >>> 8, o.mss & 0xff);
  if (o.wscale !== undefined) opts.push(1, 3, 3, o.wscale);
  const tcpLen = 20 + opts.length + payload.length;
  const pkt = new Uint8Array(20 + tcpLen);
  const dst = o.dst ?? GATEWAY;
  const t = writeIpv4Header(pkt, 0, IPPROTO_TCP, GUEST, dst, tcpLen);
  pkt[t] = o.sport >>> 8;
  pkt[t + 1] = o.sport & 0xff;
  pkt[t + 2] = o.dport >>> 8;
  pkt[t + 3] = o.dport & 0xff;
  writeIp(pkt, t + 4, o.seq >>> 0);
  writeIp(pkt, t + 8, (o.ack ?? 0) >>> 0);
  pkt[t + 12] = ((20 + opts.length) / 4) << 4;
  pkt[t + 13] = o.flags;
  const w = o.window ?? 65535;
  pkt[t + 14] = w >>> 8;
  pkt[t + 15] = w & 0xff;
  pkt.set(opts, t + 20);
  pkt.set(payload, t + 20 + opts.length);
  let ck = finish(sum16(pkt, t, tcpLen, pseudoHeaderSum(GUEST, dst, IPPROTO_TCP, tcpLen)));
  if (o.badChecksum) ck ^= 0x5555;
  pkt[t + 16] = ck >>> 8;
  pkt[t + 17] = ck & 0xff;
  return pkt;
}

export function buildUdpPacket(
  src: number,
  sport: number,
  dst: number,
  dport: number,
  payload: Uint8Array,
): Uint8Array {
  const ulen = 8 + payload.length;
  const pkt = new Uint8Array(20 + ulen);
  const u = writeIpv4Header(pkt, 0, IPPROTO_UDP, src, dst, ulen);
  pkt[u] = sport >>> 8;
  pkt[u + 1] = sport & 0xff;
  pkt[u + 2] = dport >>> 8;
  pkt[u + 3] = dport & 0xff;
  pkt[u + 4] = ulen >>> 8;
  pkt[u + 5] = ulen & 0xff;
  pkt.set(payload, u + 8);
  const ck = finish(sum16(pkt, u, ulen, pseudoHeaderSum(src, dst, IPPROTO_UDP, ulen)));
  pkt[u + 6] = ck >>> 8;
  pkt[u + 7] = ck & 0xff;
  return pkt;
}

/** Decodes a TCP frame (Ethernet included), verifying every checksum; undefined if not TCP. */
export function decodeTcp(frame: Uint8Array): SeenTcp | undefined {
  const ip = newIpv4View();
  if (parseIpv4(frame, ETH_HEADER, frame.length - ETH_HEADER, ip) || ip.proto !== IPPROTO_TCP)
    return undefined;
  const t = newTcpView();
  if (parseTcp(frame, ip.payloadOff, ip.payloadLen, ip.src, ip.dst, true, t)) {
    throw new Error('shard sent a TCP segment with a bad checksum');
  }
  return {
    ...t,
    src: ip.src,
    dst: ip.dst,
    data: Buffer.from(frame.subarray(t.payloadOff, t.payloadOff + t.payloadLen)),
  };
}

export function decodeUdp(frame: Uint8Array): SeenUdp | undefined {
  const ip = newIpv4View();
  if (parseIpv4(frame, ETH_HEADER, frame.length - ETH_HEADER, ip) || ip.proto !== IPPROTO_UDP)
    return undefined;
  const u = newUdpView();
  if (parseUdp(frame, ip.payloadOff, ip.payloadLen, ip.src, ip.dst, u))
    throw new Error('bad UDP checksum from shard');
  return {
    src: ip.src,
    srcPort: u.srcPort,
    dstPort: u.dstPort,
    data: Buffer.from(frame.subarray(u.payloadOff, u.payloadOff + u.payloadLen)),
  };
}
