/**
 * TCP NAT: one guest TCP connection spliced onto one host socket.
 *
 * Theory of operation
 * -------------------
 * We terminate the guest's TCP connection ourselves (we are the peer its
 * kernel talks to) and relay the byte stream to a host socket, so there are
 * two independent flow-control loops joined at this object:
 *
 *   guest → host: a guest segment in sequence is written to the host socket
 *   at once and acknowledged. What the host socket has not yet taken
 *   (Node's `writableLength`) is all we buffer, and the window we advertise
 *   is RCV_BUFFER minus exactly that: a slow host reader shrinks the guest's
 *   window to zero instead of growing our memory, and 'drain' reopens it
 *   with a window update. There is no fixed buffer cliff. Out-of-order
 *   segments are dropped with a duplicate ACK: the virtual link never
 *   reorders, so an out-of-order segment only follows our own drop.
 *
 *   host → guest: Node has no MSG_PEEK, so bytes read from the host socket
 *   are kept (SendQueue) until the guest acknowledges them, and only as many
 *   as its window allows, at most MAX_INFLIGHT, are in flight. When the queue
 *   holds more than that plus a margin, the host socket is paused; ACKs
 *   resume it.
 *   Loss is repaired by go-back-N from SND.UNA on an RTO (lazy timer: armed
 *   once, re-armed on expiry if progress was made) or on three duplicate
 *   ACKs. A zero window is probed on the same timer.
 *
 * Opening: a guest SYN starts an asynchronous host connect; the guest gets
 * SYN-ACK only once it succeeds, RST if it fails or times out. Inbound (port
 * forward): an accepted host socket makes us send the SYN. Window scaling is
 * used iff both SYNs carry it; our MSS is the link MTU minus 40.
 *
 * Closing: each direction closes on its own (half-close). The guest's FIN
 * becomes `socket.end()`; the host's 'end' becomes our FIN once everything
 * before it was sent. RST travels both ways (`resetAndDestroy()` toward the
 * host). After both FINs are acknowledged the flow lingers briefly to absorb
 * retransmitted FINs, then is removed.
 *
 * Timers are protocol timers only (connect, RTO/persist, linger, idle), each
 * one per flow and never reset per packet.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import {
  ACK,
  FIN,
  finishTcpChecksum,
  finishTcpChecksumWith,
  newTcpSegment,
  PSH,
  RST,
  SYN,
  seqAdd,
  seqDiff,
  seqLe,
  seqLt,
  type TcpSegment,
  type TcpView,
  tcpFrameLength,
  writeTcpHeaders,
} from '../../protocol/net/tcp.js';
import type { ShardCounters } from './counters.js';
import { FlowBase, type FlowEndpoints } from './flow-base.js';
import type { FrameBuilder } from './messages.js';
import type { PayloadArena } from './payload-arena.js';
import type { GuestPathWaiter, SandboxNet } from './sandbox-net.js';
import { SendQueue } from './send-queue.js';

export type TcpState =
  | 'connecting'
  | 'syn_received'
  | 'syn_sent'
  | 'established'
  | 'fin_wait_1'
  | 'fin_wait_2'
  | 'closing'
  | 'time_wait'
  | 'close_wait'
  | 'last_ack'
  | 'closed';

/** Bytes of guest→host data we let Node buffer before the advertised window reaches zero. */
export const RCV_BUFFER = 4 << 20;
/** Our window-scale shift: windows up to 8 MiB. */
export const OUR_WSCALE = 7;
/**
 * Most bytes one flow keeps in flight toward the guest, whatever window the
 * guest offers. Linux guests offer up to 32 MiB; all of it would sit in our
 * own path (ring, guest stream, relay), overrun the guest side's backlog
 * limit and turn into drops and go-back-N storms. 4 MiB is several times the
 * bandwidth-delay product of the virtual link (~600 KB at 5 Gbit/s × 1 ms).
 */
