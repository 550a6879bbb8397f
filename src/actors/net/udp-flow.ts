/**
 * UDP NAT: one connected host socket per guest flow (guest ip:port → remote
 * ip:port), so replies are filtered by the kernel and relayed back as they
 * come. A flow is reaped after `udpIdleTimeoutMs` without traffic either way
 * (lazy timer). Inbound forwards use the same object with the listener's
 * socket and a fixed host peer instead of a socket of their own.
 */
import type dgram from 'node:dgram';
import type { Logger } from 'pino';
import { type UdpEnds, udpFrameLength, writeUdpFrame } from '../../protocol/net/udp.js';
import type { ShardCounters } from './counters.js';
import { FlowBase, type FlowEndpoints } from './flow-base.js';
import type { FrameBuilder } from './messages.js';
import type { SandboxNet } from './sandbox-net.js';

export interface UdpEnv {
  readonly counters: ShardCounters;
  readonly log: Logger;
  readonly debug: boolean;
  removeUdp(flow: UdpFlow, reason: string): void;
}

/** Builds a UDP frame toward the guest in place. */
class UdpFrameBuilder implements FrameBuilder {
  length = 0;
  private readonly ends: UdpEnds = {
    dstMac: new Uint8Array(6),
    srcMac: new Uint8Array(6),
    srcIp: 0,
    srcPort: 0,
    dstIp: 0,
    dstPort: 0,
  };
  private payload!: Uint8Array;

  prepare(sb: SandboxNet, srcIp: number, srcPort: number, dstPort: number, payload: Uint8Array): this {
    const e = this.ends;
    e.dstMac = sb.guestMac;
    e.srcMac = sb.gatewayMac;
    e.srcIp = srcIp;
    e.srcPort = srcPort;
    e.dstIp = sb.config.guestIp;
    e.dstPort = dstPort;
    this.payload = payload;
    this.length = udpFrameLength(payload.byteLength);
    return this;
  }

  write(buf: Uint8Array, off: number): void {
    writeUdpFrame(buf, off, this.ends, this.payload);
  }
}

const builder = new UdpFrameBuilder();

/** Sends one datagram to the guest as coming from (srcIp, srcPort). Drops it if the guest path is backed up. */
export function sendUdpToGuest(
  sb: SandboxNet,
  counters: ShardCounters,
  srcIp: number,
  srcPort: number,
  dstPort: number,
  payload: Uint8Array,
): void {
  if (sb.blocked) {
    counters.drop('udp_guest_backlog'); // datagram semantics: drop rather than buffer without bound
    return;
  }
  builder.prepare(sb, srcIp, srcPort, dstPort, payload);
  counters.framesOut++;
  counters.bytesOut += builder.length;
  sb.send(builder);
}

/** Datagrams held while a new flow's host socket connects (a few ms at most). */
const EARLY_LIMIT = 64;

export class UdpFlow extends FlowBase {
  readonly proto = 17;
  state: 'open' | 'closed' = 'open';
  private lastActivity = Date.now();
  /** The idle check came due while the guest was frozen (thawed() arms it again). */
  private idleParked = false;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Datagrams from the guest before the host socket finished connecting (Node does not queue them). */
  private early: Buffer[] | undefined;

  constructor(
    private readonly env: UdpEnv,
    sb: SandboxNet,
    endpoints: FlowEndpoints,
    /** Outbound: our own connected socket. Inbound: the forward's listener socket (not ours to close). */
    private readonly socket: dgram.Socket,
  ) {
    super(sb, endpoints);
    if (this.direction === 'out') {
      socket.on('message', (msg) => this.fromHost(msg));
      socket.on('error', () => {
        this.env.counters.drop('udp_host_error');
        this.close('host_error');
      });
      this.early = [];
      socket.connect(this.hostPort, this.hostIp, () => {
        const early = this.early ?? [];
        this.early = undefined;
        if (this.state === 'open') for (const d of early) socket.send(d);
      });
    }
    this.armIdle();
    if (env.debug)
      env.log.debug({ event: 'flow.state', proto: 'udp', sandbox: sb.id, flow: this.describe(), to: 'open' });
  }

  /** A datagram from the guest. The payload is a ring view: send() copies it before returning. */
  fromGuest(payload: Uint8Array): void {
    this.lastActivity = Date.now();
    this.bytesToHost += payload.byteLength;
    // dgram copies the data synchronously into its send request (we hand it a fresh Buffer to be sure).
    const copy = Buffer.from(payload);
    if (this.direction === 'in') this.socket.send(copy, this.hostPort, this.hostIp);
    else if (this.early === undefined) this.socket.send(copy);
    else if (this.early.length < EARLY_LIMIT) this.early.push(copy);
    else this.env.counters.drop('udp_connecting_backlog');
  }

  /** A datagram from the host peer. */
  fromHost(msg: Buffer): void {
    if (this.state === 'closed') return;
    this.lastActivity = Date.now();
    this.bytesToGuest += msg.length;
    sendUdpToGuest(this.sb, this.env.counters, this.remoteIp, this.remotePort, this.guestPort, msg);
  }

  /** A paused guest ran again after `pausedMs`: that time was not idleness. */
  thawed(pausedMs: number): void {
    this.lastActivity += pausedMs;
    // An idle check that came due while frozen was parked, not re-armed (no polling while paused).
    if (this.idleParked && this.state !== 'closed') {
      this.idleParked = false;
      this.armIdle();
    }
  }

  private armIdle(): void {
    const idle = this.sb.config.udpIdleTimeoutMs;
    const check = (): void => {
      const quiet = Date.now() - this.lastActivity;
      // A paused guest is never idle: the check is parked until thawed() (which credits the pause).
      if (this.sb.frozen) this.idleParked = true;
      else if (quiet < idle) this.idleTimer = setTimeout(check, idle - quiet);
      else this.close('idle_timeout');
    };
    this.idleTimer = setTimeout(check, idle);
  }

  close(reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this.idleTimer);
    if (this.direction === 'out') this.socket.close();
    if (this.env.debug) {
      this.env.log.debug({
        event: 'flow.state',
        proto: 'udp',
        sandbox: this.sb.id,
        flow: this.describe(),
        to: 'closed',
        reason,
      });
    }
    this.env.removeUdp(this, reason);
  }
}
