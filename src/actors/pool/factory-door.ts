/**
 * The pools' door to the sandbox factory: a local actor on the main thread
 * (where actors are spawned), so pool actors on workers reach the factory
 * with ordinary messages. It only hands each message to the PoolService.
 */
import { str } from '../../protocol/codec.js';
import { type Actor, type ActorContext, defineActor, type Reply } from '../../runtime/actor.js';
import { type FactoryDoorMessage, FactoryDoorMessages, type FillPriority } from './messages.js';

/** What the door needs from the main thread (implemented by PoolService). */
export interface FactoryDoorTarget {
  fill(pool: string, priority: FillPriority): void;
  destroy(pool: string, sandbox: number, reason: string): void;
  adopt(pool: string): string;
  claimed(pool: string, sandbox: number): void;
  promote(pool: string): void;
}

class FactoryDoor implements Actor<FactoryDoorMessage, string> {
  constructor(private readonly target: FactoryDoorTarget) {}

  receive(msg: FactoryDoorMessage, reply: Reply<string>): void {
    switch (msg.type) {
      case 'fill':
        this.target.fill(msg.pool, msg.priority as FillPriority);
        return;
      case 'destroy':
        this.target.destroy(msg.pool, msg.sandbox, msg.reason);
        return;
      case 'adopt':
        reply(this.target.adopt(msg.pool));
        return;
      case 'claimed':
        this.target.claimed(msg.pool, msg.sandbox);
        return;
      case 'promote':
        this.target.promote(msg.pool);
        return;
    }
  }
}

export default defineActor({
  name: 'pool.factory-door',
  module: import.meta.url,
  placement: 'any',
  messages: FactoryDoorMessages,
  replies: str,
  create: (_ctx: ActorContext<FactoryDoorMessage>, args: { target: FactoryDoorTarget }) =>
    new FactoryDoor(args.target),
});