export const MAX_INFLIGHT = 4 << 20;
const RTO_MIN_MS = 200;
const RTO_MAX_MS = 30_000;
const LINGER_MS = 2_000;
const SYN_RETRIES = 4;

/** What a flow needs from its shard. */
export interface TcpEnv {
  readonly counters: ShardCounters;
  readonly log: Logger;
  /** Debug logging enabled (flow transitions are logged at debug). */
  readonly debug: boolean;
  /** The shard's reusable builder for frames toward the guest. */
  readonly builder: TcpFrameBuilder;
  /** Payload blocks: guest→host payloads arrive in them, host sockets read into them. */
  readonly arena: PayloadArena;
  removeTcp(flow: TcpFlow, reason: string): void;
}

/** Builds one TCP frame in place (in the ring), payload gathered from a SendQueue. */
export class TcpFrameBuilder implements FrameBuilder {
  length = 0;
  readonly seg: TcpSegment = newTcpSegment();
  private dstMac!: Uint8Array;
  private srcMac!: Uint8Array;
  private queue: SendQueue | undefined;
  private from = 0;
  private plen = 0;

  /** Sets the segment's fields (all toward the guest); MSS and window scale only go in SYNs. */
  set(
    srcIp: number,
    srcPort: number,
    dstIp: number,
    dstPort: number,
    seq: number,
    ack: number,
    flags: number,
    window: number,
    mss = 0,
    wscale = -1,
  ): this {
    const s = this.seg;
    s.srcIp = srcIp;
    s.srcPort = srcPort;
    s.dstIp = dstIp;
    s.dstPort = dstPort;
    s.seq = seq;
    s.ack = ack;
    s.flags = flags;
    s.window = window;
    s.mss = mss;
    s.wscale = wscale;
    return this;
  }

  prepare(sb: SandboxNet, queue: SendQueue | undefined, from: number, plen: number): this {
    this.dstMac = sb.guestMac;
    this.srcMac = sb.gatewayMac;
    this.queue = queue;
    this.from = from;
    this.plen = plen;
    this.length = tcpFrameLength(this.seg, plen);
    return this;
  }

  write(buf: Uint8Array, off: number): void {
    const p = writeTcpHeaders(buf, off, this.dstMac, this.srcMac, this.seg, this.plen);
    if (this.plen === 0) {
      finishTcpChecksum(buf, off, this.seg, 0);
      return;
    }
    // Sum the payload where it lies (in place in arena blocks), then copy it
    // into the ring: the ring bytes are written once and never read back.
    const q = this.queue!;
    const sum = q.sum(this.from, this.plen);
    q.copyOut(this.from, this.plen, buf, p);
    finishTcpChecksumWith(buf, off, this.seg, this.plen, sum);
  }
}

export class TcpFlow extends FlowBase implements GuestPathWaiter {
  readonly proto = 6;
  state: TcpState;
  socket: net.Socket | undefined;
  // guest → host
  private rcvNxt = 0;
  // host → guest
  private readonly iss = (Math.random() * 0x100000000) >>> 0;
  private sndUna: number;
  private sndNxt: number;
  private sndMax: number;
  private sndWnd = 0;
  private guestMss = 536;
  private guestWscale = 0;
  private ourShift = 0;
  private readonly queue: SendQueue;
  /** The arena block armed for the host socket's next read (onread), or -1. */
  private armed = -1;
  /** The verified guest payload block handed to the current onSegment call, or -1. */
  private segmentBlock = -1;
  private paused = false;
  private hostEof = false;
  private finSeq = -1;
  private finAcked = false;
  private guestFin = false;
  private dupAcks = 0;
  private rto = RTO_MIN_MS;
  private rtoTimer: NodeJS.Timeout | undefined;
  private lastProgress = 0;
  /** An RTO / idle check came due while the guest was frozen (thawed() arms it again). */
  private rtoParked = false;
  private idleParked = false;
  private synTries = 0;
  private lingerTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private lastActivity: number;
  private lastAdvertised = 0;

