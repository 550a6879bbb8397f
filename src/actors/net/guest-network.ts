/**
 * The guest-facing side of a sandbox's network, hosted by the actor that owns
 * the guest (its VM actor, or a standalone link actor in tests and benches).
 *
 * In: the guest's frame stream (QEMU `-netdev stream`, or the agent's TAP
 * relay: 4-byte big-endian length + Ethernet frame). ARP for the gateway and
 * DNS addresses, DHCP, and pings to the gateway are answered here; every
 * other IPv4 packet goes to the flow shard its keyed flow hash picks, over the
 * ring. A backed-up ring pauses the guest stream (backpressure, no drops).
 *
 * Out: frames from the shards (and local answers) are copied into a batch
 * with their length prefixes — the guest's MAC written in on the way — and
 * the batch is written to the stream once per turn of the event loop. Batches
 * live in one reusable circular buffer (guest-output.ts), not fresh buffers.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { HANDOFF_ACK_PORT, isHandoffAck } from '../../protocol/handoff.js';
import { macToString, parseMac } from '../../protocol/net/addr.js';
import { ARP_REQUEST, type ArpView, buildArpReply, parseArp } from '../../protocol/net/arp.js';
import { DHCP_SERVER_PORT } from '../../protocol/net/dhcp.js';
import { parseDnsQuestion } from '../../protocol/net/dns.js';
import {
  ETH_HEADER,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  etherType,
  isForUs,
} from '../../protocol/net/ethernet.js';
import { FrameDecoder, FramingError, writeFrameLength } from '../../protocol/net/frame-stream.js';
import {
  buildIcmpFrame,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  newIcmpView,
  parseIcmp,
} from '../../protocol/net/icmp.js';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, newIpv4View, parseIpv4 } from '../../protocol/net/ipv4.js';
import type { ActorRef } from '../../runtime/actor-ref.js';
import type { NetConfig } from './config.js';
import { DhcpServer } from './dhcp-server.js';
import { type FlowHashKey, flowHash, stringHash } from './flow-hash.js';
import { GuestOutput } from './guest-output.js';
import type { ShardMessage } from './messages.js';

/** Bytes we let queue toward a guest that does not read before dropping frames. */
const GUEST_BACKLOG_LIMIT = 32 << 20;
const BATCH_BYTES = 512 * 1024;
/** Outgoing bytes in flight in the reusable buffer; beyond it frames are written on their own. */
const OUTPUT_BYTES = 4 << 20;
/** Reusable read buffer of a connected frame stream: many 64 KiB frames per read. */
const READ_BUFFER = 1 << 20;

export interface GuestNetworkStats {
  sandbox: number;
  guestMac: string | null;
  framesIn: number;
  bytesIn: number;
  framesOut: number;
  bytesOut: number;
  toShards: number;
  drops: Record<string, number>;
  dhcp: { offers: number; acks: number; naks: number };
}

export class GuestNetwork {
  readonly gatewayMac: Uint8Array;
  guestMac: Uint8Array | undefined;
  private stream: Duplex | undefined;
  private readonly decoder = new FrameDecoder((buf, off, len) => this.onFrame(buf, off, len));
  private readonly dhcp: DhcpServer;
  private readonly ip = newIpv4View();
  private readonly arp: ArpView = { op: 0, senderMac: new Uint8Array(6), senderIp: 0, targetIp: 0 };
  private readonly icmp = newIcmpView();
  private readonly drops = new Map<string, number>();
  private framesIn = 0;
  private bytesIn = 0;
  private framesOut = 0;
  private bytesOut = 0;
  private toShards = 0;
  private readonly out = new GuestOutput(OUTPUT_BYTES);
  private flushScheduled = false;
  private pausedForShards = false;

  /** The guest's MAC is fixed when given (a VM's NIC): frames from any other source MAC are dropped. */
  private readonly fixedMac: boolean;
  /** A restored machine's handoff, waiting for its ack datagram. */
  private handoffWait: { nonce: Uint8Array; resolve: (ms: number) => void; since: number } | undefined;
  /** Test hook: handoff acks are dropped as they arrive (to exercise the fallback). */
  dropHandoffAcks = false;

