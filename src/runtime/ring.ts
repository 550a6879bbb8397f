/**
 * Single-producer / single-consumer ring of variable-length records over a
 * SharedArrayBuffer, with pushed wakeups.
 *
 * Why it lives in src/runtime and not src/protocol: the record *layout* is
 * trivial (a length word), but the ring's substance is thread semantics —
 * Atomics ordering, parking, who notifies whom, keeping a parked worker alive.
 * That is runtime machinery; the bytes inside a record are protocol
 * (src/protocol/envelope.ts).
 *
 * Theory of operation
 * -------------------
 * Memory: a header of Int32 control words and Float64 stats, then `capacity`
 * data bytes (a power of two). WRITE and READ are free-running u32 positions;
 * `pos & mask` is the offset, `(WRITE - READ) >>> 0` the bytes in use. Only the
 * producer stores WRITE, only the consumer stores READ.
 *
 * Records: a u32 length word then the payload, padded to 4 bytes. A record
 * never straddles the end: when it does not fit in the contiguous tail, the
 * producer writes the PAD marker there and starts the record at offset 0. The
 * largest record is `capacity/2 - 4` bytes, which guarantees an empty ring can
 * always take it (either the tail or the head half is large enough).
 *
 * Batching: `reserve()` only advances the producer's private position; nothing
 * is visible to the consumer until `publish()` stores WRITE once for the whole
 * batch. The consumer likewise stores READ once per drained batch.
 *
 * Wakeups: the consumer, finding nothing, sets CONSUMER_PARKED, re-reads WRITE
 * (so a publish that raced with parking is seen), then `Atomics.waitAsync` on
 * WRITE. `publish()` stores WRITE, then notifies only while CONSUMER_PARKED is
 * set, so a busy consumer costs nothing. A producer awaiting space (the ring's
 * backpressure: no spinning, no timers) parks the same way on READ, and the
 * consumer notifies after every drain while PRODUCER_PARKED is set.
 *
 * Each side clears only its *own* flag, once it is awake. A waker that
 * cleared the sleeper's flag lost wakeups, both ways round:
 *   - consumer: a producer preempted between storing WRITE and its
 *     compare-and-swap of the flag could wake up after the consumer had
 *     already read that record (by spinning) and parked again; its late swap
 *     then took the *new* park's flag, its notify landed before the new
 *     `waitAsync` registered (and that wait rightly found WRITE unchanged),
 *     and the next publish saw no flag and never notified. Seen under perf
 *     sampling on this 2-vCPU machine; test/runtime/ring-workers.test.ts
 *     reproduces it with a ping-pong.
 *   - producer: it waits for *enough* room, which one drain may not free; a
 *     drain that consumed the flag left it asleep with nobody to wake it.
 * The price is an occasional notify that finds nobody (a lock and a lookup,
 * no wakeup) while the sleeper is already on its way up; a stale notify that
 * does find it is a spurious wakeup, and both sides re-check and re-park.
 *
 * A pending `waitAsync` does not keep a worker's event loop alive, so a
 * parked side holds a ref'd handle (see wake-handle.ts) until woken.
 */
import { ActorvmError } from '../errors.js';
import { WakeHandle } from './wake-handle.js';

/** A record larger than this ring can ever hold. The ring is untouched. */
export class RingRecordTooLargeError extends ActorvmError {
  constructor(size: number, max: number) {
    super('ERR_RING_RECORD_TOO_LARGE', `record of ${size} bytes exceeds the ring's maximum of ${max}`, {
      size,
      max,
    });
  }
}

/** The ring was closed while a side was waiting on it. */
export class RingClosedError extends ActorvmError {
  constructor() {
    super('ERR_RING_CLOSED', 'ring is closed');
  }
}

// Shared header layout. Each side's hot word sits on its own 64-byte cache line
// with that side's stats, so the producer and consumer never write the same
// line on the fast path (false sharing halves throughput on this machine).
//
//   line 0 (producer): WRITE, then producer stats (f64)
//   line 1 (consumer): READ, then consumer stats (f64)
//   line 2 (shared):   CONSUMER_PARKED, PRODUCER_PARKED, CLOSED (rare writes)
const LINE = 64;
const WRITE = 0; // Int32 index
const READ = LINE / 4;
const CONSUMER_PARKED = (2 * LINE) / 4;
const PRODUCER_PARKED = CONSUMER_PARKED + 1;
const CLOSED = CONSUMER_PARKED + 2;
const CONTROL_WORDS = (3 * LINE) / 4;

