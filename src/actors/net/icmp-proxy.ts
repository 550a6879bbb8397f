/**
 * ICMP echo toward hosts other than the gateway (the gateway answers pings
 * itself, in the guest-facing side), through an unprivileged ICMP socket per
 * shard where the host allows them (net.ipv4.ping_group_range); otherwise a
 * warning once and every echo is dropped and counted.
 *
 * One socket serves all of a shard's guests: the kernel stamps its own
 * identifier on every request, so requests are told apart by a sequence
 * number this proxy assigns (unique among outstanding echoes) and mapped
 * back to the guest's identifier and sequence on the reply. Unanswered
 * echoes are forgotten after ECHO_TTL_MS; the socket and its reader thread
 * are closed after IDLE_MS without echoes.
 */
import type { Logger } from 'pino';
import { buildIcmpFrame, ICMP_ECHO_REPLY } from '../../protocol/net/icmp.js';
import { spawnWorker } from '../../runtime/spawn-worker.js';
import type { ShardCounters } from './counters.js';
import { closeIcmpSocket, openIcmpSocket, sendEcho, shutdownIcmpSocket } from './icmp-socket.js';
import type { SandboxNet } from './sandbox-net.js';

const ECHO_TTL_MS = 10_000;
const IDLE_MS = 30_000;
const MAX_OUTSTANDING = 4096;

export interface IcmpStats {
  requests: number;
  replies: number;
  dropped: number;
  available: boolean | null;
}

interface Outstanding {
  sb: SandboxNet;
  /** The address the guest pinged (the reply comes "from" it). */
  dst: number;
  /** The address actually pinged; a reply must come from it. */
  hostIp: number;
  ident: number;
  seq: number;
  sentAt: number;
}

export class IcmpProxy {
  readonly stats: IcmpStats = { requests: 0, replies: 0, dropped: 0, available: null };
  private fd = -1;
  private readonly outstanding = new Map<number, Outstanding>();
  private nextSeq = 1;
  private lastUse = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly counters: ShardCounters,
    private readonly log: Logger,
  ) {}

  echo(sb: SandboxNet, dst: number, hostIp: number, ident: number, seq: number, data: Uint8Array): void {
    this.stats.requests++;
    if (!this.ensureSocket()) {
      this.drop('icmp_unavailable');
      return;
    }
    const now = Date.now();
    this.lastUse = now;
    const wire = this.allocateSeq(now);
    if (wire < 0) {
      this.drop('icmp_outstanding_full');
      return;
    }
    this.outstanding.set(wire, { sb, dst, hostIp, ident, seq, sentAt: now });
    const sent = sendEcho(this.fd, hostIp, wire, data);
    if (sent < 0) {
      this.outstanding.delete(wire);
      this.drop('icmp_send_error');
    }
  }

  private drop(reason: string): void {
    this.stats.dropped++;
    this.counters.drop(reason);
  }

  /** Opens the socket and its reader on first use; false when the host does not allow ICMP sockets. */
  private ensureSocket(): boolean {
    if (this.fd >= 0) return true;
    if (this.stats.available === false) return false;
    const fd = openIcmpSocket();
    if (fd < 0) {
      this.stats.available = false;
      this.log.warn(
        { event: 'net.icmp_unavailable', errno: -fd },
        'unprivileged ICMP sockets are not allowed here (net.ipv4.ping_group_range); echo requests are dropped',
      );
      return false;
    }
    this.stats.available = true;
    this.fd = fd;
    const reader = spawnWorker(
      new URL(import.meta.url.endsWith('.ts') ? './icmp-reader.ts' : './icmp-reader.js', import.meta.url),
      {
        workerData: { fd },
      },
    );
    reader.on('message', (m: { from: number; message: Uint8Array }) => this.onReply(m.from, m.message));
    reader.on('error', (err) => this.log.warn({ event: 'net.icmp_reader_error', err }, 'ICMP reader failed'));
    // The fd is closed only once the reader stopped using it, so its number cannot be reused under it.
    reader.once('exit', () => closeIcmpSocket(fd));
    reader.unref();
    this.armIdle();
    return true;
  }

  private allocateSeq(now: number): number {
    if (this.outstanding.size >= MAX_OUTSTANDING) {
      for (const [k, o] of this.outstanding) if (now - o.sentAt > ECHO_TTL_MS) this.outstanding.delete(k);
      if (this.outstanding.size >= MAX_OUTSTANDING) return -1;
    }
    for (let i = 0; i < 0x10000; i++) {
      const s = this.nextSeq;
      this.nextSeq = (this.nextSeq + 1) & 0xffff || 1;
      const o = this.outstanding.get(s);
      if (!o || now - o.sentAt > ECHO_TTL_MS) return s;
    }
    return -1;
  }

  private onReply(from: number, msg: Uint8Array): void {
    if (msg.length < 8 || msg[0] !== ICMP_ECHO_REPLY) return;
    const wire = (msg[6] << 8) | msg[7];
    const o = this.outstanding.get(wire);
    if (!o || o.hostIp !== from) return;
    this.outstanding.delete(wire);
    if (o.sb.blocked) {
      this.drop('icmp_guest_backlog');
      return;
    }
    this.stats.replies++;
    this.counters.framesOut++;
    o.sb.send(
      buildIcmpFrame(
        o.sb.guestMac,
        o.sb.gatewayMac,
        o.dst,
        o.sb.config.guestIp,
        ICMP_ECHO_REPLY,
        0,
        ((o.ident << 16) | o.seq) >>> 0,
        msg.subarray(8),
      ),
    );
  }

  private armIdle(): void {
    const check = (): void => {
      const quiet = Date.now() - this.lastUse;
      if (quiet < IDLE_MS) this.idleTimer = setTimeout(check, IDLE_MS - quiet);
      else this.close();
    };
    this.idleTimer = setTimeout(check, IDLE_MS);
    this.idleTimer.unref();
  }

  /** Forgets a sandbox's outstanding echoes. */
  forget(sb: SandboxNet): void {
    for (const [k, o] of this.outstanding) if (o.sb === sb) this.outstanding.delete(k);
  }

  close(): void {
    clearTimeout(this.idleTimer);
    if (this.fd >= 0) shutdownIcmpSocket(this.fd); // the reader's recvfrom returns 0; it exits and we close
    this.fd = -1;
    this.outstanding.clear();
  }
}
