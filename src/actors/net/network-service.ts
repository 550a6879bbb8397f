/**
 * The network layer as the main thread sees it: spawns the flow shards (on
 * the flow workers), hands out what a guest side needs to join them, routes
 * port-forward requests to a shard, and gathers flows and stats for
 * `actorctl flows`.
 */
import { z } from 'zod';
import { ActorvmError } from '../../errors.js';
import type { ActorAddress } from '../../runtime/actor.js';
import type { ActorRef } from '../../runtime/actor-ref.js';
import type { ActorSystem } from '../../runtime/actor-system.js';
import type { ControlServer } from '../../runtime/control-server.js';
import { eligibleWorkers } from '../../runtime/placement.js';
import { type FlowHashKey, flowHash, newFlowHashKey } from './flow-hash.js';
import FlowShard from './flow-shard.js';
import type { ShardMessage } from './messages.js';
import type { ForwardRule } from './port-forwards.js';

export interface NetworkServiceOptions {
  /** Shards per flow worker (default 1). */
  shardsPerWorker?: number;
}

export interface FlowRow {
  proto: 'tcp' | 'udp';
  sandbox: number;
  direction: 'out' | 'in';
  guest: string;
  remote: string;
  host: string;
  state: string;
  bytesToHost: number;
  bytesToGuest: number;
  ageMs: number;
}

export class NetworkService {
  private constructor(
    readonly hashKey: FlowHashKey,
    private readonly shards: ActorRef<ShardMessage, string>[],
  ) {}

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
    return new NetworkService(hashKey, shards);
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
    const p = proto === 'tcp' ? 6 : 17;
    const shard =
      this.shards[flowHash(this.hashKey, sandbox, p, 0, rule.guestPort, 0, 0) % this.shards.length];
    const json = await shard.ask({
      type: 'forward',
      sandbox,
      proto: p,
      hostIp: rule.hostIp ?? '127.0.0.1',
      hostPort: rule.hostPort ?? 0,
      guestPort: rule.guestPort,
    });
    return JSON.parse(json) as ForwardRule;
  }

  /** Removes a forward by its host port. */
  async unforward(sandbox: number, proto: 'tcp' | 'udp', hostPort: number): Promise<boolean> {
    const p = proto === 'tcp' ? 6 : 17;
    const answers = await Promise.all(
      this.shards.map((s) => s.ask({ type: 'unforward', sandbox, proto: p, hostPort })),
    );
    return answers.some((a) => (JSON.parse(a) as { removed: boolean }).removed);
  }

  async flows(sandbox = 0): Promise<FlowRow[]> {
    const lists = await Promise.all(this.shards.map((s) => s.ask({ type: 'flows', sandbox })));
    return lists.flatMap((l) => JSON.parse(l) as FlowRow[]);
  }

  async stats(): Promise<Record<string, unknown>[]> {
    const all = await Promise.all(this.shards.map((s) => s.ask({ type: 'stats' })));
    return all.map((s) => JSON.parse(s) as Record<string, unknown>);
  }

  /** `flows` and `net.stats` on the control socket. */
  registerControl(server: ControlServer): void {
    server.register('flows', {
      params: z.object({ sandbox: z.number().int().nonnegative().optional() }),
      handle: ({ sandbox }) => this.flows(sandbox ?? 0),
    });
    server.register('net.stats', {
      params: z.object({}),
      handle: () => this.stats(),
    });
  }
}

export function assertPort(p: number): void {
  if (!Number.isInteger(p) || p < 0 || p > 65535) throw new ActorvmError('ERR_NET_BAD_PORT', `bad port ${p}`);
}
