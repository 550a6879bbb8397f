/**
 * A real Linux TCP/IP stack as the guest: a network namespace whose TAP the
 * agent relays to a `net.link` actor, plus the agent's own socket to run
 * commands inside that namespace (busybox wget, iperf3, …).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type NetworkOptions, resolveNetConfig } from '../../src/actors/net/config.js';
import NetLink from '../../src/actors/net/net-link.js';
import { NetworkService } from '../../src/actors/net/network-service.js';
import { AgentClient, agentBinaryPath } from '../../src/agent/index.js';
import type { ActorRef } from '../../src/runtime/actor-ref.js';
import { ActorSystem } from '../../src/runtime/actor-system.js';

export interface NamespaceGuest {
  sandbox: number;
  agent: AgentClient;
  link: ActorRef<any, string>;
  stop(): Promise<void>;
}

export interface NetHarness {
  system: ActorSystem;
  net: NetworkService;
  guest(opts?: NetworkOptions & { sandbox?: number }): Promise<NamespaceGuest>;
  stop(): Promise<void>;
}

export async function startNetHarness(
  opts: { workers?: number; logLevel?: string; shardsPerWorker?: number } = {},
): Promise<NetHarness> {
  const system = await ActorSystem.start({
    workers: opts.workers ?? 2,
    log: { level: (opts.logLevel ?? process.env.ACTORVM_TEST_LOG ?? 'silent') as 'silent' },
  });
  const net = await NetworkService.start(system, { shardsPerWorker: opts.shardsPerWorker });
  const guests: NamespaceGuest[] = [];
  let nextSandbox = 1;
  return {
    system,
    net,
    async guest(o = {}) {
      const sandbox = o.sandbox ?? nextSandbox++;
      // Never the machine's own resolver: a guest that looks something up without a test
      // DNS server gets SERVFAIL from a loopback port nobody answers on.
      const config = resolveNetConfig({ dnsUpstream: '127.0.0.1:9', ...o });
      const dir = mkdtempSync(join(tmpdir(), 'actorvm-netns-'));
      const sock = join(dir, 'agent.sock');
      const ip = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
      const link = await system.spawn(NetLink, {
        sandbox,
        config,
        shards: net.shardAddresses,
        hashKey: net.hashKey,
        transport: {
          kind: 'spawn',
          // A pid namespace of its own (the agent as its PID 1, with its own /proc): when the
          // agent is killed, so is everything the guest started, daemons included.
          argv: [
            'unshare',
            '--net',
            '--pid',
            '--fork',
            '--kill-child=SIGKILL',
            '--mount-proc',
            '--',
            agentBinaryPath(),
            '--tap-listen',
            `unix:${join(dir, 'tap.sock')}`,
            '--tap-ip',
            `${ip(config.guestIp)}/${config.prefix}`,
            '--tap-gw',
            ip(config.gatewayIp),
            '--tap-mtu',
            String(config.mtu),
            '--listen',
            `unix:${sock}`,
            '--ready-fd',
            '4',
          ],
          readyFd: 4,
          connectPath: join(dir, 'tap.sock'),
        },
      });
      await net.attach(sandbox, link.address, config);
      await link.ask({ type: 'ready' }, { timeoutMs: 15_000 });
      const agent = await AgentClient.connectUnix(sock);
      const g: NamespaceGuest = {
        sandbox,
        agent,
        link,
        async stop() {
          agent.close();
          await system.stop(link);
          await net.detach(sandbox);
          rmSync(dir, { recursive: true, force: true });
        },
      };
      guests.push(g);
      return g;
    },
    async stop() {
      for (const g of guests.splice(0)) await g.stop().catch(() => {});
      await system.shutdown();
    },
  };
}
