/**
 * The host-side container of one actor: its lifecycle, mailbox and supervisor.
 *
 * Lifecycle:  starting → running ⇄ restarting → … → stopping → stopped
 *                                └──(past intensity)──→ failed
 *
 * Delivery is zero-copy when it can be: a record arriving while the actor is
 * idle is decoded straight from the ring and handled before the ring slot is
 * released. Only when the actor is busy (an async `receive` in flight),
 * restarting, or has a backlog is the record body copied into the mailbox.
 *
 * Crash attribution: `create` and `receive` run inside an AsyncLocalStorage
 * context holding the cell, so an exception thrown later from a socket or
 * timer callback the actor registered is traced back to it by the worker's
 * uncaughtException handler, and only this actor restarts.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { freeze } from 'immer';
import type { Logger } from 'pino';
import { Reader } from '../protocol/codec.js';
import { ASK } from '../protocol/envelope.js';
import {
  type Actor,
  type ActorAddress,
  type ActorContext,
  type ActorKind,
  DEFAULT_SUPERVISION,
  type Reply,
  type StopReason,
} from './actor.js';
import { RestartPolicy } from './restart-policy.js';

export type CellState = 'starting' | 'running' | 'restarting' | 'stopping' | 'stopped' | 'failed';

/**
 * Whose code is running right now (for crash attribution). The incarnation
 * tells a callback of a crashed-and-restarted instance from the new one, so a
 * late error from the old instance cannot take the new one down.
 */
export interface Attribution {
  cell: ActorCell;
  incarnation: number;
}
export const currentActor = new AsyncLocalStorage<Attribution>();

interface Mail {
  kind: number;
  sender: number;
  corr: number;
  fromThread: number;
  /** Copied body of a record that came through a ring… */
  body?: Uint8Array;
  /** …or the message object of an in-thread send. */
  value?: unknown;
  hasValue: boolean;
}

/** What a cell needs from its host. */
export interface CellHost {
  readonly thread: number;
  makeReply(fromThread: number, corr: number, cell: ActorCell): Reply<unknown>;
  deadLetter(target: string, mail: { kind: number; fromThread: number; corr: number; sender: number }): void;
  escalate(cell: ActorCell, err: unknown): void;
  restarted(cell: ActorCell): void;
  removed(cell: ActorCell): void;
}

/** Row of `actorctl ps`. */
export interface ActorInfo {
  id: number;
  name: string;
  kind: string;
  worker: number;
  state: CellState;
  mailbox: number;
  messagesIn: number;
  messagesOut: number;
  restarts: number;
  lastError?: string;
}

const NO_REPLY: Reply<unknown> = Object.assign(() => {}, { error: () => {}, expected: false });

export class ActorCell {
  state: CellState = 'starting';
  messagesIn = 0;
  messagesOut = 0;
  restarts = 0;
  lastError: string | undefined;
  private instance: Actor<unknown, unknown> | undefined;
  private busy = false;
  private readonly mailbox: Mail[] = [];
  private readonly restartPolicy: RestartPolicy;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopWaiters: (() => void)[] = [];
  private stopReason: StopReason = 'stop';
  /** Bumped by every (re)start; see `Attribution`. */
  private incarnation = 0;
  private attribution: Attribution = { cell: this, incarnation: 0 };
  /** Resolves `idle()` callers when the mailbox empties and nothing runs. */
  private idleWaiters: (() => void)[] = [];

  constructor(
    readonly address: ActorAddress,
    readonly kind: ActorKind<unknown, unknown, unknown>,
    private readonly args: unknown,
    readonly log: Logger,
    private readonly host: CellHost,
    private readonly makeContext: (cell: ActorCell, incarnation: number) => ActorContext<unknown>,
  ) {
    this.restartPolicy = new RestartPolicy({ ...DEFAULT_SUPERVISION, ...kind.supervision });
  }

  get label(): string {
    return `${this.address.name}#${this.address.id}`;
  }

  get mailboxDepth(): number {
    return this.mailbox.length;
  }

  /** True when nothing runs and nothing waits (a restarting actor is not idle). */
  get idle(): boolean {
    return (
      !this.busy && this.mailbox.length === 0 && this.state !== 'restarting' && this.state !== 'starting'
    );
  }