  constructor(
    private readonly env: TcpEnv,
    sb: SandboxNet,
    endpoints: FlowEndpoints,
  ) {
    super(sb, endpoints);
    this.sndUna = this.iss;
    this.sndNxt = this.iss;
    this.sndMax = this.iss;
    this.state = endpoints.direction === 'out' ? 'connecting' : 'syn_sent';
    this.lastActivity = Date.now();
    this.queue = new SendQueue(env.arena);
  }

  // ---- opening -------------------------------------------------------------

  /** Outbound: the guest's SYN arrived; connect to the host. */
  connect(syn: TcpView): void {
    this.rcvNxt = seqAdd(syn.seq, 1);
    this.takeSynOptions(syn, true);
    // Reads land in arena blocks (onread): no allocation per read, and the
    // host→guest checksum is computed in place.
    const socket = net.connect({
      host: this.hostIp,
      port: this.hostPort,
      allowHalfOpen: true,
      noDelay: true,
      onread: {
        buffer: () => this.armReadBuffer(),
        callback: (n: number, buf: Uint8Array) => {
          const block = this.armed;
          this.armed = -1;
          this.onHostData(buf.subarray(0, n), block);
          return true;
        },
      },
    });
    this.socket = socket;
    this.connectTimer = setTimeout(() => {
      this.env.counters.refuse('connect_timeout');
      this.resetGuest();
      this.close('connect_timeout');
    }, this.sb.config.tcpConnectTimeoutMs);
    socket.once('connect', () => {
      clearTimeout(this.connectTimer);
      this.connectTimer = undefined;
      if (this.state !== 'connecting') return;
      this.wireSocket(socket);
      this.transition('syn_received');
      this.sendSynAck();
    });
    socket.on('error', (err) => this.onSocketError(err as NodeJS.ErrnoException));
  }

  /** Inbound: a host client connected to a forwarded port; offer the connection to the guest. */
  accept(socket: net.Socket): void {
    this.socket = socket;
    socket.pause(); // nothing to relay until the guest accepts
    this.paused = true;
    socket.on('error', (err) => this.onSocketError(err as NodeJS.ErrnoException));
    this.wireSocket(socket);
    this.sendSyn();
  }

  private takeSynOptions(t: TcpView, weOfferScaling: boolean): void {
    this.guestMss = t.mss > 0 ? t.mss : 536;
    if (t.wscale >= 0 && weOfferScaling) {
      this.guestWscale = t.wscale;
      this.ourShift = OUR_WSCALE;
    }
    this.sndWnd = t.window << this.guestWscale;
  }

  private armReadBuffer(): Uint8Array {
    const arena = this.env.arena;
    this.armed = arena.alloc();
    return this.armed >= 0 ? arena.view(this.armed) : Buffer.allocUnsafe(65536);
  }

  private wireSocket(socket: net.Socket): void {
    socket.setKeepAlive(true, this.sb.config.tcpKeepaliveMs);
    // Accepted (inbound) sockets cannot read into our buffers: plain 'data' events.
    if (this.direction === 'in') socket.on('data', (b: Buffer) => this.onHostData(b, -1));
    socket.on('end', () => this.onHostEnd());
    socket.on('drain', () => this.onHostDrain());
    socket.on('close', () => this.onSocketClose());
    this.armIdle();
  }

  // ---- guest segments ---------------------------------------------------------

  /**
   * A segment from the guest for this flow. `pkt` holds the IP packet (a ring
   * view). `block`, when ≥ 0, is an arena block already holding the verified
   * payload: this call owns it (the host write takes it, or it is released).
   */
  onSegment(t: TcpView, pkt: Uint8Array, block = -1): void {
    this.segmentBlock = block;
    try {
      this.handleSegment(t, pkt);
    } finally {
      if (this.segmentBlock >= 0) this.env.arena.release(this.segmentBlock);
      this.segmentBlock = -1;
    }
  }

