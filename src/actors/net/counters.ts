/** Per-shard counters: traffic, drops by reason, refusals by reason. Read by `inspect` and `actorctl flows`. */
export class ShardCounters {
  packetsIn = 0;
  bytesIn = 0;
  framesOut = 0;
  bytesOut = 0;
  flowsOpened = 0;
  flowsClosed = 0;
  retransmits = 0;
  readonly drops = new Map<string, number>();
  readonly refusals = new Map<string, number>();

  drop(reason: string): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
  }

  refuse(reason: string): void {
    this.refusals.set(reason, (this.refusals.get(reason) ?? 0) + 1);
  }

  toJSON(): Record<string, unknown> {
    return {
      packetsIn: this.packetsIn,
      bytesIn: this.bytesIn,
      framesOut: this.framesOut,
      bytesOut: this.bytesOut,
      flowsOpened: this.flowsOpened,
      flowsClosed: this.flowsClosed,
      retransmits: this.retransmits,
      drops: Object.fromEntries(this.drops),
      refusals: Object.fromEntries(this.refusals),
    };
  }
}