// Float64 indices (8 bytes each), written by one side only and flushed once per
// batch, so readers on other threads may see values one batch old.
const S_RECORDS = 1; // producer: records published
const S_BYTES = 2; // producer: payload bytes published
const S_HIGH_WATER = 3; // producer: max bytes in use seen at publish
const S_FULL_EVENTS = 4; // producer: reserve() found no room
const S_NOTIFIES = 5; // producer: wakeups sent to a parked consumer
const S_PRODUCER_WAKEUPS = 6; // producer: times it parked for space and was woken
const S_CONSUMER_WAKEUPS = LINE / 8 + 1; // consumer: times it parked and was woken
const S_RECORDS_READ = LINE / 8 + 2; // consumer: records consumed

const HEADER_BYTES = 4 * LINE;
const PAD = 0xffffffff;
const LEN_BYTES = 4;

/** Loads of WRITE a consumer spends before parking (see `spinForData`). */
const DEFAULT_SPIN = 512;

const align4 = (n: number): number => (n + 3) & ~3;

/** Everything one side needs to attach to a ring; structured-cloneable into a worker. */
export interface RingDescriptor {
  readonly sab: SharedArrayBuffer;
  readonly capacity: number;
  /** Human-readable name for stats, e.g. `main->w1`. */
  readonly name: string;
}

/** A snapshot of a ring's counters. */
export interface RingStats {
  name: string;
  capacity: number;
  maxRecord: number;
  records: number;
  bytes: number;
  depthBytes: number;
  highWaterBytes: number;
  fullEvents: number;
  wakeups: number;
  producerWakeups: number;
  recordsRead: number;
  consumerParked: boolean;
}

/** Allocates the shared memory for a ring of `capacity` data bytes (a power of two ≥ 64). */
export function createRing(capacity: number, name: string): RingDescriptor {
  if (
    !Number.isInteger(capacity) ||
    capacity < 64 ||
    capacity > 1 << 30 ||
    (capacity & (capacity - 1)) !== 0
  ) {
    throw new RangeError(`ring capacity must be a power of two between 64 and 2^30, got ${capacity}`);
  }
  return { sab: new SharedArrayBuffer(HEADER_BYTES + capacity), capacity, name };
}

/** Reads the stats of any ring, from any thread. */
export function readRingStats(d: RingDescriptor): RingStats {
  const ctl = new Int32Array(d.sab, 0, CONTROL_WORDS);
  const st = new Float64Array(d.sab, 0, HEADER_BYTES / 8);
  return {
    name: d.name,
    capacity: d.capacity,
    maxRecord: d.capacity / 2 - LEN_BYTES,
    records: st[S_RECORDS],
    bytes: st[S_BYTES],
    depthBytes: (Atomics.load(ctl, WRITE) - Atomics.load(ctl, READ)) >>> 0,
    highWaterBytes: st[S_HIGH_WATER],
    fullEvents: st[S_FULL_EVENTS],
    wakeups: st[S_CONSUMER_WAKEUPS],
    producerWakeups: st[S_PRODUCER_WAKEUPS],
    recordsRead: st[S_RECORDS_READ],
    consumerParked: Atomics.load(ctl, CONSUMER_PARKED) === 1,
  };
}

/** Marks a ring closed and wakes both sides, so waiters reject instead of hanging. */
export function closeRing(d: RingDescriptor): void {
  const ctl = new Int32Array(d.sab, 0, CONTROL_WORDS);
  Atomics.store(ctl, CLOSED, 1);
  // Bump nothing; waiters re-check CLOSED after waking.
  Atomics.notify(ctl, WRITE);
  Atomics.notify(ctl, READ);
}