  /** Creates the actor. Throws if the very first `create` fails (spawn reports it). */
  start(): void {
    this.state = 'starting';
    const incarnation = ++this.incarnation;
    this.attribution = { cell: this, incarnation };
    this.instance = currentActor.run(this.attribution, () =>
      this.kind.create(this.makeContext(this, incarnation), this.args),
    );
    this.state = 'running';
    this.log.info({ event: 'actor.started', restarts: this.restarts }, 'actor started');
    this.pump();
  }

  /** A record from a ring, decoded in place when the actor is free. */
  acceptRecord(
    kind: number,
    sender: number,
    corr: number,
    fromThread: number,
    reader: Reader,
    bodyOff: number,
    bodyEnd: number,
  ): void {
    if (this.state === 'running' && !this.busy && this.mailbox.length === 0) {
      let msg: unknown;
      try {
        msg = this.kind.messages.read(reader.reset(bodyOff, bodyEnd));
      } catch (err) {
        this.malformed(kind, fromThread, corr, sender, err);
        return;
      }
      this.invoke(msg, kind, fromThread, corr);
      return;
    }
    if (!this.acceptsMail()) {
      this.host.deadLetter(this.label, { kind, fromThread, corr, sender });
      return;
    }
    this.mailbox.push({
      kind,
      sender,
      corr,
      fromThread,
      body: reader.buf.slice(bodyOff, bodyEnd),
      hasValue: false,
    });
  }

  /** A message sent from this same thread (already an object; never copied). */
  acceptValue(kind: number, sender: number, corr: number, value: unknown): void {
    if (!this.acceptsMail()) {
      this.host.deadLetter(this.label, { kind, fromThread: this.host.thread, corr, sender });
      return;
    }
    if (this.state === 'running' && !this.busy && this.mailbox.length === 0) {
      this.invoke(value, kind, this.host.thread, corr);
      return;
    }
    this.mailbox.push({ kind, sender, corr, fromThread: this.host.thread, value, hasValue: true });
  }

  /** A failure reported by code of one incarnation; ignored if that incarnation is gone. */
  crashFrom(incarnation: number, err: unknown): void {
    if (incarnation !== this.incarnation || this.instance === undefined) {
      this.log.warn({ event: 'actor.stale_error', err }, 'error from a previous incarnation ignored');
      return;
    }
    this.crash(err);
  }

