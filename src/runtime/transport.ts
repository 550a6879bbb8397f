/**
 * One thread's end of the ring mesh: a producer to every other thread and a
 * consumer from every other thread (one SPSC ring per directed pair).
 *
 * Sending encodes the envelope and body straight into the destination ring and
 * schedules one `publish()` per ring per tick (a microtask), so a burst of
 * sends in one event-loop turn costs one atomic store and at most one wakeup.
 *
 * When a ring is full the record is copied into an overflow queue for that
 * destination and `send` returns false — the same contract as
 * `stream.write()`: the caller should await `writable(thread)` before sending
 * more. Nothing is dropped: the overflow drains into the ring, in order, as
 * the consumer frees space (the producer parks on the ring, no timers). Once
 * a destination has overflow, every later send to it queues behind it so
 * ordering per sender is preserved.
 */
import type { Codec } from '../protocol/codec.js';
import { ENVELOPE_BYTES, type EnvelopeKind, writeEnvelope } from '../protocol/envelope.js';
import { RingConsumer, type RingDescriptor, RingProducer, type RingStats, readRingStats } from './ring.js';

/** The rings one thread uses, keyed by the peer thread index. Structured-cloneable. */
export interface ThreadRings {
  self: number;
  out: Record<number, RingDescriptor>;
  in: Record<number, RingDescriptor>;
}

/** Receives every record that arrives on this thread, with the thread it came from. */
export type RecordSink = (
  fromThread: number,
  data: Uint8Array,
  dv: DataView,
  off: number,
  len: number,
) => void;

interface Outbound {
  producer: RingProducer;
  overflow: Uint8Array[];
  overflowBytes: number;
  pumping: boolean;
  waiters: (() => void)[];
}

export class Transport {
  readonly self: number;
  private readonly outbound = new Map<number, Outbound>();
  private readonly inbound = new Map<number, RingConsumer>();
  private readonly descriptors: RingDescriptor[] = [];
  private publishScheduled = false;
  private readonly dirty = new Set<Outbound>();
  private readonly flush = (): void => {
    this.publishScheduled = false;
    for (const o of this.dirty) o.producer.publish();
    this.dirty.clear();
  };

  constructor(
    rings: ThreadRings,
    private readonly sink: RecordSink,
    private readonly onSinkError: (err: unknown) => void,
  ) {
    this.self = rings.self;
    for (const [peer, d] of Object.entries(rings.out)) {
      this.outbound.set(Number(peer), {
        producer: new RingProducer(d),
        overflow: [],
        overflowBytes: 0,
        pumping: false,
        waiters: [],
      });
      this.descriptors.push(d);
    }
    for (const [peer, d] of Object.entries(rings.in)) {
      this.inbound.set(Number(peer), new RingConsumer(d));
      this.descriptors.push(d);
    }
  }

  /** Starts consuming every inbound ring. */
  start(): void {
    for (const [peer, consumer] of this.inbound) {
      const dv = consumer.view;
      // Sends made while handling a batch are published by the microtask flush,
      // which runs before the consumer decides whether to park.
      consumer.start((data, off, len) => this.sink(peer, data, dv, off, len), { onError: this.onSinkError });
    }
  }

  /** Stops the consumers (pending records stay in the rings). */
  stop(): void {
    for (const c of this.inbound.values()) c.stop();
  }

  /**
   * Encodes one message to `thread`. Returns true when it went straight into
   * the ring, false when it was queued behind a full ring (backpressure).
   * Throws RingRecordTooLargeError when it can never fit; the ring is untouched.
   */
  send<T>(
    thread: number,
    kind: EnvelopeKind,
    target: number,
    sender: number,
    corr: number,
    codec: Codec<T>,
    value: T,
  ): boolean {
    const o = this.outbound.get(thread);
    if (!o) throw new RangeError(`no ring from thread ${this.self} to thread ${thread}`);
    const len = ENVELOPE_BYTES + codec.size(value);
    const p = o.producer;
    const off = o.overflow.length === 0 ? p.reserve(len) : -1;
    if (off >= 0) {
      writeEnvelope(p.data, p.view, off, kind, target, sender, corr);
      codec.write(value, p.data, p.view, off + ENVELOPE_BYTES);
      this.markDirty(o);
      return true;
    }
    if (len > p.maxRecord) p.reserve(len); // throws the typed too-large error
    const copy = new Uint8Array(len);
    const dv = new DataView(copy.buffer);
    writeEnvelope(copy, dv, 0, kind, target, sender, corr);
    codec.write(value, copy, dv, ENVELOPE_BYTES);
    o.overflow.push(copy);
    o.overflowBytes += len;
    if (!o.pumping) void this.pump(o);
    return false;
  }

  /** Resolves when the path to `thread` has no overflow (sends go straight to the ring again). */
  writable(thread: number): Promise<void> {
    const o = this.outbound.get(thread);
    if (!o || o.overflow.length === 0) return Promise.resolve();
    return new Promise((resolve) => o.waiters.push(resolve));
  }

  /** Bytes queued behind full rings, per destination thread. */
  overflowBytes(thread: number): number {
    return this.outbound.get(thread)?.overflowBytes ?? 0;
  }

  /** True when nothing is waiting to be read on any inbound ring and nothing is queued outbound. */
  get quiet(): boolean {
    for (const c of this.inbound.values()) if (c.readable) return false;
    for (const o of this.outbound.values()) if (o.overflow.length > 0 || o.producer.pending) return false;
    return true;
  }

  /** Stats of every ring this thread touches (both directions). */
  stats(): RingStats[] {
    return this.descriptors.map(readRingStats);
  }

  /** Publishes what was reserved now, instead of at the end of the tick. */
  flushNow(): void {
    if (this.dirty.size > 0) this.flush();
  }

  private markDirty(o: Outbound): void {
    this.dirty.add(o);
    if (!this.publishScheduled) {
      this.publishScheduled = true;
      queueMicrotask(this.flush);
    }
  }

  /** Moves overflowed records into the ring as space frees up, in order. */
  private async pump(o: Outbound): Promise<void> {
    o.pumping = true;
    const p = o.producer;
    try {
      while (o.overflow.length > 0) {
        const rec = o.overflow[0];
        let off = p.reserve(rec.length);
        if (off < 0) {
          this.flushNow();
          await p.waitForSpace(rec.length);
          off = p.reserve(rec.length);
          if (off < 0) continue;
        }
        p.data.set(rec, off);
        o.overflow.shift();
        o.overflowBytes -= rec.length;
        this.markDirty(o);
      }
    } catch {
      // The ring closed under us (shutdown): what is queued can no longer be delivered.
      o.overflow.length = 0;
      o.overflowBytes = 0;
    } finally {
      o.pumping = false;
    }
    const waiters = o.waiters.splice(0);
    for (const w of waiters) w();
  }
}