/** The writing end. Exactly one thread may hold it. */
export class RingProducer {
  /** The data region; `reserve()` returns offsets into it. */
  readonly data: Uint8Array;
  /** A DataView over `data`, for codecs. */
  readonly view: DataView;
  readonly maxRecord: number;
  readonly name: string;
  private readonly ctl: Int32Array;
  private readonly st: Float64Array;
  private readonly mask: number;
  private readonly capacity: number;
  /** Private write position: ahead of WRITE by what is reserved but not yet published. */
  private pos: number;
  /** Last READ we loaded; refreshed only when the ring looks full (saves atomics). */
  private cachedRead: number;
  /** Stats of the unpublished batch, flushed to shared memory by publish(). */
  private batchRecords = 0;
  private batchBytes = 0;

  constructor(d: RingDescriptor) {
    this.capacity = d.capacity;
    this.mask = d.capacity - 1;
    this.maxRecord = d.capacity / 2 - LEN_BYTES;
    this.name = d.name;
    this.ctl = new Int32Array(d.sab, 0, CONTROL_WORDS);
    this.st = new Float64Array(d.sab, 0, HEADER_BYTES / 8);
    this.data = new Uint8Array(d.sab, HEADER_BYTES, d.capacity);
    this.view = new DataView(d.sab, HEADER_BYTES, d.capacity);
    this.pos = Atomics.load(this.ctl, WRITE) >>> 0;
    this.cachedRead = Atomics.load(this.ctl, READ) >>> 0;
  }

  /** True when records were reserved since the last publish. */
  get pending(): boolean {
    return this.pos !== Atomics.load(this.ctl, WRITE) >>> 0;
  }

  get closed(): boolean {
    return Atomics.load(this.ctl, CLOSED) === 1;
  }

  /**
   * Reserves room for a record of `len` payload bytes and returns the offset
   * in `data` where the caller writes the payload, or -1 when the ring has no
   * room now (the caller awaits `waitForSpace(len)` or queues). The record
   * becomes visible at the next `publish()`.
   *
   * @throws RingRecordTooLargeError when `len` can never fit.
   */
  reserve(len: number): number {
    if (len > this.maxRecord) throw new RingRecordTooLargeError(len, this.maxRecord);
    const need = align4(LEN_BYTES + len);
    const at = this.pos & this.mask;
    const tail = this.capacity - at;
    const total = need <= tail ? need : tail + need;
    if (!this.fits(total)) {
      this.st[S_FULL_EVENTS]++;
      return -1;
    }
    let start = at;
    if (need > tail) {
      this.view.setUint32(at, PAD);
      this.pos = (this.pos + tail) >>> 0;
      start = 0;
    }
    this.view.setUint32(start, len);
    this.pos = (this.pos + need) >>> 0;
    this.batchRecords++;
    this.batchBytes += len;
    return start + LEN_BYTES;
  }

  /** Copies `payload` in as one record. Returns false when there is no room now. */
  tryWrite(payload: Uint8Array): boolean {
    const off = this.reserve(payload.byteLength);
    if (off < 0) return false;
    this.data.set(payload, off);
    return true;
  }

  /**
   * Makes every reserved record visible to the consumer with one store, and
   * wakes the consumer if (and only if) it is parked.
   */
  publish(): void {
    const pos = this.pos;
    Atomics.store(this.ctl, WRITE, pos | 0);
    this.cachedRead = Atomics.load(this.ctl, READ) >>> 0;
    const used = (pos - this.cachedRead) >>> 0;
    const st = this.st;
    st[S_RECORDS] += this.batchRecords;
    st[S_BYTES] += this.batchBytes;
    this.batchRecords = 0;
    this.batchBytes = 0;
    if (used > st[S_HIGH_WATER]) st[S_HIGH_WATER] = used;
    // Only the consumer clears its flag (see the theory above): a notify that
    // finds nobody waiting costs a lock and a lookup, never a wakeup.
    if (Atomics.load(this.ctl, CONSUMER_PARKED) === 1 && Atomics.notify(this.ctl, WRITE, 1) > 0) {
      this.st[S_NOTIFIES]++;
    }
  }

  /** Whether a record of `len` payload bytes would fit right now. */
  hasRoomFor(len: number): boolean {
    const need = align4(LEN_BYTES + len);
    const tail = this.capacity - (this.pos & this.mask);
    return this.fits(need <= tail ? need : tail + need);
  }

