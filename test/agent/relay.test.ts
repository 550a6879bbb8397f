/**
 * The TAP relay with a real Linux stack on the inside: the agent runs in fresh
 * network/UTS/mount namespaces with its TAP relayed to a socketpair, and this
 * test plays the network on the host side of it (ARP and ICMP echo), frame by
 * frame, in QEMU's stream framing.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FakeNetwork } from '../vm/fake-net.js';
import { startAgent } from './helpers.js';

const GUEST_MAC = '52:54:00:12:34:56';
const NAMESPACES = ['unshare', '--net', '--uts', '--mount'];
const TAP_ARGS = [
  '--tap-fd',
  '4',
  '--tap-ip',
  '10.0.2.15/24',
  '--tap-gw',
  '10.0.2.2',
  '--tap-mac',
  GUEST_MAC,
  '--tap-mtu',
  '65520',
];

describe('TAP relay', () => {
  it('carries a real stack’s ARP and ICMP both ways, and applies net_config', async () => {
    const { client, agent, dir } = await startAgent({ wrapper: NAMESPACES, extraFds: 1, args: TAP_ARGS });
    expect(client.hello.capabilities).toContain('tap_relay');
    const net = new FakeNetwork(agent.child.stdio[4] as Socket);

    const link = await client.exec({ argv: ['ip', '-o', 'link', 'show', 'eth0'] });
    expect(link.stdout.toString()).toMatch(/mtu 65520/);
    expect(link.stdout.toString()).toContain(GUEST_MAC);

    const ping = await client.exec({ argv: ['busybox', 'ping', '-c', '2', '-W', '5', '10.0.2.2'] });
    expect(ping.exitCode).toBe(0);
    expect(net.arpRequests).toContainEqual({
      senderMac: GUEST_MAC,
      senderIp: '10.0.2.15',
      targetIp: '10.0.2.2',
    });
    expect(net.echoReplies).toBe(2);

    // A fork's new identity: MAC, address, gateway, MTU, hostname and DNS.
    const resolv = join(dir, 'resolv.conf');
    writeFileSync(resolv, 'nameserver 192.0.2.1\n');
    // Only inside the agent's own mount namespace.
    expect((await client.exec({ argv: ['mount', '--bind', resolv, '/etc/resolv.conf'] })).exitCode).toBe(0);
    await client.netConfig({
      mac: '52:54:00:aa:bb:cc',
      address: '10.0.3.15/24',
      gateway: '10.0.3.2',
      mtu: 1500,
      hostname: 'fork-1',
      dns: ['10.0.3.3', '10.0.3.4'],
    });
    const shown = await client.exec({
      shell: 'ip -o addr show eth0; ip -o link show eth0; ip route; hostname',
    });
    const text = shown.stdout.toString();
    expect(text).toContain('inet 10.0.3.15/24');
    expect(text).not.toContain('10.0.2.15');
    expect(text).toContain('52:54:00:aa:bb:cc');
    expect(text).toMatch(/mtu 1500/);
    expect(text).toContain('default via 10.0.3.2 dev eth0');
    expect(text.trim().split('\n').at(-1)).toBe('fork-1');
    expect(readFileSync(resolv, 'utf8')).toBe('nameserver 10.0.3.3\nnameserver 10.0.3.4\n');

    const again = await client.exec({ argv: ['busybox', 'ping', '-c', '1', '-W', '5', '10.0.3.2'] });
    expect(again.exitCode).toBe(0);
    expect(net.arpRequests).toContainEqual({
      senderMac: '52:54:00:aa:bb:cc',
      senderIp: '10.0.3.15',
      targetIp: '10.0.3.2',
    });
  });

  it('drops the relay on a framing error and keeps serving the protocol', async () => {
    const { client, agent } = await startAgent({ wrapper: NAMESPACES, extraFds: 1, args: TAP_ARGS });
    const net = new FakeNetwork(agent.child.stdio[4] as Socket);
    const bad = Buffer.alloc(9);
    bad.writeUInt32BE(5); // shorter than an Ethernet header
    net.writeRaw(bad);
    await new Promise<void>((resolve) => (agent.child.stdio[4] as Socket).once('close', () => resolve()));
    expect(net.closed).toBe(true);
    expect((await client.exec({ argv: ['echo', 'ok'] })).stdout.toString()).toBe('ok\n');
  });

  it('rejects a bad net_config without changing anything', async () => {
    const { client } = await startAgent({ wrapper: NAMESPACES, extraFds: 1, args: TAP_ARGS });
    await expect(client.netConfig({ address: '10.0.0.300/24' })).rejects.toMatchObject({
      code: 'ERR_AGENT_PROTOCOL',
      details: { remoteCode: 'BAD_REQUEST' },
    });
    await expect(client.netConfig({ iface: 'nope0', mtu: 1400 })).rejects.toMatchObject({
      code: 'ERR_AGENT_REMOTE',
      details: { errnoName: 'ENODEV' },
    });
    const shown = await client.exec({ argv: ['ip', '-o', 'addr', 'show', 'eth0'] });
    expect(shown.stdout.toString()).toContain('inet 10.0.2.15/24');
  });
});