  private handleSegment(t: TcpView, pkt: Uint8Array): void {
    this.lastActivity = Date.now();
    const flags = t.flags;
    if (flags & RST) {
      this.onGuestReset(t);
      return;
    }
    switch (this.state) {
      case 'connecting':
        return; // a retransmitted SYN: the answer comes when the host connect does
      case 'syn_sent':
        this.onSynAck(t);
        return;
      case 'syn_received':
        if (flags & SYN) {
          this.sendSynAck(); // our SYN-ACK was lost (or is in flight): repeat it
          return;
        }
        if (!(flags & ACK) || t.ack !== seqAdd(this.iss, 1)) return;
        this.sndUna = t.ack;
        this.sndWnd = t.window << this.guestWscale;
        this.transition('established');
        this.socket?.resume();
        break;
      case 'closed':
        return;
      default:
        if (flags & SYN) {
          this.sendAck();
          return;
        }
    }
    if (!(flags & ACK)) return;
    this.onAck(t);
    if ((this.state as TcpState) === 'closed') return; // the ACK completed our close
    if (t.payloadLen > 0 || flags & FIN) this.onData(t, pkt);
    this.trySend();
  }

  private onSynAck(t: TcpView): void {
    if ((t.flags & (SYN | ACK)) !== (SYN | ACK) || t.ack !== seqAdd(this.iss, 1)) return;
    this.rcvNxt = seqAdd(t.seq, 1);
    this.takeSynOptions(t, true);
    this.sndUna = t.ack;
    this.sndNxt = t.ack;
    this.sndMax = t.ack;
    this.clearRto();
    this.transition('established');
    this.sendAck();
    this.paused = false;
    this.socket?.resume();
  }

  private onGuestReset(t: TcpView): void {
    // Accept a RST only if it is in sequence (RFC 5961 spirit): a blind one is ignored.
    if (this.state !== 'syn_sent' && this.state !== 'connecting') {
      const d = seqDiff(t.seq, this.rcvNxt);
      if (d < 0 || d > RCV_BUFFER) return;
    }
    this.env.counters.drop('tcp_rst_from_guest');
    this.socket?.resetAndDestroy();
    this.close('reset_by_guest');
  }

  private onAck(t: TcpView): void {
    const a = t.ack;
    const wnd = t.window << this.guestWscale;
    if (seqLt(this.sndUna, a) && seqLe(a, this.sndMax)) {
      let acked = seqDiff(a, this.sndUna);
      if (this.finSeq >= 0 && !this.finAcked && a === seqAdd(this.finSeq, 1)) {
        this.finAcked = true;
        acked -= 1;
      }
      this.queue.consume(acked);
      this.sndUna = a;
      if (seqLt(this.sndNxt, a)) this.sndNxt = a;
      this.dupAcks = 0;
      this.rto = RTO_MIN_MS;
      this.lastProgress = Date.now();
      if (this.paused && this.queue.length < this.queueLimit()) {
        this.paused = false;
        if (this.state !== 'syn_sent') this.socket?.resume();
      }
      if (this.finAcked) this.onOurFinAcked();
    } else if (
      a === this.sndUna &&
      t.payloadLen === 0 &&
      !(t.flags & FIN) &&
      wnd === this.sndWnd &&
      this.sndNxt !== this.sndUna
    ) {
      if (++this.dupAcks === 3) {
        this.env.counters.retransmits++;
        this.goBack();
      }
    }
    this.sndWnd = wnd;
  }

  private onOurFinAcked(): void {
    if (this.state === 'fin_wait_1') this.transition('fin_wait_2');
    else if (this.state === 'closing') this.enterTimeWait();
    else if (this.state === 'last_ack') this.close('closed');
  }

