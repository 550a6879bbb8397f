/**
 * Demo actor: on `run`, streams `count` pings of `size` bytes to an echo actor
 * on another worker, keeping at most `window` in flight, and replies with the
 * elapsed time once every pong is back.
 */
import { f64, type Infer, struct, u32, union } from '../../protocol/codec.js';
import {
  type Actor,
  type ActorAddress,
  type ActorContext,
  defineActor,
  type Reply,
} from '../../runtime/actor.js';
import type { ActorRef } from '../../runtime/actor-ref.js';
import DemoEcho, { type EchoMessage } from './echo.js';

const Messages = union({
  run: struct({ count: u32, size: u32, window: u32 }),
  pong: struct({ seq: u32 }),
});
export type PingerMessage = Infer<typeof Messages>;

class Pinger implements Actor<PingerMessage, number> {
  private readonly echo: ActorRef<EchoMessage, void>;
  private sent = 0;
  private received = 0;
  private target = 0;
  private payload = new Uint8Array(0);
  private started = 0;
  private done: Reply<number> | undefined;
  private runs = 0;

  constructor(
    private readonly ctx: ActorContext<PingerMessage>,
    echo: ActorAddress,
  ) {
    this.echo = ctx.ref(echo, DemoEcho);
  }

  receive(msg: PingerMessage, reply: Reply<number>): void {
    if (msg.type === 'run') {
      this.target = msg.count;
      this.sent = 0;
      this.received = 0;
      this.payload = new Uint8Array(msg.size);
      this.started = performance.now();
      this.done = reply;
      this.runs++;
      while (this.sent < Math.min(msg.window, msg.count)) this.ping();
      return;
    }
    this.received++;
    if (this.sent < this.target) this.ping();
    if (this.received === this.target && this.done) {
      this.done(performance.now() - this.started);
      this.done = undefined;
    }
  }

  private ping(): void {
    this.echo.tell({
      type: 'ping',
      seq: this.sent++,
      replyTo: this.ctx.id,
      replyThread: this.ctx.thread,
      payload: this.payload,
    });
  }

  inspect(): unknown {
    return { runs: this.runs, sent: this.sent, received: this.received, inFlight: this.sent - this.received };
  }
}

export default defineActor({
  name: 'demo.pinger',
  module: import.meta.url,
  placement: 'vm',
  messages: Messages,
  replies: f64,
  create: (ctx: ActorContext<PingerMessage>, args: { echo: ActorAddress }) => new Pinger(ctx, args.echo),
});
