/**
 * The network layer as the main thread sees it: spawns the flow shards (on
 * the flow workers), hands out what a guest side needs to join them, routes
 * port-forward requests to a shard, and gathers flows and stats for
 * `actorctl flows`.
 */
import { EventEmitter } from 'node:events';
import type { ActorAddress } from '../../runtime/actor.js';
import type { ActorRef } from '../../runtime/actor-ref.js';
import type { ActorSystem } from '../../runtime/actor-system.js';
import { eligibleWorkers } from '../../runtime/placement.js';
import type { NetConfig } from './config.js';
import type { FlowInfo } from './flow-base.js';
import { type FlowHashKey, flowHash, newFlowHashKey } from './flow-hash.js';
import FlowShard from './flow-shard.js';
import type { ShardMessage } from './messages.js';
import type { ForwardRule } from './port-forwards.js';

export interface NetworkServiceOptions {
  /** Shards per flow worker (default 1). */
  shardsPerWorker?: number;
}

/** A flow as `actorctl flows` lists it: which shard owns it, and what it is. */
export interface FlowRow extends FlowInfo {
  shard: number;
}

/** A sandbox as the network layer remembers it, to re-attach it to a restarted shard. */
interface Attachment {
  link: ActorAddress;
  /** NetConfig as JSON; replaced by a rebind. */
  config: string;
  /** Forwards in force, by `proto/hostPort`, with the host port they really got. */
  forwards: Map<string, ForwardRule>;
}

const forwardKey = (proto: string, hostPort: number): string => `${proto}/${hostPort}`;

/**
 * Events: `replayed` ({ shard }) once a restarted shard has every sandbox and
 * forward back; `replay_failed` ({ shard, error }).
 */
export class NetworkService extends EventEmitter {
  private readonly attached = new Map<number, Attachment>();

  private constructor(
    private readonly system: ActorSystem,
    readonly hashKey: FlowHashKey,
    private readonly shards: ActorRef<ShardMessage, string>[],
  ) {
    super();
    // A shard that crashed comes back empty: give it every sandbox and forward
    // it had. Its own flows are gone (their guests see resets); other shards'
    // flows never noticed.
    system.on('restart', ({ actor }: { actor: ActorAddress }) => {
      const shard = this.shards.find((s) => s.id === actor.id);
      if (shard) void this.replay(shard);
    });
  }

  static async start(system: ActorSystem, opts: NetworkServiceOptions = {}): Promise<NetworkService> {
    const hashKey = newFlowHashKey();
    const workers = eligibleWorkers('flow', system.workers);
    const perWorker = opts.shardsPerWorker ?? 1;
    const count = workers.length * perWorker;
    const shards = await Promise.all(
      Array.from({ length: count }, (_, index) =>
        system.spawn(
          FlowShard,
          { index, count, hashKey },
          { name: `flow-shard-${index}`, worker: workers[index % workers.length] },
        ),
      ),
    );
    return new NetworkService(system, hashKey, shards);
  }

  /**
   * Registers a sandbox with every shard. `link` is the actor hosting its
   * guest-facing side (frames toward the guest go there).
   */
  async attach(sandbox: number, link: ActorAddress, config: NetConfig): Promise<void> {
    const entry: Attachment = { link, config: JSON.stringify(config), forwards: new Map() };
    this.attached.set(sandbox, entry);
    await Promise.all(this.shards.map((s) => this.attachTo(s, sandbox, entry)));
  }

  /**
   * Gives an attached sandbox a new config on every shard (a pooled sandbox's
   * claim: sealed → the claimant's policy). Its flows and forwards are closed.
   */
  async rebind(sandbox: number, config: NetConfig): Promise<void> {
    const entry = this.attached.get(sandbox);
    if (!entry)
      throw Object.assign(new Error(`sandbox ${sandbox} is not attached`), { code: 'ERR_NET_NO_SANDBOX' });
    entry.config = JSON.stringify(config);
    entry.forwards.clear();
    await Promise.all(this.shards.map((s) => s.ask({ type: 'rebind', sandbox, config: entry.config })));
  }

  /** Holds (frozen) or releases the protocol timers of a paused sandbox's flows, on every shard. */
  async freeze(sandbox: number, frozen: boolean): Promise<void> {
    if (!this.attached.has(sandbox)) return;
    await Promise.all(this.shards.map((s) => s.ask({ type: 'freeze', sandbox, frozen })));
  }

