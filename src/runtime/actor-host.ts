/**
 * Everything actor-related on one thread: the cells living here, delivery of
 * records arriving on the rings, in-thread delivery, pending asks, dead
 * letters. The main thread runs one too (with no placed actors) so refs work
 * the same everywhere.
 *
 * Spawn/stop/inspect reach a worker's host over comlink (control plane); data
 * reaches it only through `deliver`, called by the transport for each record.
 */
import type { Logger } from 'pino';
import { ActorvmError } from '../errors.js';
import { type Codec, decodeBuffer, Reader } from '../protocol/codec.js';
import {
  ASK,
  type EnvelopeView,
  REPLY,
  REPLY_ERROR,
  ReplyErrorBody,
  readEnvelope,
  TELL,
} from '../protocol/envelope.js';
import type { ActorAddress, ActorContext, ActorKind, Reply } from './actor.js';
import { ActorCell, type ActorInfo, currentActor } from './actor-cell.js';
import { ActorRef, type Router } from './actor-ref.js';
import { AskTimeoutError, DeadLetterError, RemoteActorError, SystemStoppedError } from './errors.js';
import type { RingStats } from './ring.js';
import { type ThreadRings, Transport } from './transport.js';

/** What the system asks a host to spawn. Plain data (crosses threads). */
export interface SpawnSpec {
  id: number;
  name: string;
  /** Module URL whose default export is the ActorKind. */
  module: string;
  args: unknown;
}

/** Events a host reports upward (to the root supervisor on the main thread). */
export type HostEvent =
  | { type: 'escalated'; actor: ActorAddress; error: { code?: string; message: string } }
  | { type: 'restarted'; actor: ActorAddress; restarts: number }
  | { type: 'dead-letter'; target: string; count: number };

interface PendingAsk {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  timer: NodeJS.Timeout;
  replies: Codec<unknown>;
  /** Thread of the asked actor, so a dead worker's asks can be failed at once. */
  thread: number;
}

export interface HostStats {
  thread: number;
  actors: number;
  deadLetters: number;
  pendingAsks: number;
  malformedRecords: number;
}

/** JSON of error details, or '' when they do not serialise (cycles, BigInt). */
function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v) ?? '';
  } catch {
    return '';
  }
}

export class ActorHost implements Router {
  readonly thread: number;
  readonly transport: Transport;
  private readonly cells = new Map<number, ActorCell>();
  private readonly pending = new Map<number, PendingAsk>();
  private nextCorr = 1;
  private deadLetters = 0;
  private malformedRecords = 0;
  private accepting = true;
  private readonly envelope: EnvelopeView = {
    kind: 0,
    target: 0,
    sender: 0,
    corr: 0,
    bodyOff: 0,
    bodyEnd: 0,
  };
  /** One reader per inbound ring, re-pointed at each record (no per-record allocation). */
  private readonly readers = new Map<number, Reader>();
  private readonly local: (() => void)[] = [];
  private localScheduled = false;

  constructor(
    rings: ThreadRings,
    readonly log: Logger,
    private readonly onEvent: (e: HostEvent) => void,
  ) {
    this.thread = rings.self;
    this.transport = new Transport(rings, this.deliver, (err) =>
      this.log.error({ event: 'host.delivery_error', err }, 'record delivery failed'),
    );
    this.transport.start();
  }

  // ---- Router ------------------------------------------------------------

  tell<M>(to: ActorAddress, codec: Codec<M>, msg: M, sender: number): boolean {
    if (!this.accepting) throw new SystemStoppedError();
    if (to.thread === this.thread) {
      this.enqueueLocal(to, TELL, sender, 0, msg);
      return true;
    }
    return this.transport.send(to.thread, TELL, to.id, sender, 0, codec, msg);
  }