  private onData(t: TcpView, pkt: Uint8Array): void {
    const len = t.payloadLen;
    if (len > 0) {
      const accepting =
        this.state === 'established' || this.state === 'fin_wait_1' || this.state === 'fin_wait_2';
      const already = seqDiff(this.rcvNxt, t.seq);
      if (already < 0) {
        this.env.counters.drop('tcp_out_of_order');
        this.sendAck();
        return;
      }
      if (!accepting || already >= len) {
        this.sendAck(); // retransmission of data we have: re-acknowledge
        return;
      }
      const take = len - already;
      const block = this.segmentBlock;
      if (block >= 0) {
        // The payload was copied out of the ring into this block (and verified
        // there); the socket writes from it and gives it back when done.
        this.segmentBlock = -1;
        const arena = this.env.arena;
        const view = arena.view(block);
        if (this.socket) this.socket.write(view.subarray(already, len), () => arena.release(block));
        else arena.release(block);
      } else {
        // Copy out of the ring: the socket may hold the buffer after write() returns.
        this.socket?.write(Buffer.from(pkt.subarray(t.payloadOff + already, t.payloadOff + len)));
      }
      this.rcvNxt = seqAdd(this.rcvNxt, take);
      this.bytesToHost += take;
    }
    if (t.flags & FIN && seqAdd(t.seq, len) === this.rcvNxt && !this.guestFin) {
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
      this.guestFin = true;
      this.socket?.end();
      if (this.state === 'established') this.transition('close_wait');
      else if (this.state === 'fin_wait_1') this.transition('closing');
      else if (this.state === 'fin_wait_2') this.enterTimeWait();
    }
    this.sendAck();
  }

  // ---- host socket --------------------------------------------------------------

  private onHostData(b: Uint8Array, block: number): void {
    this.lastActivity = Date.now();
    this.queue.push(b, block);
    if (!this.paused && this.queue.length >= this.queueLimit()) {
      this.paused = true;
      this.socket?.pause();
    }
    this.trySend();
  }

  private onHostEnd(): void {
    this.hostEof = true;
    this.trySend();
  }

  private onHostDrain(): void {
    // The host took what it had buffered: reopen the window if we had been closing it.
    if (this.lastAdvertised < RCV_BUFFER / 2 && this.state !== 'closed') this.sendAck();
  }

  private onSocketError(err: NodeJS.ErrnoException): void {
    if (this.state === 'closed') return;
    if (this.state === 'connecting') {
      clearTimeout(this.connectTimer);
      this.env.counters.refuse(err.code === 'ECONNREFUSED' ? 'host_refused' : 'host_unreachable');
      this.resetGuest();
      this.close(err.code ?? 'connect_error');
      return;
    }
    this.env.counters.drop('tcp_host_error');
    this.resetGuest();
    this.close(err.code ?? 'host_error');
  }

  private onSocketClose(): void {
    // A close after both directions finished is the normal end; flows linger or
    // wait for the guest's last ACK on their own timers.
    if (this.state === 'syn_sent') {
      this.resetGuest();
      this.close('host_closed');
    }
  }

  // ---- sending toward the guest --------------------------------------------------

  private queueLimit(): number {
    return Math.min(Math.max(this.sndWnd, 64 * 1024), MAX_INFLIGHT) + 64 * 1024;
  }

  /** The window we advertise: room left before Node buffers RCV_BUFFER for the host. */
  private window(): number {
    const room = Math.max(0, RCV_BUFFER - (this.socket?.writableLength ?? 0));
    this.lastAdvertised = room;
    return Math.min(0xffff, room >>> this.ourShift);
  }

  resumeSending(): void {
    this.trySend();
  }

