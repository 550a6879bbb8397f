/**
 * The main thread's inbox for everything VM actors stream back: operation
 * output, credits, results, lifecycle changes. A local actor (it runs on the
 * main thread, so its args can hold the live registry it dispatches into).
 */

import { type SinkMessage, SinkMessages } from '../actors/vm/messages.js';
import { empty } from '../protocol/codec.js';
import { type Actor, type ActorContext, defineActor } from '../runtime/actor.js';

/** The receiving side of one guest operation. */
export interface OperationHandler {
  /** A chunk of output; `data` is only valid during the call. */
  out(channel: number, data: Uint8Array): void;
  started(info: unknown): void;
  credit(bytes: number): void;
  done(
    result: { error?: { code: string; message: string; details?: unknown } } & Record<string, unknown>,
  ): void;
}

export type StateListener = (state: string, detail: string) => void;

export class SinkRegistry {
  private next = 1;
  private readonly operations = new Map<number, { sandbox: number; handler: OperationHandler }>();
  readonly states = new Map<number, StateListener>();

  /** Registers a new operation of `sandbox`; returns its id (u32, never 0). */
  add(sandbox: number, handler: OperationHandler): number {
    const id = this.next;
    this.next = this.next >= 0xfffffffe ? 1 : this.next + 1;
    this.operations.set(id, { sandbox, handler });
    return id;
  }

  get(id: number): OperationHandler | undefined {
    return this.operations.get(id)?.handler;
  }

  /** Removes and returns an operation's handler (it ended). */
  take(id: number): OperationHandler | undefined {
    const op = this.operations.get(id);
    this.operations.delete(id);
    return op?.handler;
  }

  /** Ends every operation of a sandbox that went away without answering them. */
  failSandbox(sandbox: number, error: { code: string; message: string }): void {
    for (const [id, op] of this.operations) {
      if (op.sandbox !== sandbox) continue;
      this.operations.delete(id);
      op.handler.done({ error });
    }
  }
}

class Sink implements Actor<SinkMessage> {
  constructor(private readonly registry: SinkRegistry) {}

  receive(msg: SinkMessage): void {
    const r = this.registry;
    switch (msg.type) {
      case 'out':
        r.get(msg.id)?.out(msg.channel, msg.data);
        return;
      case 'started':
        r.get(msg.id)?.started(JSON.parse(msg.info));
        return;
      case 'credit':
        r.get(msg.id)?.credit(msg.bytes);
        return;
      case 'done':
        r.take(msg.id)?.done(JSON.parse(msg.result));
        return;
      case 'state':
        r.states.get(msg.sandbox)?.(msg.state, msg.detail);
        return;
    }
  }
}

export default defineActor({
  name: 'sandbox.sink',
  module: import.meta.url,
  placement: 'any',
  messages: SinkMessages,
  replies: empty,
  create: (_ctx: ActorContext<SinkMessage>, args: { registry: SinkRegistry }) => new Sink(args.registry),
});
