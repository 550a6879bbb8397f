/**
 * A typed handle to an actor, usable from any thread. Sending goes through the
 * thread's router: into the ring toward the target's thread, or in-thread when
 * the target lives here. A ref serialises as its plain `ActorAddress`, so refs
 * travel inside spawn arguments and are rebuilt with `ctx.ref(address, Kind)`.
 */
import type { Codec } from '../protocol/codec.js';
import type { ActorAddress } from './actor.js';

/** The per-thread delivery service refs send through (implemented by ActorHost). */
export interface Router {
  readonly thread: number;
  tell<M>(to: ActorAddress, codec: Codec<M>, msg: M, sender: number): boolean;
  ask<M, R>(
    to: ActorAddress,
    codec: Codec<M>,
    replies: Codec<R>,
    msg: M,
    sender: number,
    timeoutMs: number,
  ): Promise<R>;
  writable(to: ActorAddress): Promise<void>;
}

export interface AskOptions {
  /** Reject with ERR_ASK_TIMEOUT after this long (default 5 s). */
  timeoutMs?: number;
}

export const DEFAULT_ASK_TIMEOUT_MS = 5_000;

export class ActorRef<M, R = void> {
  constructor(
    readonly address: ActorAddress,
    private readonly codecs: { readonly messages: Codec<M>; readonly replies: Codec<R> },
    private readonly router: Router,
    /** Actor id of the sender (0: the main thread / no actor), for stats and dead-letter logs. */
    private readonly sender = 0,
    private readonly onSend?: () => void,
  ) {}

  get id(): number {
    return this.address.id;
  }

  get name(): string {
    return this.address.name;
  }

  /**
   * Fire-and-forget. Returns false when the message was queued behind a full
   * ring: it will still be delivered, but the sender should await `writable()`
   * before sending more (like `stream.write`).
   */
  tell(msg: M): boolean {
    this.onSend?.();
    return this.router.tell(this.address, this.codecs.messages, msg, this.sender);
  }

  /** Request/response. Rejects with a typed error: ERR_ASK_TIMEOUT, ERR_DEAD_LETTER, ERR_ACTOR_CRASHED, or the actor's own. */
  ask(msg: M, opts: AskOptions = {}): Promise<R> {
    this.onSend?.();
    return this.router.ask(
      this.address,
      this.codecs.messages,
      this.codecs.replies,
      msg,
      this.sender,
      opts.timeoutMs ?? DEFAULT_ASK_TIMEOUT_MS,
    );
  }

  /** Resolves when sends to this actor go straight into its ring again. */
  writable(): Promise<void> {
    return this.router.writable(this.address);
  }

  toJSON(): ActorAddress {
    return this.address;
  }
}
