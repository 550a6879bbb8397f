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
import { startAgent } from './helpers.js';

const GUEST_MAC = '52:54:00:12:34:56';
const GATEWAY_MAC = Buffer.from([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);

const macText = (b: Buffer): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
const ipText = (b: Buffer): string => [...b].join('.');

function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += b[b.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

interface ArpRequest {
  senderMac: string;
  senderIp: string;
  targetIp: string;
}

/** The host end of the relay: parses frames, answers ARP for any address and ICMP echo. */
class FakeNetwork {
  readonly arpRequests: ArpRequest[] = [];
  echoReplies = 0;
  closed = false;
  #buf = Buffer.alloc(0);
  readonly #sock: Socket;

  constructor(sock: Socket) {
    this.#sock = sock;
    sock.on('data', (d: Buffer) => this.#onData(d));
    sock.on('close', () => {
      this.closed = true;
    });
    sock.on('error', () => {});
  }

  send(frame: Buffer): void {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(frame.length);
    this.#sock.write(Buffer.concat([len, frame]));
  }

  writeRaw(b: Buffer): void {
    this.#sock.write(b);
  }

  #onData(d: Buffer): void {
    this.#buf = Buffer.concat([this.#buf, d]);
    while (this.#buf.length >= 4) {
      const len = this.#buf.readUInt32BE(0);
      if (this.#buf.length < 4 + len) break;
      this.#onFrame(this.#buf.subarray(4, 4 + len));
      this.#buf = this.#buf.subarray(4 + len);
    }
  }

  #onFrame(f: Buffer): void {
    const ethertype = f.readUInt16BE(12);
    if (ethertype === 0x0806 && f.readUInt16BE(20) === 1) {
      const req = {
        senderMac: macText(f.subarray(22, 28)),
        senderIp: ipText(f.subarray(28, 32)),
        targetIp: ipText(f.subarray(38, 42)),
      };
      this.arpRequests.push(req);
      const reply = Buffer.alloc(42);
      f.copy(reply, 0, 6, 12); // to the asker
      GATEWAY_MAC.copy(reply, 6);
      reply.writeUInt16BE(0x0806, 12);
      reply.writeUInt16BE(1, 14);
      reply.writeUInt16BE(0x0800, 16);
      reply[18] = 6;
      reply[19] = 4;
      reply.writeUInt16BE(2, 20);
      GATEWAY_MAC.copy(reply, 22);
      f.copy(reply, 28, 38, 42); // we are the address asked for
      f.copy(reply, 32, 22, 32); // target: the asker's MAC and IP
      this.send(reply);
    } else if (ethertype === 0x0800 && f[23] === 1 && f[14 + (f[14] & 0x0f) * 4] === 8) {
      const ihl = (f[14] & 0x0f) * 4;
      const reply = Buffer.from(f);
      f.copy(reply, 0, 6, 12);
      f.copy(reply, 6, 0, 6);
      f.copy(reply, 14 + 12, 14 + 16, 14 + 20); // swap addresses
      f.copy(reply, 14 + 16, 14 + 12, 14 + 16);
      reply.writeUInt16BE(0, 14 + 10);
      reply.writeUInt16BE(checksum(reply.subarray(14, 14 + ihl)), 14 + 10);
      const icmp = 14 + ihl;
      reply[icmp] = 0; // echo reply
      reply.writeUInt16BE(0, icmp + 2);
      reply.writeUInt16BE(checksum(reply.subarray(icmp, 14 + reply.readUInt16BE(16))), icmp + 2);
      this.echoReplies++;
      this.send(reply);
    }
  }
}

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
