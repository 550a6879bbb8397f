/**
 * A shard's flows, keyed by the full 5-tuple plus sandbox, indexed by the
 * keyed flow hash. Buckets almost always hold one flow; a collision (1 in
 * 2^32 per pair, and unforceable without the key) just makes a short array.
 * Lookup cost is flat from one flow to many thousands (see bench/net.ts).
 */
export interface FlowKey {
  readonly sandbox: number;
  readonly proto: number;
  readonly guestIp: number;
  readonly guestPort: number;
  readonly remoteIp: number;
  readonly remotePort: number;
  /** flowHash() of the fields above. */
  readonly hash: number;
}

const same = (
  f: FlowKey,
  sandbox: number,
  proto: number,
  gip: number,
  gport: number,
  rip: number,
  rport: number,
) =>
  f.guestPort === gport &&
  f.remotePort === rport &&
  f.remoteIp === rip &&
  f.guestIp === gip &&
  f.sandbox === sandbox &&
  f.proto === proto;

export class FlowTable<F extends FlowKey> {
  private readonly buckets = new Map<number, F | F[]>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(
    hash: number,
    sandbox: number,
    proto: number,
    gip: number,
    gport: number,
    rip: number,
    rport: number,
  ): F | undefined {
    const b = this.buckets.get(hash);
    if (b === undefined) return undefined;
    if (!Array.isArray(b)) return same(b, sandbox, proto, gip, gport, rip, rport) ? b : undefined;
    for (const f of b) if (same(f, sandbox, proto, gip, gport, rip, rport)) return f;
    return undefined;
  }

  add(f: F): void {
    const b = this.buckets.get(f.hash);
    if (b === undefined) this.buckets.set(f.hash, f);
    else if (Array.isArray(b)) b.push(f);
    else this.buckets.set(f.hash, [b, f]);
    this.count++;
  }

  delete(f: F): boolean {
    const b = this.buckets.get(f.hash);
    if (b === undefined) return false;
    if (!Array.isArray(b)) {
      if (b !== f) return false;
      this.buckets.delete(f.hash);
    } else {
      const i = b.indexOf(f);
      if (i < 0) return false;
      b.splice(i, 1);
      if (b.length === 1) this.buckets.set(f.hash, b[0]);
    }
    this.count--;
    return true;
  }

  *values(): IterableIterator<F> {
    for (const b of this.buckets.values()) {
      if (Array.isArray(b)) yield* b;
      else yield b;
    }
  }
}
