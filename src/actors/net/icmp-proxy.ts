/**
 * ICMP echo toward hosts other than the gateway (the gateway answers pings
 * itself, in the guest-facing side).
 *
 * Node has no ICMP sockets. This build does not relay them: each echo request
 * is counted and dropped, with one warning per shard, so a guest's ping
 * fails visibly instead of hanging the shard. (See the closing note of the
 * networking issue for the helper-process design that would add it.)
 */
import type { Logger } from 'pino';
import type { ShardCounters } from './counters.js';
import type { SandboxNet } from './sandbox-net.js';

export interface IcmpStats {
  requests: number;
  dropped: number;
}

export class IcmpProxy {
  readonly stats: IcmpStats = { requests: 0, dropped: 0 };
  private warned = false;

  constructor(
    private readonly counters: ShardCounters,
    private readonly log: Logger,
  ) {}

  echo(
    _sb: SandboxNet,
    _dst: number,
    _hostIp: number,
    _ident: number,
    _seq: number,
    _data: Uint8Array,
  ): void {
    this.stats.requests++;
    this.stats.dropped++;
    this.counters.drop('icmp_unsupported');
    if (!this.warned) {
      this.warned = true;
      this.log.warn(
        { event: 'net.icmp_unavailable' },
        'ICMP echo to hosts other than the gateway is not relayed',
      );
    }
  }

  close(): void {}
}
