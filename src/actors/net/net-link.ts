/**
 * A standalone guest link: an actor hosting just a GuestNetwork over a frame
 * stream, used by tests and benches before (and besides) full sandboxes.
 * Whoever spawns it registers the sandbox with `NetworkService.attach`. The
 * stream is a spawned process's fd 3 (e.g. the agent's TAP relay inside a
 * network namespace), or a Unix socket we connect to or listen on (QEMU
 * `-netdev stream` either way round).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { type Infer, str, struct, union } from '../../protocol/codec.js';
import {
  type Actor,
  type ActorAddress,
  type ActorContext,
  defineActor,
  type Reply,
} from '../../runtime/actor.js';
import type { NetConfig } from './config.js';
import type { FlowHashKey } from './flow-hash.js';
import FlowShard from './flow-shard.js';
import { GuestNetwork } from './guest-network.js';
import { asBytes, guestLinkVariants } from './messages.js';

export type LinkTransport =
  /**
   * A process whose fd 3 carries the frames — or, with `connectPath`, which
   * serves them on that Unix socket (the agent's `--tap-listen`). With
   * `readyFd`, the link is ready once the process writes a line to that fd
   * (the agent's `--ready-fd`).
   */
  | { kind: 'spawn'; argv: string[]; env?: Record<string, string>; readyFd?: number; connectPath?: string }
  | { kind: 'connect'; path: string }
  | { kind: 'listen'; path: string };

export interface NetLinkArgs {
  sandbox: number;
  config: NetConfig;
  shards: ActorAddress[];
  hashKey: FlowHashKey;
  transport: LinkTransport;
}

const Messages = union({
  ...guestLinkVariants,
  /** Replies "ready" once the shards know the sandbox and the stream is attached. */
  ready: struct({}),
  /** Replies GuestNetworkStats as JSON. */
  stats: struct({}),
});
type Message = Infer<typeof Messages>;

class NetLink implements Actor<Message, string> {
  private readonly net: GuestNetwork;
  private child: ChildProcess | undefined;
  private server: net.Server | undefined;
  private readiness: Promise<void>;
  private stopped = false;

  constructor(
    private readonly ctx: ActorContext<Message>,
    args: NetLinkArgs,
  ) {
    const shards = args.shards.map((a) => ctx.ref(a, FlowShard));
    this.net = new GuestNetwork(args.sandbox, args.config, shards, args.hashKey, ctx.log);
    this.readiness = this.start(args);
    this.readiness.catch((err) => ctx.fail(err));
  }

  private async start(args: NetLinkArgs): Promise<void> {
    const t = args.transport;
    if (t.kind === 'connect') await this.net.connect(t.path);
    else if (t.kind === 'spawn' && t.connectPath) {
      await this.openStream(t);
      await this.net.connect(t.connectPath);
    } else this.net.attachStream(await this.openStream(t));
    this.ctx.log.info({ event: 'net.link_ready', sandbox: args.sandbox }, 'guest link ready');
  }

  private openStream(t: LinkTransport): Promise<Duplex> {
    if (t.kind === 'spawn') {
      const extra = t.readyFd ? Array<'pipe' | 'ignore'>(t.readyFd - 3).fill('pipe') : [];
      const child = spawn(t.argv[0], t.argv.slice(1), {
        stdio: ['ignore', 'inherit', 'inherit', t.connectPath ? 'ignore' : 'pipe', ...extra],
        env: { ...process.env, ...t.env },
      });
      this.child = child;
      const exited = new Promise<never>((_, reject) =>
        child.once('exit', (code, signal) => {
          if (!this.stopped)
            this.ctx.log.warn({ event: 'net.link_child_exit', code, signal }, 'link process exited');
          reject(new Error(`link process exited (code ${code}, signal ${signal}) before it was ready`));
        }),
      );
      exited.catch(() => {});
      const frames = child.stdio[3] as Duplex;
      if (!t.readyFd) return Promise.resolve(frames);
      const ready = new Promise<Duplex>((resolve) => {
        (child.stdio[t.readyFd!] as Duplex).once('data', () => resolve(frames));
      });
      return Promise.race([ready, exited]);
    }
    if (t.kind === 'connect') throw new Error('connect transports are opened by GuestNetwork.connect');
    return new Promise((resolve, reject) => {
      const server = net.createServer((s) => {
        server.close();
        resolve(s);
      });
      this.server = server;
      server.once('error', reject);
      server.listen(t.path);
    });
  }

  receive(msg: Message, reply: Reply<string>): void | Promise<void> {
    switch (msg.type) {
      case 'frame':
        this.net.toGuest(asBytes(msg.frame));
        return;
      case 'ready':
        return this.readiness.then(() => reply('ready'));
      case 'stats':
        reply(JSON.stringify(this.net.stats()));
        return;
    }
  }

  inspect(): unknown {
    return this.net.stats();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.net.closeStream();
    this.server?.close();
    if (this.child && this.child.exitCode === null) {
      const exited = new Promise((r) => this.child!.once('exit', r));
      this.child.kill('SIGKILL');
      await exited;
    }
  }
}

export default defineActor({
  name: 'net.link',
  module: import.meta.url,
  placement: 'vm',
  messages: Messages,
  replies: str,
  create: (ctx: ActorContext<Message>, args: NetLinkArgs) => new NetLink(ctx, args),
});
