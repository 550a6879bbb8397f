/**
 * ICMP echo from a real guest kernel to a host that is not the gateway: an
 * address inside a network namespace this test creates (a veth pair), so the
 * echo never leaves the machine. Relayed through an unprivileged ICMP socket
 * when net.ipv4.ping_group_range allows it; dropped and counted otherwise.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNetHarness } from './fixtures.js';

const RANGE = '/proc/sys/net/ipv4/ping_group_range';
const ns = `avicmp${process.pid}`;
const hostSide = `avh${process.pid}`.slice(0, 15);
const nsSide = `avn${process.pid}`.slice(0, 15);
const root = process.getuid?.() === 0;
let savedRange = '';

const sh = (...argv: string[]): string => execFileSync(argv[0], argv.slice(1), { encoding: 'utf8' });

describe.runIf(root)('ICMP echo through the NAT', () => {
  beforeAll(() => {
    savedRange = readFileSync(RANGE, 'utf8').trim();
    sh('ip', 'netns', 'add', ns);
    sh('ip', 'link', 'add', hostSide, 'type', 'veth', 'peer', 'name', nsSide);
    sh('ip', 'link', 'set', nsSide, 'netns', ns);
    sh('ip', 'addr', 'add', '10.203.0.1/30', 'dev', hostSide);
    sh('ip', 'link', 'set', hostSide, 'up');
    sh('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', '10.203.0.2/30', 'dev', nsSide);
    sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', nsSide, 'up');
    sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  });

  afterAll(() => {
    writeFileSync(RANGE, savedRange.replace(/\s+/, ' '));
    sh('ip', 'link', 'del', hostSide);
    sh('ip', 'netns', 'del', ns);
  });

  it('relays an echo through an unprivileged ICMP socket where the host allows it', async () => {
    writeFileSync(RANGE, '0 2147483647');
    const h = await startNetHarness();
    try {
      const g = await h.guest({ allowOut: ['10.203.0.0/30'] });
      const r = await g.agent.exec({ argv: ['busybox', 'ping', '-c', '2', '-W', '2', '10.203.0.2'] });
      expect(r.exitCode, r.stdout.toString()).toBe(0);
      expect(r.stdout.toString()).toContain('2 packets received');
      const icmp = (await h.net.stats())[0].icmp as { replies: number; available: boolean };
      expect(icmp).toMatchObject({ available: true, replies: 2 });
    } finally {
      await h.stop();
    }
  });

  it('warns once and drops echoes where the host does not allow ICMP sockets', async () => {
    writeFileSync(RANGE, '1 0');
    const h = await startNetHarness();
    try {
      const g = await h.guest({ allowOut: ['10.203.0.0/30'] });
      const r = await g.agent.exec({ argv: ['busybox', 'ping', '-c', '1', '-W', '1', '10.203.0.2'] });
      expect(r.exitCode).not.toBe(0);
      const stats = (await h.net.stats())[0];
      expect(stats.icmp).toMatchObject({ available: false, dropped: 1 });
      expect((stats.drops as Record<string, number>).icmp_unavailable).toBe(1);
    } finally {
      await h.stop();
    }
  });
});