  /**
   * Resolves once a record of `len` bytes fits. Parks on READ with
   * `Atomics.waitAsync`; the consumer notifies when it frees space and sees us
   * parked. Publishes pending records first (a producer must never wait on a
   * consumer that cannot see its data).
   */
  async waitForSpace(len: number): Promise<void> {
    if (len > this.maxRecord) throw new RingRecordTooLargeError(len, this.maxRecord);
    if (this.pending) this.publish();
    if (this.hasRoomFor(len)) return;
    // Only this side clears the flag (see the theory above): the consumer
    // notifies on every drain while it is set, so a wakeup that lands before
    // waitAsync registers is followed by another on the consumer's next drain —
    // and there is one, because the ring is too full for us.
    Atomics.store(this.ctl, PRODUCER_PARKED, 1);
    try {
      for (;;) {
        if (this.closed) throw new RingClosedError();
        const read = Atomics.load(this.ctl, READ);
        this.cachedRead = read >>> 0;
        if (this.hasRoomFor(len)) return;
        const w = Atomics.waitAsync(this.ctl, READ, read);
        if (w.async) {
          WakeHandle.hold();
          try {
            await w.value;
          } finally {
            WakeHandle.release();
          }
          this.st[S_PRODUCER_WAKEUPS]++;
        }
      }
    } finally {
      Atomics.store(this.ctl, PRODUCER_PARKED, 0);
    }
  }

  private fits(total: number): boolean {
    if (total <= this.capacity - ((this.pos - this.cachedRead) >>> 0)) return true;
    this.cachedRead = Atomics.load(this.ctl, READ) >>> 0;
    return total <= this.capacity - ((this.pos - this.cachedRead) >>> 0);
  }
}

/**
 * Called once per record by `RingConsumer.drain`. `data[off .. off+len)` is the
 * payload: a view into shared memory, valid only until the handler returns.
 */
export type RecordHandler = (data: Uint8Array, off: number, len: number) => void;

/** The reading end. Exactly one thread may hold it. */
export class RingConsumer {
  readonly data: Uint8Array;
  readonly view: DataView;
  readonly name: string;
  private readonly ctl: Int32Array;
  private readonly st: Float64Array;
  private readonly mask: number;
  private readonly capacity: number;
  private pos: number;
  private running = false;
  private parkedWait: Promise<unknown> | undefined;

  constructor(d: RingDescriptor) {
    this.capacity = d.capacity;
    this.mask = d.capacity - 1;
    this.name = d.name;
    this.ctl = new Int32Array(d.sab, 0, CONTROL_WORDS);
    this.st = new Float64Array(d.sab, 0, HEADER_BYTES / 8);
    this.data = new Uint8Array(d.sab, HEADER_BYTES, d.capacity);
    this.view = new DataView(d.sab, HEADER_BYTES, d.capacity);
    this.pos = Atomics.load(this.ctl, READ) >>> 0;
  }

  get closed(): boolean {
    return Atomics.load(this.ctl, CLOSED) === 1;
  }

  /** True when published records are waiting. */
  get readable(): boolean {
    return Atomics.load(this.ctl, WRITE) >>> 0 !== this.pos;
  }

  /**
   * Hands up to `maxRecords` published records to `handler`, in order, then
   * releases their space with a single store of READ (waking a producer parked
   * for space). Returns how many records were handled.
   *
   * If the handler throws, the records before it stay consumed and the
   * throwing one is consumed too (a poison record must not wedge the ring);
   * the error is rethrown after READ is stored.
   */
  drain(handler: RecordHandler, maxRecords = Number.POSITIVE_INFINITY): number {
    const write = Atomics.load(this.ctl, WRITE) >>> 0;
    let pos = this.pos;
    let n = 0;
    let failure: unknown;
    let failed = false;
    while (pos !== write && n < maxRecords) {
      let at = pos & this.mask;
      let len = this.view.getUint32(at);
      if (len === PAD) {
        pos = (pos + (this.capacity - at)) >>> 0;
        if (pos === write) break;
        at = 0;
        len = this.view.getUint32(0);
      }
      const next = (pos + align4(LEN_BYTES + len)) >>> 0;
      n++;
      try {
        handler(this.data, at + LEN_BYTES, len);
      } catch (err) {
        failure = err;
        failed = true;
        pos = next;
        break;
      }
      pos = next;
    }
    if (pos !== this.pos) {
      this.pos = pos;
      this.st[S_RECORDS_READ] += n;
      Atomics.store(this.ctl, READ, pos | 0);
      // Not a compare-exchange (unlike the consumer's flag): a producer waits
      // for *enough* room, so one drain may not satisfy it; it clears the flag
      // itself once it fits.
      if (Atomics.load(this.ctl, PRODUCER_PARKED) === 1) Atomics.notify(this.ctl, READ, 1);
    }
    if (failed) throw failure;
    return n;
  }

