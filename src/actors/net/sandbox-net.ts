/**
 * What a shard knows about one sandbox: its config, where its guest side
 * lives, its share of the flow cap and new-flow rate, and whether the ring
 * toward its guest side is backed up (flows then hold their data until it
 * drains, so a slow guest cannot make the shard buffer without bound).
 */

import { parseIpPort, parseMac } from '../../protocol/net/addr.js';
import type { ActorRef } from '../../runtime/actor-ref.js';
import type { NetConfig } from './config.js';
import { systemResolver } from './dns-proxy.js';
import type { FrameBuilder } from './messages.js';
import { RateLimiter } from './policy.js';

/** Anything that waits for the guest path to drain. */
export interface GuestPathWaiter {
  resumeSending(): void;
}

export interface GuestLinkRef {
  tell(msg: { type: 'frame'; sandbox: number; frame: Uint8Array | FrameBuilder }): boolean;
  writable(): Promise<void>;
}

export class SandboxNet {
  readonly gatewayMac: Uint8Array;
  /** Shards do not know the guest's MAC; the guest side writes it into every frame. */
  readonly guestMac = new Uint8Array(6);
  flows = 0;
  readonly maxFlows: number;
  readonly limiter: RateLimiter;
  blocked = false;
  /** The guest is paused (see the shard's `freeze`): protocol timers hold. */
  frozen = false;
  /** Where the DNS proxy forwards this sandbox's queries (its own upstream, else the host's resolver). */
  readonly dnsUpstream: { ip: number; port: number } | undefined;
  private readonly waiting = new Set<GuestPathWaiter>();

  constructor(
    readonly id: number,
    readonly config: NetConfig,
    readonly link: GuestLinkRef | ActorRef<any, any>,
    shardCount: number,
    now: number,
  ) {
    this.gatewayMac = parseMac(config.gatewayMac);
    const upstream = config.dnsUpstream ?? systemResolver();
    this.dnsUpstream = upstream ? parseIpPort(upstream, 53) : undefined;
    const p = config.policy;
    this.maxFlows = Math.max(1, Math.ceil(p.maxFlows / shardCount));
    this.limiter = new RateLimiter(
      p.newFlowsPerSecond / shardCount,
      Math.max(1, p.newFlowsBurst / shardCount),
      now,
    );
  }

  /** Sends one frame toward the guest. False = the path is backed up (the frame is still queued). */
  send(frame: Uint8Array | FrameBuilder): boolean {
    const ok = (this.link as GuestLinkRef).tell({ type: 'frame', sandbox: this.id, frame });
    if (!ok && !this.blocked) {
      this.blocked = true;
      void (this.link as GuestLinkRef).writable().then(() => {
        this.blocked = false;
        const waiters = [...this.waiting];
        this.waiting.clear();
        for (const w of waiters) w.resumeSending();
      });
    }
    return ok;
  }

  /** Registers `w` to be resumed when the guest path drains. */
  waitForGuestPath(w: GuestPathWaiter): void {
    this.waiting.add(w);
  }

  forget(w: GuestPathWaiter): void {
    this.waiting.delete(w);
  }
}
