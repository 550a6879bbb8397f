/**
 * What an actor is, from the point of view of someone writing one.
 *
 * An actor kind is a module whose default export is `defineActor({...})`: a
 * name, where it may be placed, the codecs of the messages it accepts and of
 * its replies, and a factory. Worker hosts `import()` the module by URL to
 * spawn it, so the definition is the only thing the two threads share.
 *
 *     export default defineActor({
 *       name: 'demo.counter',
 *       module: import.meta.url,
 *       placement: 'any',
 *       messages: union({ add: struct({ n: u32 }), get: struct({}) }),
 *       replies: u32,
 *       create: (ctx, args: { start: number }) => new Counter(ctx, args.start),
 *     });
 *
 * An actor handles one message at a time. `receive` may return a promise;
 * until it settles, later messages wait in the mailbox. A throw or a rejected
 * promise is a crash: the supervisor restarts the actor with fresh state
 * (a new `create`), or escalates past the restart intensity.
 */
import type { Logger } from 'pino';
import type { Codec } from '../protocol/codec.js';
import type { ActorRef } from './actor-ref.js';

/** Which workers an actor may live on. VM actors and flow shards never share a worker when there are two or more. */
export type Placement = 'vm' | 'flow' | 'any';

/** One-for-one supervision: restart intensity within a period, exponential backoff between restarts. */
export interface SupervisionPolicy {
  /** Restarts allowed within `periodMs`; one more escalates. */
  maxRestarts: number;
  periodMs: number;
  /** First restart delay; doubles per consecutive crash, capped at `backoffMaxMs`. */
  backoffMinMs: number;
  backoffMaxMs: number;
}

export const DEFAULT_SUPERVISION: SupervisionPolicy = {
  maxRestarts: 5,
  periodMs: 10_000,
  backoffMinMs: 10,
  backoffMaxMs: 2_000,
};

/** Where an actor lives: enough to build a ref to it on any thread. Plain data. */
export interface ActorAddress {
  readonly id: number;
  readonly name: string;
  /** Actor kind name, e.g. `flow.shard`. */
  readonly kind: string;
  /** Thread index: 0 is the main thread, 1..N the workers. */
  readonly thread: number;
}

/** How an actor answers an `ask`. Calling it for a `tell` does nothing. */
export interface Reply<R> {
  (value: R): void;
  /** Fails the ask with this error (its `code` crosses threads). */
  error(err: unknown): void;
  /** True when the sender awaits an answer (the message came by `ask`). */
  readonly expected: boolean;
}

export interface Actor<M, R = void> {
  receive(msg: M, reply: Reply<R>): void | Promise<void>;
  /** An immutable snapshot of the actor's state for `actorctl inspect` (never on the message path). */
  inspect?(): unknown;
  /** Release resources. Called on stop, on shutdown, and after a crash before the restart. */
  stop?(reason: StopReason): void | Promise<void>;
}

export type StopReason = 'stop' | 'crash' | 'shutdown';

/** What an actor gets from its host. */
export interface ActorContext<M = unknown> {
  readonly id: number;
  readonly name: string;
  readonly kind: string;
  readonly thread: number;
  readonly self: ActorRef<M, unknown>;
  /** pino child logger bound to { actor, kind, worker }. */
  readonly log: Logger;
  /**
   * A typed ref to another actor, for sending from this actor (counts as this
   * actor's output). `codecs` is the target's kind, or just its two codecs.
   */
  ref<M, R>(
    address: ActorAddress,
    codecs: { readonly messages: Codec<M>; readonly replies: Codec<R> },
  ): ActorRef<M, R>;
  /**
   * Reports a failure that happened outside `receive` (a socket callback, a
   * timer): the actor crashes and its supervisor takes over, exactly as if
   * `receive` had thrown. Errors thrown from callbacks the actor registered
   * are attributed to it automatically; this is for errors it catches itself.
   */
  fail(err: unknown): void;
}

export interface ActorKind<M, R = void, A = unknown> {
  readonly name: string;
  /** `import.meta.url` of the module whose default export this is. */
  readonly module: string;
  readonly placement: Placement;
  readonly messages: Codec<M>;
  readonly replies: Codec<R>;
  readonly supervision?: Partial<SupervisionPolicy>;
  create(ctx: ActorContext<M>, args: A): Actor<M, R>;
}

export type MessageOf<K> = K extends ActorKind<infer M, any, any> ? M : never;
export type ReplyOf<K> = K extends ActorKind<any, infer R, any> ? R : never;
export type ArgsOf<K> = K extends ActorKind<any, any, infer A> ? A : never;

/** Declares an actor kind (identity function that fixes the types). */
export function defineActor<M, R = void, A = unknown>(def: ActorKind<M, R, A>): ActorKind<M, R, A> {
  return Object.freeze(def);
}