  ask<M, R>(
    to: ActorAddress,
    codec: Codec<M>,
    replies: Codec<R>,
    msg: M,
    sender: number,
    timeoutMs: number,
  ): Promise<R> {
    if (!this.accepting) return Promise.reject(new SystemStoppedError());
    const corr = this.nextCorr;
    this.nextCorr = this.nextCorr === 0xffffffff ? 1 : this.nextCorr + 1;
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(corr);
        reject(new AskTimeoutError(`${to.name}#${to.id}`, timeoutMs));
      }, timeoutMs);
      this.pending.set(corr, {
        resolve: resolve as (v: unknown) => void,
        reject,
        timer,
        replies,
        thread: to.thread,
      });
      try {
        if (to.thread === this.thread) this.enqueueLocal(to, ASK, sender, corr, msg);
        else this.transport.send(to.thread, ASK, to.id, sender, corr, codec, msg);
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(corr);
        reject(err);
      }
    });
  }

  writable(to: ActorAddress): Promise<void> {
    return to.thread === this.thread ? Promise.resolve() : this.transport.writable(to.thread);
  }

  // ---- delivery ------------------------------------------------------------

  /** Transport sink: one record from `fromThread`, valid only during this call. */
  private readonly deliver = (
    fromThread: number,
    data: Uint8Array,
    dv: DataView,
    off: number,
    len: number,
  ): void => {
    let env: EnvelopeView;
    try {
      env = readEnvelope(dv, off, len, this.envelope);
    } catch {
      this.malformedRecords++;
      return;
    }
    if (env.kind === REPLY || env.kind === REPLY_ERROR) {
      this.settleFromRecord(env, data);
      return;
    }
    if (env.kind !== TELL && env.kind !== ASK) {
      this.malformedRecords++;
      return;
    }
    const cell = this.cells.get(env.target);
    if (!cell) {
      this.deadLetter(`#${env.target}`, { kind: env.kind, fromThread, corr: env.corr, sender: env.sender });
      return;
    }
    let reader = this.readers.get(fromThread);
    if (!reader || reader.buf !== data) {
      reader = new Reader(data, 0, 0, dv);
      this.readers.set(fromThread, reader);
    }
    cell.acceptRecord(env.kind, env.sender, env.corr, fromThread, reader, env.bodyOff, env.bodyEnd);
  };

  private settleFromRecord(env: EnvelopeView, data: Uint8Array): void {
    const p = this.pending.get(env.corr);
    if (!p) return; // timed out already: the late reply has nowhere to go
    this.pending.delete(env.corr);
    clearTimeout(p.timer);
    // Copy: the reply is consumed after this record's slot is released.
    const body = data.slice(env.bodyOff, env.bodyEnd);
    try {
      if (env.kind === REPLY) p.resolve(decodeBuffer(p.replies, body));
      else {
        const e = decodeBuffer(ReplyErrorBody, body);
        p.reject(new RemoteActorError(e.code, e.message, e.details ? JSON.parse(e.details) : undefined));
      }
    } catch (err) {
      p.reject(err);
    }
  }

  private enqueueLocal(to: ActorAddress, kind: number, sender: number, corr: number, msg: unknown): void {
    this.local.push(() => {
      const cell = this.cells.get(to.id);
      if (!cell) this.deadLetter(`${to.name}#${to.id}`, { kind, fromThread: this.thread, corr, sender });
      else cell.acceptValue(kind, sender, corr, msg);
    });
    if (!this.localScheduled) {
      this.localScheduled = true;
      // In-thread sends are delivered after the sender's turn, never re-entrantly,
      // so an actor never runs inside another actor's receive.
      queueMicrotask(this.runLocal);
    }
  }

  private readonly runLocal = (): void => {
    this.localScheduled = false;
    const batch = this.local.splice(0);
    for (const f of batch) f();
  };

  // ---- CellHost ------------------------------------------------------------

  makeReply(fromThread: number, corr: number, cell: ActorCell): Reply<unknown> {
    let done = false;
    const replies = cell.kind.replies;
    const send = (value: unknown): void => {
      if (done) return;
      done = true;
      if (fromThread === this.thread) this.settleLocal(corr, true, value);
      else this.transport.send(fromThread, REPLY, 0, cell.address.id, corr, replies, value);
    };
    const error = (err: unknown): void => {
      if (done) return;
      done = true;
      const code = (err as { code?: unknown })?.code;
      const details = (err as { details?: unknown })?.details;
      const body = {
        code: typeof code === 'string' ? code : 'ERR_ACTOR_CRASHED',
        message: err instanceof Error ? err.message : String(err),
        details: details === undefined ? '' : safeJson(details),
      };
      if (fromThread === this.thread) {
        this.settleLocal(
          corr,
          false,
          new RemoteActorError(body.code, body.message, details as Record<string, unknown>),
        );
      } else this.transport.send(fromThread, REPLY_ERROR, 0, cell.address.id, corr, ReplyErrorBody, body);
    };
    return Object.assign(send, { error, expected: true });
  }

  private settleLocal(corr: number, ok: boolean, value: unknown): void {
    const p = this.pending.get(corr);
    if (!p) return;
    this.pending.delete(corr);
    clearTimeout(p.timer);
    if (ok) p.resolve(value);
    else p.reject(value);
  }

  deadLetter(target: string, mail: { kind: number; fromThread: number; corr: number; sender: number }): void {
    this.deadLetters++;
    // Log the first few, then every power of two: a flood must not become a log flood.
    const n = this.deadLetters;
    if (n <= 10 || (n & (n - 1)) === 0) {
      this.log.warn(
        { event: 'actor.dead_letter', target, sender: mail.sender, fromThread: mail.fromThread, total: n },
        'message to a stopped or unknown actor',
      );
    }
    this.onEvent({ type: 'dead-letter', target, count: n });
    if (mail.kind === ASK) {
      const err = new DeadLetterError(target);
      if (mail.fromThread === this.thread) this.settleLocal(mail.corr, false, err);
      else
        this.transport.send(mail.fromThread, REPLY_ERROR, 0, 0, mail.corr, ReplyErrorBody, {
          code: err.code,
          message: err.message,
          details: '',
        });
    }
  }

  escalate(cell: ActorCell, err: unknown): void {
    this.onEvent({
      type: 'escalated',
      actor: cell.address,
      error: {
        code: (err as { code?: string })?.code,
        message: err instanceof Error ? err.message : String(err),
      },
    });
  }

  restarted(cell: ActorCell): void {
    this.onEvent({ type: 'restarted', actor: cell.address, restarts: cell.restarts });
  }

  removed(cell: ActorCell): void {
    if (this.cells.get(cell.address.id) === cell) this.cells.delete(cell.address.id);
  }

  // ---- control plane (comlink) ----------------------------------------------

  async spawn(spec: SpawnSpec): Promise<ActorInfo> {
    if (!this.accepting) throw new SystemStoppedError();
    const mod = (await import(spec.module)) as { default?: ActorKind<unknown, unknown, unknown> };
    const kind = mod.default;
    if (!kind || typeof kind.create !== 'function') {
      throw new ActorvmError('ERR_SPAWN_FAILED', `module ${spec.module} has no actor kind as default export`);
    }
    const address: ActorAddress = { id: spec.id, name: spec.name, kind: kind.name, thread: this.thread };
    const log = this.log.child({ actor: spec.name, id: spec.id, kind: kind.name });
    const cell = new ActorCell(address, kind, spec.args, log, this, (c, incarnation) =>
      this.makeContext(c, incarnation),
    );
    this.cells.set(spec.id, cell);
    try {
      cell.start();
    } catch (err) {
      this.cells.delete(spec.id);
      throw new ActorvmError(
        'ERR_SPAWN_FAILED',
        `actor ${spec.name} failed to start: ${(err as Error).message}`,
      );
    }
    return cell.info();
  }

  async stop(id: number, reason: 'stop' | 'shutdown' = 'stop'): Promise<boolean> {
    const cell = this.cells.get(id);
    if (!cell) return false;
    await cell.stop(reason);
    this.cells.delete(id);
    return true;
  }

  /**
   * Crashes an actor on purpose, exactly as if it had thrown: fault injection
   * for tests and chaos drills. Returns false if there is no such actor.
   */
  injectFailure(id: number, message: string): boolean {
    const cell = this.cells.get(id);
    if (!cell) return false;
    cell.crash(Object.assign(new Error(message), { code: 'ERR_INJECTED_FAILURE' }));
    return true;
  }

  list(): ActorInfo[] {
    return [...this.cells.values()].map((c) => c.info());
  }

  inspect(id: number): unknown {
    return this.cells.get(id)?.inspect();
  }

  stats(): HostStats {
    return {
      thread: this.thread,
      actors: this.cells.size,
      deadLetters: this.deadLetters,
      pendingAsks: this.pending.size,
      malformedRecords: this.malformedRecords,
    };
  }

  rings(): RingStats[] {
    return this.transport.stats();
  }

  /** True when this thread has nothing in flight: rings read, mailboxes empty, nothing running. */
  quiet(): boolean {
    if (!this.transport.quiet || this.local.length > 0) return false;
    for (const c of this.cells.values()) if (!c.idle && c.state !== 'failed') return false;
    return true;
  }

  /** Resolves when every actor here is idle (one pass; the system repeats until globally quiet). */
  async settle(): Promise<boolean> {
    await Promise.all([...this.cells.values()].map((c) => c.whenIdle()));
    // Let ring consumers and the publish microtask run once more.
    await new Promise((r) => setImmediate(r));
    return this.quiet();
  }

  /** Refuses new sends from this thread (ERR_SYSTEM_STOPPED); what was accepted still flows. */
  close(): void {
    this.accepting = false;
  }

  /** Stops accepting new sends from this thread and stops every actor (their mailboxes drain first). */
  async shutdown(): Promise<void> {
    await Promise.all([...this.cells.keys()].map((id) => this.stop(id, 'shutdown')));
    this.accepting = false;
    this.transport.flushNow();
  }

  /** Rejects every pending ask to an actor on `thread` (its worker is gone). */
  failPendingTo(thread: number, err: unknown): void {
    for (const [corr, p] of this.pending) {
      if (p.thread !== thread) continue;
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(corr);
    }
  }

  /** Routes an error thrown from an actor's own callback to that actor. Returns false if unattributed. */
  attributeError(err: unknown): boolean {
    const who = currentActor.getStore();
    if (!who || who.incarnation < 0) return false;
    who.cell.crashFrom(who.incarnation, err);
    return true;
  }

  private makeContext(cell: ActorCell, incarnation: number): ActorContext<unknown> {
    const countOut = (): void => {
      cell.messagesOut++;
    };
    const id = cell.address.id;
    return {
      id,
      name: cell.address.name,
      kind: cell.address.kind,
      thread: this.thread,
      self: new ActorRef(cell.address, cell.kind, this, id),
      log: cell.log,
      ref: (address, codecs) => new ActorRef(address, codecs, this, id, countOut),
      fail: (err) => cell.crashFrom(incarnation, err),
    };
  }
}
