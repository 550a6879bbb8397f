/**
 * Inbound port forwarding: one host listener per rule, owned by a shard.
 * A TCP accept becomes a SYN to the guest straight from the 'connection'
 * event (no polling anywhere between accept and SYN); a UDP datagram from a
 * new host peer opens an inbound UDP flow. Rules come and go while the
 * sandbox runs.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { ActorvmError } from '../../errors.js';
import type { SandboxNet } from './sandbox-net.js';

export interface ForwardRule {
  proto: 'tcp' | 'udp';
  sandbox: number;
  hostIp: string;
  hostPort: number;
  guestPort: number;
}

/** What the shard does with inbound traffic. */
export interface ForwardSink {
  acceptTcp(sb: SandboxNet, socket: net.Socket, guestPort: number): void;
  datagram(
    sb: SandboxNet,
    listener: dgram.Socket,
    guestPort: number,
    msg: Buffer,
    from: dgram.RemoteInfo,
  ): void;
}

interface Listener {
  rule: ForwardRule;
  sb: SandboxNet;
  close(): void;
}

export class PortForwards {
  private readonly listeners = new Map<string, Listener>();

  constructor(private readonly sink: ForwardSink) {}

  private static id(proto: string, hostIp: string, hostPort: number): string {
    return `${proto}/${hostIp}:${hostPort}`;
  }

  async add(
    sb: SandboxNet,
    proto: 'tcp' | 'udp',
    hostIp: string,
    hostPort: number,
    guestPort: number,
  ): Promise<ForwardRule> {
    if (proto === 'tcp') {
      const server = net.createServer(
        { allowHalfOpen: true, pauseOnConnect: true, noDelay: true },
        (socket) => this.sink.acceptTcp(sb, socket, guestPort),
      );
      await listen((cb) => server.listen({ host: hostIp, port: hostPort, exclusive: true }, cb), server);
      const port = (server.address() as net.AddressInfo).port;
      const rule: ForwardRule = { proto, sandbox: sb.id, hostIp, hostPort: port, guestPort };
      this.listeners.set(PortForwards.id(proto, hostIp, port), { rule, sb, close: () => server.close() });
      return rule;
    }
    const socket = dgram.createSocket('udp4');
    await listen((cb) => socket.bind(hostPort, hostIp, cb), socket);
    socket.on('message', (msg, from) => this.sink.datagram(sb, socket, guestPort, msg, from));
    const port = socket.address().port;
    const rule: ForwardRule = { proto, sandbox: sb.id, hostIp, hostPort: port, guestPort };
    this.listeners.set(PortForwards.id(proto, hostIp, port), { rule, sb, close: () => socket.close() });
    return rule;
  }

  remove(sandbox: number, proto: 'tcp' | 'udp', hostPort: number): boolean {
    for (const [id, l] of this.listeners) {
      if (l.rule.sandbox === sandbox && l.rule.proto === proto && l.rule.hostPort === hostPort) {
        l.close();
        this.listeners.delete(id);
        return true;
      }
    }
    return false;
  }

  removeSandbox(sandbox: number): void {
    for (const [id, l] of this.listeners) {
      if (l.rule.sandbox !== sandbox) continue;
      l.close();
      this.listeners.delete(id);
    }
  }

  rules(): ForwardRule[] {
    return [...this.listeners.values()].map((l) => l.rule);
  }

  close(): void {
    for (const l of this.listeners.values()) l.close();
    this.listeners.clear();
  }
}

function listen(start: (cb: () => void) => void, emitter: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new ActorvmError('ERR_NET_FORWARD', `cannot listen: ${err.message}`, { errno: err.code }));
    };
    emitter.once('error', onError);
    start(() => {
      emitter.off('error', onError);
      resolve();
    });
  });
}