  private trySend(): void {
    if (this.state === 'closed' || this.state === 'connecting' || this.state === 'syn_sent') return;
    if (this.state === 'syn_received') return;
    const sb = this.sb;
    for (;;) {
      if (sb.blocked) {
        sb.waitForGuestPath(this);
        return;
      }
      const inflight = seqDiff(this.sndNxt, this.sndUna);
      const unsent = this.queue.length - inflight;
      if (unsent > 0) {
        const room = Math.min(this.sndWnd, MAX_INFLIGHT) - inflight;
        if (room <= 0) {
          this.armRto(); // persist: probe a zero window on the RTO timer
          return;
        }
        const n = Math.min(unsent, this.guestMss, room);
        this.sendSegment(ACK | (n === unsent ? PSH : 0), this.sndNxt, inflight, n);
        this.sndNxt = seqAdd(this.sndNxt, n);
        if (seqLt(this.sndMax, this.sndNxt)) this.sndMax = this.sndNxt;
        this.bytesToGuest += n;
        this.armRto();
        continue;
      }
      if (this.hostEof && this.finSeq < 0) {
        this.finSeq = this.sndNxt;
        this.sendSegment(FIN | ACK, this.sndNxt, 0, 0);
        this.sndNxt = seqAdd(this.sndNxt, 1);
        this.sndMax = this.sndNxt;
        if (this.state === 'established') this.transition('fin_wait_1');
        else if (this.state === 'close_wait') this.transition('last_ack');
        this.armRto();
      } else if (this.hostEof && !this.finAcked && this.sndNxt === this.finSeq) {
        // Go-back-N rewound over our FIN: send it again.
        this.sendSegment(FIN | ACK, this.sndNxt, 0, 0);
        this.sndNxt = seqAdd(this.sndNxt, 1);
        this.armRto();
      }
      return;
    }
  }

  private sendSegment(flags: number, seq: number, from: number, plen: number): void {
    this.emit(flags, seq, this.rcvNxt, this.window(), from, plen);
  }

  /** Builds one segment toward the guest (in the ring) and sends it. */
  private emit(
    flags: number,
    seq: number,
    ack: number,
    window: number,
    from = 0,
    plen = 0,
    mss = 0,
    wscale = -1,
  ): void {
    const b = this.env.builder
      .set(this.remoteIp, this.remotePort, this.guestIp, this.guestPort, seq, ack, flags, window, mss, wscale)
      .prepare(this.sb, plen > 0 ? this.queue : undefined, from, plen);
    this.env.counters.framesOut++;
    this.env.counters.bytesOut += b.length;
    this.sb.send(b);
  }

  private sendAck(): void {
    this.sendSegment(ACK, this.sndNxt, 0, 0);
  }

  private sendSynAck(): void {
    this.sendHandshake(SYN | ACK);
    this.sndNxt = seqAdd(this.iss, 1);
    this.sndMax = this.sndNxt;
  }

  private sendSyn(): void {
    this.sendHandshake(SYN);
    this.sndNxt = seqAdd(this.iss, 1);
    this.sndMax = this.sndNxt;
    this.lastProgress = Date.now();
    this.armRto();
  }

  private sendHandshake(flags: number): void {
    // Never scaled in a SYN; scaling offered in our SYN, and in a SYN-ACK only if the guest offered it.
    const wscale = flags === SYN || this.ourShift > 0 ? OUR_WSCALE : -1;
    this.emit(flags, this.iss, flags & ACK ? this.rcvNxt : 0, 0xffff, 0, 0, this.sb.config.mtu - 40, wscale);
  }

  /** Sends RST to the guest for this flow. */
  private resetGuest(): void {
    if (this.state === 'closed') return;
    this.emit(RST | ACK, this.state === 'connecting' ? 0 : this.sndNxt, this.rcvNxt, 0);
  }

  // ---- timers ------------------------------------------------------------------------

  private armRto(): void {
    if (this.rtoTimer) return;
    if (this.lastProgress === 0) this.lastProgress = Date.now();
    this.rtoTimer = setTimeout(() => this.onRto(), this.rto);
  }

  private clearRto(): void {
    clearTimeout(this.rtoTimer);
    this.rtoTimer = undefined;
  }

  /** A paused guest ran again after `pausedMs`: neither idleness nor lack of progress. */
  thawed(pausedMs: number): void {
    this.lastActivity += pausedMs;
    if (this.lastProgress) this.lastProgress += pausedMs;
    // Timers that came due while frozen were parked, not re-armed (no polling while paused).
    if (this.state === 'closed') return;
    if (this.rtoParked) {
      this.rtoParked = false;
      this.armRto();
    }
    if (this.idleParked) {
      this.idleParked = false;
      this.armIdle();
    }
  }

