/**
 * UDP NAT: one connected host socket per guest flow (guest ip:port → remote
 * ip:port), so replies are filtered by the kernel and relayed back as they
 * come. A flow is reaped after `udpIdleTimeoutMs` without traffic either way
 * (lazy timer). Inbound forwards use the same object with the listener's
 * socket and a fixed host peer instead of a socket of their own.
 */
import type dgram from 'node:dgram';
import type { Logger } from 'pino';
import { ipToString } from '../../protocol/net/addr.js';
import { udpFrameLength, writeUdpFrame } from '../../protocol/net/udp.js';
import type { ShardCounters } from './counters.js';
import type { FlowKey } from './flow-table.js';
import type { FrameBuilder } from './messages.js';
import type { SandboxNet } from './sandbox-net.js';

export interface UdpEnv {
  readonly counters: ShardCounters;
  readonly log: Logger;
  readonly debug: boolean;
  removeUdp(flow: UdpFlow, reason: string): void;
}

export interface UdpFlowInfo {
  proto: 'udp';
  sandbox: number;
  direction: 'out' | 'in';
  guest: string;
  remote: string;
  host: string;
  state: 'open' | 'closed';
  bytesToHost: number;
  bytesToGuest: number;
  ageMs: number;
}

/** Builds a UDP frame toward the guest in place. */
class UdpFrameBuilder implements FrameBuilder {
  length = 0;
  private sb!: SandboxNet;
  private srcIp = 0;
  private srcPort = 0;
  private dstIp = 0;
  private dstPort = 0;
  private payload!: Uint8Array;

  prepare(
    sb: SandboxNet,
    srcIp: number,
    srcPort: number,
    dstIp: number,
    dstPort: number,
    payload: Uint8Array,
  ): this {
    this.sb = sb;
    this.srcIp = srcIp;
    this.srcPort = srcPort;
    this.dstIp = dstIp;
    this.dstPort = dstPort;
    this.payload = payload;
    this.length = udpFrameLength(payload.byteLength);
    return this;
  }

  write(buf: Uint8Array, off: number): void {
    const sb = this.sb;
    writeUdpFrame(
      buf,
      off,
      sb.guestMac,
      sb.gatewayMac,
      this.srcIp,
      this.srcPort,
      this.dstIp,
      this.dstPort,
      this.payload,
    );
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
  builder.prepare(sb, srcIp, srcPort, sb.config.guestIp, dstPort, payload);
  counters.framesOut++;
  counters.bytesOut += builder.length;
  sb.send(builder);
}

/** Datagrams held while a new flow's host socket connects (a few ms at most). */
const EARLY_LIMIT = 64;

export class UdpFlow implements FlowKey {
  readonly proto = 17;
  state: 'open' | 'closed' = 'open';
  bytesToHost = 0;
  bytesToGuest = 0;
  readonly createdAt = Date.now();
  private lastActivity = Date.now();
  private idleTimer: NodeJS.Timeout | undefined;
  /** Datagrams from the guest before the host socket finished connecting (Node does not queue them). */
  private early: Buffer[] | undefined;

  constructor(
    private readonly env: UdpEnv,
    readonly sb: SandboxNet,
    readonly hash: number,
    readonly guestIp: number,
    readonly guestPort: number,
    readonly remoteIp: number,
    readonly remotePort: number,
    readonly hostIp: string,
    readonly hostPort: number,
    readonly direction: 'out' | 'in',
    /** Outbound: our own connected socket. Inbound: the forward's listener socket (not ours to close). */
    private readonly socket: dgram.Socket,
  ) {
    if (direction === 'out') {
      socket.on('message', (msg) => this.fromHost(msg));
      socket.on('error', () => {
        this.env.counters.drop('udp_host_error');
        this.close('host_error');
      });
      this.early = [];
      socket.connect(hostPort, hostIp, () => {
        const early = this.early ?? [];
        this.early = undefined;
        if (this.state === 'open') for (const d of early) socket.send(d);
      });
    }
    this.armIdle();
    if (env.debug)
      env.log.debug({ event: 'flow.state', proto: 'udp', sandbox: sb.id, flow: this.describe(), to: 'open' });
  }

  get sandbox(): number {
    return this.sb.id;
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

  private armIdle(): void {
    const idle = this.sb.config.udpIdleTimeoutMs;
    const check = (): void => {
      const quiet = Date.now() - this.lastActivity;
      if (quiet < idle) this.idleTimer = setTimeout(check, idle - quiet);
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

  describe(): string {
    return `${ipToString(this.guestIp)}:${this.guestPort}->${ipToString(this.remoteIp)}:${this.remotePort}`;
  }

  info(now: number): UdpFlowInfo {
    return {
      proto: 'udp',
      sandbox: this.sb.id,
      direction: this.direction,
      guest: `${ipToString(this.guestIp)}:${this.guestPort}`,
      remote: `${ipToString(this.remoteIp)}:${this.remotePort}`,
      host: `${this.hostIp}:${this.hostPort}`,
      state: this.state,
      bytesToHost: this.bytesToHost,
      bytesToGuest: this.bytesToGuest,
      ageMs: now - this.createdAt,
    };
  }
}