  /** Reports a failure of this actor (from `receive`, a callback, or `ctx.fail`). */
  crash(err: unknown): void {
    if (this.state === 'stopping') {
      // Already on its way out: no restart, but finish the stop.
      this.lastError = errorText(err);
      this.log.error({ event: 'actor.crashed', err, stopping: true }, 'actor crashed while stopping');
      this.busy = false;
      this.pump();
      return;
    }
    if (this.state !== 'running' && this.state !== 'starting') return;
    this.lastError = errorText(err);
    this.log.error({ event: 'actor.crashed', err }, 'actor crashed');
    const instance = this.instance;
    this.instance = undefined;
    this.busy = false;
    const decision = this.restartPolicy.onCrash(Date.now());
    if (decision.action === 'escalate') {
      this.state = 'failed';
      this.log.error({ event: 'actor.escalated', crashes: decision.crashes }, 'restart intensity exceeded');
      void this.release(instance, 'crash');
      this.rejectMailbox();
      this.host.escalate(this, err);
      this.notifyIdle();
      return;
    }
    this.state = 'restarting';
    this.restarts++;
    this.log.warn(
      { event: 'actor.restarting', delayMs: decision.delayMs, restarts: this.restarts },
      'restarting',
    );
    void this.release(instance, 'crash').then(() => {
      if (this.state !== 'restarting') return;
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined;
        if (this.state !== 'restarting') return;
        try {
          this.start();
          this.host.restarted(this);
        } catch (e) {
          this.state = 'running';
          this.crash(e);
        }
      }, decision.delayMs);
    });
  }

  /**
   * Stops the actor: what is already in the mailbox is handled first, later
   * messages become dead letters, then `stop()` releases its resources.
   */
  stop(reason: StopReason = 'stop'): Promise<void> {
    if (this.state === 'stopped') return Promise.resolve();
    const done = new Promise<void>((resolve) => this.stopWaiters.push(resolve));
    if (this.state === 'stopping') return done;
    this.stopReason = reason;
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = undefined;
    }
    const wasFailed = this.state === 'failed' || this.state === 'restarting';
    this.state = 'stopping';
    this.log.info({ event: 'actor.stopping', reason }, 'actor stopping');
    if (wasFailed) this.rejectMailbox();
    this.maybeFinishStop();
    return done;
  }

  /** Resolves when the actor has nothing to do. */
  whenIdle(): Promise<void> {
    if (this.idle || this.state === 'failed' || this.state === 'stopped') return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  info(): ActorInfo {
    return {
      id: this.address.id,
      name: this.address.name,
      kind: this.address.kind,
      worker: this.address.thread,
      state: this.state,
      mailbox: this.mailbox.length,
      messagesIn: this.messagesIn,
      messagesOut: this.messagesOut,
      restarts: this.restarts,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  /** Immutable snapshot for `actorctl inspect`: runtime info plus the actor's own view. */
  inspect(): unknown {
    const own = this.instance?.inspect?.();
    // A deeply frozen snapshot: safe to hand to the control plane while the
    // actor keeps running. Actors that keep their state as immer drafts hand
    // out their current (already frozen) state at no cost.
    return freeze({ ...this.info(), actorState: own ?? null }, true);
  }

  private acceptsMail(): boolean {
    return this.state === 'running' || this.state === 'restarting' || this.state === 'starting';
  }

  private invoke(msg: unknown, kind: number, fromThread: number, corr: number): void {
    const reply = kind === ASK ? this.host.makeReply(fromThread, corr, this) : NO_REPLY;
    const instance = this.instance!;
    this.messagesIn++;
    let result: void | Promise<void>;
    try {
      result = currentActor.run(this.attribution, () => instance.receive(msg, reply));
    } catch (err) {
      reply.error(err);
      this.crash(err);
      return;
    }
    if (result && typeof (result as Promise<void>).then === 'function') {
      this.busy = true;
      (result as Promise<void>).then(
        () => {
          if (this.instance !== instance) return;
          this.busy = false;
          this.restartPolicy.onHealthy();
          this.pump();
        },
        (err: unknown) => {
          if (this.instance !== instance) return;
          reply.error(err);
          this.crash(err);
        },
      );
    } else {
      this.restartPolicy.onHealthy();
    }
  }

  /** Handles queued mail while the actor is free. */
  private pump(): void {
    while ((this.state === 'running' || this.state === 'stopping') && !this.busy && this.mailbox.length > 0) {
      const m = this.mailbox.shift()!;
      let msg: unknown;
      if (m.hasValue) msg = m.value;
      else {
        try {
          msg = this.kind.messages.read(new Reader(m.body!));
        } catch (err) {
          this.malformed(m.kind, m.fromThread, m.corr, m.sender, err);
          continue;
        }
      }
      this.invoke(msg, m.kind, m.fromThread, m.corr);
    }
    if (this.state === 'stopping') this.maybeFinishStop();
    else if (this.idle) this.notifyIdle();
  }

  private maybeFinishStop(): void {
    if (this.state !== 'stopping' || this.busy || this.mailbox.length > 0) return;
    const instance = this.instance;
    this.instance = undefined;
    void this.release(instance, this.stopReason).then(() => {
      this.state = 'stopped';
      this.log.info({ event: 'actor.stopped', reason: this.stopReason }, 'actor stopped');
      this.host.removed(this);
      this.notifyIdle();
      for (const w of this.stopWaiters.splice(0)) w();
    });
  }

  /** Calls the actor's own `stop` hook; its failures are logged, never rethrown. */
  private async release(instance: Actor<unknown, unknown> | undefined, reason: StopReason): Promise<void> {
    if (!instance?.stop) return;
    try {
      await currentActor.run({ cell: this, incarnation: -1 }, () => instance.stop!(reason));
    } catch (err) {
      this.log.warn({ event: 'actor.stop_failed', err }, 'stop hook failed');
    }
  }

  private rejectMailbox(): void {
    for (const m of this.mailbox.splice(0)) this.host.deadLetter(this.label, m);
  }

  private malformed(kind: number, fromThread: number, corr: number, sender: number, err: unknown): void {
    this.log.warn(
      { event: 'actor.malformed_message', err, sender },
      'dropped a message that does not decode',
    );
    if (kind === ASK) this.host.makeReply(fromThread, corr, this).error(err);
  }

  private notifyIdle(): void {
    for (const w of this.idleWaiters.splice(0)) w();
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) return `${(err as { code?: string }).code ?? err.name}: ${err.message}`;
  return String(err);
}