  private onRto(): void {
    this.rtoTimer = undefined;
    if (this.state === 'closed') return;
    if (this.sb.frozen) {
      // A paused guest cannot answer: no retransmit, no backoff, no SYN retry spent; thawed() re-arms.
      this.rtoParked = true;
      return;
    }
    if (this.state === 'syn_sent') {
      if (++this.synTries > SYN_RETRIES) {
        this.env.counters.refuse('guest_no_answer');
        this.socket?.destroy();
        this.close('guest_no_answer');
        return;
      }
      this.rto = Math.min(RTO_MAX_MS, this.rto * 2);
      this.sendSyn();
      return;
    }
    const outstanding = this.sndNxt !== this.sndUna;
    const unsent = this.queue.length - seqDiff(this.sndNxt, this.sndUna);
    if (!outstanding) {
      if (unsent > 0 && this.sndWnd === 0) {
        // Zero-window probe: an ACK one byte back makes the guest restate its window.
        this.sendSegment(ACK, seqAdd(this.sndUna, -1), 0, 0);
        this.rto = Math.min(RTO_MAX_MS, this.rto * 2);
        this.armRto();
      }
      return;
    }
    const since = Date.now() - this.lastProgress;
    if (since < this.rto) {
      this.rtoTimer = setTimeout(() => this.onRto(), this.rto - since);
      return;
    }
    this.env.counters.retransmits++;
    this.rto = Math.min(RTO_MAX_MS, this.rto * 2);
    this.lastProgress = Date.now();
    this.goBack();
  }

  /** Go-back-N: resend everything from SND.UNA. */
  private goBack(): void {
    this.sndNxt = this.sndUna;
    this.trySend();
  }

  private enterTimeWait(): void {
    this.transition('time_wait');
    this.clearRto();
    this.lingerTimer = setTimeout(() => this.close('closed'), LINGER_MS);
  }

  /** Lazy idle timer: re-armed for the remainder when there was activity, never reset per packet. */
  private armIdle(): void {
    const idle = this.sb.config.tcpIdleTimeoutMs;
    const check = (): void => {
      const quiet = Date.now() - this.lastActivity;
      // A paused guest is never idle: the check is parked until thawed() (which credits the pause).
      if (this.sb.frozen) this.idleParked = true;
      else if (quiet < idle) this.idleTimer = setTimeout(check, idle - quiet);
      else this.idleExpired();
    };
    this.idleTimer = setTimeout(check, idle);
  }

  private idleExpired(): void {
    if (this.state === 'closed') return;
    this.env.counters.drop('tcp_idle_timeout');
    this.resetGuest();
    this.socket?.resetAndDestroy();
    this.close('idle_timeout');
  }

  // ---- teardown ------------------------------------------------------------------------

  private transition(to: TcpState): void {
    const from = this.state;
    this.state = to;
    if (this.env.debug) {
      this.env.log.debug(
        { event: 'flow.state', proto: 'tcp', sandbox: this.sb.id, flow: this.describe(), from, to },
        'tcp flow state',
      );
    }
  }

  /** Removes the flow: timers stopped, socket destroyed, slot released. */
  close(reason: string): void {
    if (this.state === 'closed') return;
    this.transition('closed');
    clearTimeout(this.rtoTimer);
    clearTimeout(this.lingerTimer);
    clearTimeout(this.idleTimer);
    clearTimeout(this.connectTimer);
    this.sb.forget(this);
    this.queue.clear();
    this.env.arena.release(this.armed);
    this.armed = -1;
    if (this.socket && !this.socket.destroyed) this.socket.destroy();
    this.env.removeTcp(this, reason);
  }

  /** Shard shutdown or sandbox detach: reset both sides. */
  abort(reason: string): void {
    if (this.state === 'closed') return;
    this.resetGuest();
    this.socket?.resetAndDestroy();
    this.close(reason);
  }
}
