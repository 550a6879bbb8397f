/**
 * What every flow of a shard is, whatever its protocol: its key (the
 * endpoints the guest sees), where it really goes on the host, its byte
 * counters, and how it is described in logs and listed by `actorctl flows`.
 */
import { ipToString } from '../../protocol/net/addr.js';
import type { FlowKey } from './flow-table.js';
import type { SandboxNet } from './sandbox-net.js';

/** The addresses of a flow: as the guest sees them, and on the host. */
export interface FlowEndpoints {
  /** flowHash() of the key fields. */
  hash: number;
  guestIp: number;
  guestPort: number;
  remoteIp: number;
  remotePort: number;
  /** Where the flow really goes (outbound), or where it came from (inbound). */
  hostIp: string;
  hostPort: number;
  direction: 'out' | 'in';
}

/** A row of `actorctl flows`. */
export interface FlowInfo {
  proto: 'tcp' | 'udp';
  sandbox: number;
  direction: 'out' | 'in';
  guest: string;
  remote: string;
  host: string;
  state: string;
  bytesToHost: number;
  bytesToGuest: number;
  ageMs: number;
}

export abstract class FlowBase implements FlowKey {
  abstract readonly proto: number;
  abstract readonly state: string;
  readonly hash: number;
  readonly guestIp: number;
  readonly guestPort: number;
  readonly remoteIp: number;
  readonly remotePort: number;
  readonly hostIp: string;
  readonly hostPort: number;
  readonly direction: 'out' | 'in';
  readonly createdAt = Date.now();
  bytesToHost = 0;
  bytesToGuest = 0;

  constructor(
    readonly sb: SandboxNet,
    e: FlowEndpoints,
  ) {
    this.hash = e.hash;
    this.guestIp = e.guestIp;
    this.guestPort = e.guestPort;
    this.remoteIp = e.remoteIp;
    this.remotePort = e.remotePort;
    this.hostIp = e.hostIp;
    this.hostPort = e.hostPort;
    this.direction = e.direction;
  }

  get sandbox(): number {
    return this.sb.id;
  }

  /** `guestip:port->remoteip:port`, the short name of a flow in log lines. */
  describe(): string {
    return `${ipToString(this.guestIp)}:${this.guestPort}->${ipToString(this.remoteIp)}:${this.remotePort}`;
  }

  info(now: number): FlowInfo {
    return {
      proto: this.proto === 6 ? 'tcp' : 'udp',
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