  /** Closes every flow and forward of a sandbox and forgets it. */
  async detach(sandbox: number): Promise<void> {
    this.attached.delete(sandbox);
    await Promise.all(this.shards.map((s) => s.ask({ type: 'detach', sandbox }).catch(() => '')));
  }

  private attachTo(shard: ActorRef<ShardMessage, string>, sandbox: number, a: Attachment): Promise<string> {
    return shard.ask({
      type: 'attach',
      sandbox,
      link: { id: a.link.id, thread: a.link.thread, name: a.link.name },
      config: a.config,
    });
  }

  private async replay(shard: ActorRef<ShardMessage, string>): Promise<void> {
    try {
      for (const [sandbox, a] of this.attached) {
        await this.attachTo(shard, sandbox, a);
        // Same host port as before: whoever was told that port can keep using it.
        for (const rule of a.forwards.values()) {
          if (this.shardFor(sandbox, rule.proto, rule.guestPort) !== shard) continue;
          await this.addForward(shard, rule);
        }
      }
      this.system.log.info({ event: 'net.shard_replayed', shard: shard.name }, 'restarted shard re-attached');
      this.emit('replayed', { shard: shard.name });
    } catch (err) {
      this.system.log.error(
        { event: 'net.shard_replay_failed', shard: shard.name, err },
        'could not re-attach shard',
      );
      this.emit('replay_failed', { shard: shard.name, error: err });
    }
  }

  private shardFor(sandbox: number, proto: 'tcp' | 'udp', guestPort: number): ActorRef<ShardMessage, string> {
    const p = proto === 'tcp' ? 6 : 17;
    return this.shards[flowHash(this.hashKey, sandbox, p, 0, guestPort, 0, 0) % this.shards.length];
  }

  private async addForward(shard: ActorRef<ShardMessage, string>, rule: ForwardRule): Promise<ForwardRule> {
    const json = await shard.ask({
      type: 'forward',
      sandbox: rule.sandbox,
      proto: rule.proto === 'tcp' ? 6 : 17,
      hostIp: rule.hostIp,
      hostPort: rule.hostPort,
      guestPort: rule.guestPort,
    });
    return JSON.parse(json) as ForwardRule;
  }

  /** Addresses of the shards, in index order (a guest side needs them all). */
  get shardAddresses(): ActorAddress[] {
    return this.shards.map((s) => s.address);
  }

  /** Adds an inbound forward: a host listener (default 127.0.0.1, port 0 = any) to a guest port. */
  async forward(
    sandbox: number,
    rule: { proto?: 'tcp' | 'udp'; hostIp?: string; hostPort?: number; guestPort: number },
  ): Promise<ForwardRule> {
    const proto = rule.proto ?? 'tcp';
    const added = await this.addForward(this.shardFor(sandbox, proto, rule.guestPort), {
      proto,
      sandbox,
      hostIp: rule.hostIp ?? '127.0.0.1',
      hostPort: rule.hostPort ?? 0,
      guestPort: rule.guestPort,
    });
    // Recorded, so a restarted shard gets it back (replay).
    this.attached.get(sandbox)?.forwards.set(forwardKey(added.proto, added.hostPort), added);
    this.system.log.info({ event: 'net.forward_recorded', ...added }, 'port forward in force');
    return added;
  }

  /** Removes a forward by its host port. */
  async unforward(sandbox: number, proto: 'tcp' | 'udp', hostPort: number): Promise<boolean> {
    this.attached.get(sandbox)?.forwards.delete(forwardKey(proto, hostPort));
    const p = proto === 'tcp' ? 6 : 17;
    const answers = await Promise.all(
      this.shards.map((s) => s.ask({ type: 'unforward', sandbox, proto: p, hostPort })),
    );
    return answers.some((a) => (JSON.parse(a) as { removed: boolean }).removed);
  }

  async flows(sandbox = 0): Promise<FlowRow[]> {
    const lists = await Promise.all(this.shards.map((s) => s.ask({ type: 'flows', sandbox })));
    return lists.flatMap((l, shard) =>
      (JSON.parse(l) as Omit<FlowRow, 'shard'>[]).map((f) => ({ shard, ...f })),
    );
  }

  async stats(): Promise<Record<string, unknown>[]> {
    const all = await Promise.all(this.shards.map((s) => s.ask({ type: 'stats' })));
    return all.map((s) => JSON.parse(s) as Record<string, unknown>);
  }
}