  /**
   * Runs the consumer: drains records into `handler` as they are published and
   * parks in between, until `stop()` or the ring closes. This is the hot path,
   * so it is written with callbacks rather than an async loop: a wakeup goes
   * straight from the `waitAsync` settlement to `drain` with no extra promise
   * hops. After `budget` records in a row it yields with `setImmediate` so
   * sockets and timers on this thread are never starved by a fast producer.
   */
  start(
    handler: RecordHandler,
    opts: { budget?: number; spin?: number; onBatchEnd?: () => void; onError?: (err: unknown) => void } = {},
  ): void {
    if (this.running) throw new Error(`ring ${this.name} already has a running consumer`);
    this.running = true;
    const budget = opts.budget ?? 1024;
    const spin = opts.spin ?? DEFAULT_SPIN;
    const onBatchEnd = opts.onBatchEnd;
    const onError =
      opts.onError ??
      ((err: unknown) =>
        queueMicrotask(() => {
          throw err;
        }));
    const ctl = this.ctl;
    const loop = (): void => {
      while (this.running) {
        let n: number;
        try {
          n = this.drain(handler, budget);
        } catch (err) {
          onError(err);
          continue;
        }
        if (n > 0 && onBatchEnd) onBatchEnd();
        if (n === budget) {
          setImmediate(loop);
          return;
        }
        if (this.readable) continue;
        if (n > 0) {
          // Let the microtasks this batch queued (the application answering what
          // it just received) run before deciding to park: the answer to what
          // *they* send is what the spin below is most likely to catch.
          queueMicrotask(settle);
          return;
        }
        settle();
        return;
      }
    };
    /** Spin briefly, then park until the producer notifies. */
    const settle = (): void => {
      if (!this.running) return;
      if (this.closed && !this.readable) {
        this.running = false;
        return;
      }
      if (this.readable || this.spinForData(spin)) {
        loop();
        return;
      }
      Atomics.store(ctl, CONSUMER_PARKED, 1);
      const write = Atomics.load(ctl, WRITE);
      if (write >>> 0 !== this.pos) {
        Atomics.store(ctl, CONSUMER_PARKED, 0);
        loop();
        return;
      }
      const w = Atomics.waitAsync(ctl, WRITE, write);
      if (!w.async) {
        Atomics.store(ctl, CONSUMER_PARKED, 0);
        loop();
        return;
      }
      WakeHandle.hold();
      this.parkedWait = w.value;
      w.value.then(onWake);
    };
    const onWake = (): void => {
      WakeHandle.release();
      this.parkedWait = undefined;
      this.st[S_CONSUMER_WAKEUPS]++;
      Atomics.store(ctl, CONSUMER_PARKED, 0);
      loop();
    };
    loop();
  }

  /**
   * Watches WRITE for a bounded number of loads before the consumer parks.
   * Request/response traffic usually answers within a microsecond or two, while
   * a park/wake costs ~15 µs each way on this machine (it goes through the
   * other thread's event loop); a spin of a few hundred loads (~1 µs, bounded
   * by count, never by a clock) turns most of those wakeups into a hit.
   */
  private spinForData(iterations: number): boolean {
    const ctl = this.ctl;
    const pos = this.pos;
    for (let i = 0; i < iterations; i++) {
      if (Atomics.load(ctl, WRITE) >>> 0 !== pos) return true;
    }
    return false;
  }

  /**
   * Stops a consumer started with `start()`. A parked consumer is released by
   * waking it (it then sees `running` is false and returns).
   */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    if (this.parkedWait) Atomics.notify(this.ctl, WRITE);
  }
}
