/** Demo actor: answers every ping with a pong to the sender it names. */
import { bytes, empty, type Infer, struct, u32, union } from '../../protocol/codec.js';
import { type Actor, type ActorContext, defineActor } from '../../runtime/actor.js';
import DemoPinger from './pinger.js';

const Messages = union({
  ping: struct({ seq: u32, replyTo: u32, replyThread: u32, payload: bytes }),
});
export type EchoMessage = Infer<typeof Messages>;

class Echo implements Actor<EchoMessage> {
  private pings = 0;
  private bytes = 0;
  constructor(private readonly ctx: ActorContext<EchoMessage>) {}

  receive(msg: EchoMessage): void {
    this.pings++;
    this.bytes += msg.payload.byteLength;
    const to = { id: msg.replyTo, thread: msg.replyThread, name: 'pinger', kind: DemoPinger.name };
    this.ctx.ref(to, DemoPinger).tell({ type: 'pong', seq: msg.seq });
  }

  inspect(): unknown {
    return { pings: this.pings, bytes: this.bytes };
  }
}

export default defineActor({
  name: 'demo.echo',
  module: import.meta.url,
  // Demo stand-in for a flow shard: lands on a different worker than the pinger.
  placement: 'flow',
  messages: Messages,
  replies: empty,
  create: (ctx: ActorContext<EchoMessage>) => new Echo(ctx),
});