  constructor(
    readonly sandbox: number,
    readonly config: NetConfig,
    private readonly shards: ActorRef<ShardMessage, string>[],
    private readonly hashKey: FlowHashKey,
    private readonly log: Logger,
    guestMac?: string,
  ) {
    this.gatewayMac = parseMac(config.gatewayMac);
    this.dhcp = new DhcpServer(config, this.gatewayMac);
    this.fixedMac = guestMac !== undefined;
    if (guestMac) this.guestMac = parseMac(guestMac);
  }

  /** Starts relaying a frame stream we were handed (e.g. a child's stdio socket). */
  attachStream(stream: Duplex): void {
    stream.on('data', (chunk: Buffer) => this.onChunk(chunk, stream));
    this.adopt(stream);
  }

  /**
   * Connects to a frame stream served on a Unix socket (QEMU's `-netdev
   * stream,server=on`, the agent's `--tap-listen`). A socket we connect can
   * read into one reusable buffer (`onread`): no allocation per read, and
   * reads big enough that a 64 KiB frame is rarely split — the guest-side
   * receive path then costs one copy per frame, into the ring.
   */
  connect(path: string): Promise<net.Socket> {
    const buffer = Buffer.allocUnsafe(READ_BUFFER);
    return new Promise((resolve, reject) => {
      const socket: net.Socket = net.connect({
        path,
        onread: {
          buffer,
          callback: (n: number, buf: Uint8Array) => {
            this.onChunk(buf.subarray(0, n), socket);
            return true;
          },
        },
      });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        this.adopt(socket);
        resolve(socket);
      });
    });
  }

  /**
   * One chunk of the frame stream, for streams whose reads the caller
   * receives itself (`onread`). A framing error drops the stream.
   */
  feed(chunk: Uint8Array): void {
    this.onChunk(chunk, this.stream);
  }

  private onChunk(chunk: Uint8Array, stream: Duplex | undefined): void {
    try {
      this.decoder.push(chunk);
    } catch (err) {
      if (!(err instanceof FramingError)) throw err;
      this.drop('framing');
      this.log.warn(
        { event: 'net.framing_error', sandbox: this.sandbox, err },
        'bad frame length; stream dropped',
      );
      stream?.destroy();
    }
  }

  /** Makes `stream` the way to the guest (its reads arrive through `feed`). */
  adopt(stream: Duplex): void {
    this.flush();
    this.out.reset();
    this.stream = stream;
    stream.on('error', (err) => this.log.debug({ event: 'net.stream_error', err }, 'guest stream error'));
    stream.on('close', () => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      this.out.reset();
    });
  }

  /**
   * Resolves (with the ms it took) when the guest's handoff ack for `nonce`
   * arrives: a UDP datagram to the gateway's ack port from the guest's MAC
   * (checked like every frame) and address, carrying the nonce
   * (src/protocol/handoff.ts). One handoff at a time; `cancel` stops waiting.
   */
  awaitHandoffAck(nonce: Uint8Array): { acked: Promise<number>; cancel(): void } {
    let cancel = (): void => {};
    const acked = new Promise<number>((resolve) => {
      const wait = { nonce, resolve, since: performance.now() };
      this.handoffWait = wait;
      cancel = () => {
        if (this.handoffWait === wait) this.handoffWait = undefined;
      };
    });
    return { acked, cancel };
  }

  get attached(): boolean {
    return this.stream !== undefined;
  }

  closeStream(): void {
    this.stream?.destroy();
    this.stream = undefined;
    this.out.reset();
  }

  // ---- guest → us ------------------------------------------------------------

  private onFrame(buf: Uint8Array, off: number, len: number): void {
    this.framesIn++;
    this.bytesIn += len;
    if (!isForUs(buf, off, this.gatewayMac)) {
      this.drop('not_for_us');
      return;
    }
    if (this.fixedMac ? !this.fromGuestMac(buf, off + 6) : !this.learnMac(buf, off + 6)) {
      this.drop('spoofed_mac');
      return;
    }
    const type = etherType(buf, off);
    if (type === ETHERTYPE_IPV4) this.onIpv4(buf, off + ETH_HEADER, len - ETH_HEADER);
    else if (type === ETHERTYPE_ARP) this.onArp(buf, off + ETH_HEADER, len - ETH_HEADER);
    else this.drop('ethertype');
  }

  private fromGuestMac(buf: Uint8Array, at: number): boolean {
    const m = this.guestMac;
    return (
      m !== undefined &&
      m[0] === buf[at] &&
      m[1] === buf[at + 1] &&
      m[2] === buf[at + 2] &&
      m[3] === buf[at + 3] &&
      m[4] === buf[at + 4] &&
      m[5] === buf[at + 5]
    );
  }

  /** Without a fixed MAC, the guest's is learned from its frames (false: not a usable source). */
  private learnMac(buf: Uint8Array, at: number): boolean {
    if (this.fromGuestMac(buf, at)) return true;
    if (buf[at] & 1) return false; // a group address is never a source
    this.guestMac = buf.slice(at, at + 6);
    this.log.info(
      { event: 'net.guest_mac', sandbox: this.sandbox, mac: macToString(this.guestMac) },
      'guest MAC learned',
    );
    return true;
  }

  private onArp(buf: Uint8Array, off: number, len: number): void {
    const a = this.arp;
    if (!parseArp(buf, off, len, a)) {
      this.drop('arp_malformed');
      return;
    }
    const cfg = this.config;
    // An ARP probe (sender 0.0.0.0) is fine; claiming another address is not.
    if (a.senderIp !== cfg.guestIp && a.senderIp !== 0) {
      this.drop('spoofed_source');
      return;
    }
    if (a.op !== ARP_REQUEST) return;
    if (a.targetIp !== cfg.gatewayIp && a.targetIp !== cfg.dnsIp) return; // not ours to answer
    this.toGuest(buildArpReply(this.gatewayMac, a.targetIp, a.senderMac.slice(), a.senderIp));
  }

  private onIpv4(buf: Uint8Array, off: number, len: number): void {
    const ip = this.ip;
    const bad = parseIpv4(buf, off, len, ip);
    if (bad) {
      this.drop(bad);
      return;
    }
    const cfg = this.config;
    const t = ip.payloadOff;
    if (ip.proto === IPPROTO_UDP && ip.payloadLen >= 8) {
      const dport = (buf[t + 2] << 8) | buf[t + 3];
      // DHCP is the one thing a guest sends before it has its address.
      if (dport === DHCP_SERVER_PORT && (ip.src === 0 || ip.src === cfg.guestIp)) {
        const reply = this.dhcp.handle(buf, t + 8, ip.payloadLen - 8);
        if (reply) this.toGuest(reply);
        return;
      }
    }
    if (ip.src !== cfg.guestIp) {
      this.drop('spoofed_source');
      return;
    }
    if (ip.proto === IPPROTO_UDP && ip.payloadLen >= 8) {
      const dport = (buf[t + 2] << 8) | buf[t + 3];
      if (ip.dst === cfg.gatewayIp && dport === HANDOFF_ACK_PORT) {
        this.onHandoffAck(buf, t + 8, ip.payloadLen - 8);
        return;
      }
      if (ip.dst === cfg.dnsIp && dport === 53) {
        // All queries for a name go to one shard, so its cache answers them.
        const q = parseDnsQuestion(buf, t + 8, ip.payloadLen - 8);
        const h = q ? stringHash(this.hashKey, q.name) : 0;
        this.toShard(h, buf, off, ip.totalLen);
        return;
      }
    }
    if (ip.proto === IPPROTO_ICMP && (ip.dst === cfg.gatewayIp || ip.dst === cfg.dnsIp)) {
      this.answerPing(buf);
      return;
    }
    if (ip.proto === IPPROTO_TCP || ip.proto === IPPROTO_UDP) {
      if (ip.payloadLen < 4) {
        this.drop('transport_short');
        return;
      }
      const sport = (buf[t] << 8) | buf[t + 1];
      const dport = (buf[t + 2] << 8) | buf[t + 3];
      this.toShard(
        flowHash(this.hashKey, this.sandbox, ip.proto, ip.src, sport, ip.dst, dport),
        buf,
        off,
        ip.totalLen,
      );
      return;
    }
    if (ip.proto === IPPROTO_ICMP) {
      const ident = ip.payloadLen >= 6 ? (buf[t + 4] << 8) | buf[t + 5] : 0;
      this.toShard(
        flowHash(this.hashKey, this.sandbox, IPPROTO_ICMP, ip.src, ident, ip.dst, 0),
        buf,
        off,
        ip.totalLen,
      );
      return;
    }
    this.drop('protocol');
  }

  /** Datagrams to the ack port end here, awaited or not: they never reach a host socket. */
  private onHandoffAck(buf: Uint8Array, off: number, len: number): void {
    const w = this.handoffWait;
    if (!w || !isHandoffAck(buf, off, len, w.nonce)) {
      this.drop('handoff_ack_unexpected');
      return;
    }
    if (this.dropHandoffAcks) {
      this.drop('handoff_ack_test_drop');
      return;
    }
    this.handoffWait = undefined;
    w.resolve(performance.now() - w.since);
  }

  private toShard(hash: number, buf: Uint8Array, off: number, len: number): void {
    const shard = this.shards[hash % this.shards.length];
    this.toShards++;
    if (!shard.tell({ type: 'packet', sandbox: this.sandbox, packet: buf.subarray(off, off + len) })) {
      // The ring to that shard is full: stop reading the guest until it drains.
      if (!this.pausedForShards && this.stream) {
        this.pausedForShards = true;
        const stream = this.stream;
        stream.pause();
        void shard.writable().then(() => {
          this.pausedForShards = false;
          stream.resume();
        });
      }
    }
  }

  private answerPing(buf: Uint8Array): void {
    const ip = this.ip;
    const v = this.icmp;
    const bad = parseIcmp(buf, ip.payloadOff, ip.payloadLen, v);
    if (bad) {
      this.drop(bad);
      return;
    }
    if (v.type !== ICMP_ECHO_REQUEST || !this.guestMac) return;
    this.toGuest(
      buildIcmpFrame(
        this.guestMac,
        this.gatewayMac,
        ip.dst,
        ip.src,
        ICMP_ECHO_REPLY,
        0,
        ((v.ident << 16) | v.seq) >>> 0,
        buf.slice(v.dataOff, v.dataOff + v.dataLen),
      ),
    );
  }

  // ---- us → guest ----------------------------------------------------------------

  /** A frame from a shard (a ring view, valid during this call) or a locally built one. */
  toGuest(frame: Uint8Array): void {
    const stream = this.stream;
    if (!stream) {
      this.drop('no_guest');
      return;
    }
    if (stream.writableLength > GUEST_BACKLOG_LIMIT) {
      this.drop('guest_backlog');
      return;
    }
    const need = 4 + frame.length;
    const out = this.out;
    if (out.batchBytes + need > BATCH_BYTES || !out.fitsInBatch(need)) this.flush();
    const at = out.reserve(need);
    if (at < 0) {
      // The guest is this far behind: the frame goes on its own, after what is queued.
      const single = Buffer.allocUnsafe(need);
      writeFrameLength(single, 0, frame.length);
      single.set(frame, 4);
      this.stampGuestMac(single, 4);
      stream.write(single);
      this.count(frame.length);
      return;
    }
    writeFrameLength(out.buf, at, frame.length);
    out.buf.set(frame, at + 4);
    this.stampGuestMac(out.buf, at + 4);
    this.count(frame.length);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flush);
    }
  }

  private count(len: number): void {
    this.framesOut++;
    this.bytesOut += len;
  }

  /** Shards do not know the guest's MAC: write it into the frame's destination. */
  private stampGuestMac(buf: Uint8Array, at: number): void {
    if (this.guestMac) buf.set(this.guestMac, at);
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const batch = this.out.take();
    if (!batch) return;
    if (this.stream) this.stream.write(batch.data, batch.release);
    else batch.release();
  };

  private drop(reason: string): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
  }

  stats(): GuestNetworkStats {
    return {
      sandbox: this.sandbox,
      guestMac: this.guestMac ? macToString(this.guestMac) : null,
      framesIn: this.framesIn,
      bytesIn: this.bytesIn,
      framesOut: this.framesOut,
      bytesOut: this.bytesOut,
      toShards: this.toShards,
      drops: Object.fromEntries(this.drops),
      dhcp: this.dhcp.stats,
    };
  }
}
