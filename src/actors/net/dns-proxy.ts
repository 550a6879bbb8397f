/**
 * The DNS address of every sandbox: a caching forwarder. Queries are keyed by
 * their question (name, type, class) — never the transaction id — and a
 * cached answer is replayed with the asker's id and its TTLs aged. Misses go
 * to the upstream (the sandbox's configured one, or the first nameserver of
 * the host's /etc/resolv.conf) through one socket per shard, matched back by
 * a fresh upstream id. Answers are cached for their minimum TTL (negative
 * answers for the SOA's negative TTL, RFC 2308), capped.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { ipToString } from '../../protocol/net/addr.js';
import {
  ageDnsTtls,
  buildServfail,
  type DnsQuestion,
  inspectDnsResponse,
  parseDnsQuestion,
  questionKey,
  setDnsId,
} from '../../protocol/net/dns.js';
import type { ShardCounters } from './counters.js';
import type { SandboxNet } from './sandbox-net.js';
import { sendUdpToGuest } from './udp-flow.js';

const MAX_CACHE = 10_000;
const MAX_TTL_S = 3600;
const UPSTREAM_TIMEOUT_MS = 3_000;
const MAX_PENDING = 4096;

interface CacheEntry {
  msg: Uint8Array;
  storedAt: number;
  expiresAt: number;
  ttlOffsets: number[];
}

interface Pending {
  sb: SandboxNet;
  guestPort: number;
  guestId: number;
  key: string;
  query: Uint8Array;
  q: DnsQuestion;
  timer: NodeJS.Timeout;
}

export interface DnsStats {
  queries: number;
  hits: number;
  misses: number;
  upstreamTimeouts: number;
  cached: number;
}

/** The host's resolver from /etc/resolv.conf ("ip:53"), or undefined. */
export function systemResolver(): string | undefined {
  try {
    const m = /^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)/m.exec(readFileSync('/etc/resolv.conf', 'utf8'));
    return m ? `${m[1]}:53` : undefined;
  } catch {
    return undefined;
  }
}

export class DnsProxy {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly pending = new Map<number, Pending>();
  private socket: dgram.Socket | undefined;
  private nextId = (Math.random() * 0xffff) | 0;
  readonly stats: DnsStats = { queries: 0, hits: 0, misses: 0, upstreamTimeouts: 0, cached: 0 };

  constructor(
    private readonly counters: ShardCounters,
    private readonly log: Logger,
  ) {}

  /** A query from the guest to the DNS address. `payload` is a ring view. */
  onQuery(sb: SandboxNet, guestPort: number, payload: Uint8Array): void {
    const q = parseDnsQuestion(payload, 0, payload.length);
    if (!q || (payload[2] & 0x80) !== 0) {
      this.counters.drop('dns_malformed');
      return;
    }
    this.stats.queries++;
    const upstream = sb.dnsUpstream;
    const key = `${upstream?.ip}:${upstream?.port}|${questionKey(q)}`;
    const hit = this.cache.get(key);
    const now = Date.now();
    if (hit && hit.expiresAt > now) {
      this.stats.hits++;
      // LRU: move to the back.
      this.cache.delete(key);
      this.cache.set(key, hit);
      const msg = hit.msg.slice();
      setDnsId(msg, q.id);
      ageDnsTtls(msg, hit.ttlOffsets, Math.floor((now - hit.storedAt) / 1000));
      sendUdpToGuest(sb, this.counters, sb.config.dnsIp, 53, guestPort, msg);
      return;
    }
    if (hit) this.cache.delete(key);
    this.stats.misses++;
    if (!upstream || this.pending.size >= MAX_PENDING) {
      this.counters.drop(upstream ? 'dns_pending_full' : 'dns_no_upstream');
      sendUdpToGuest(sb, this.counters, sb.config.dnsIp, 53, guestPort, buildServfail(payload, q));
      return;
    }
    const id = this.freshId();
    const query = payload.slice();
    setDnsId(query, id);
    const timer = setTimeout(() => {
      const p = this.pending.get(id);
      if (!p) return;
      this.pending.delete(id);
      this.stats.upstreamTimeouts++;
      sendUdpToGuest(p.sb, this.counters, p.sb.config.dnsIp, 53, p.guestPort, buildServfail(p.query, p.q));
    }, UPSTREAM_TIMEOUT_MS);
    this.pending.set(id, { sb, guestPort, guestId: q.id, key, query: payload.slice(), q, timer });
    this.upstreamSocket().send(query, upstream.port, ipToString(upstream.ip));
  }

  private freshId(): number {
    for (;;) {
      this.nextId = (this.nextId + 1) & 0xffff;
      if (!this.pending.has(this.nextId)) return this.nextId;
    }
  }

  private upstreamSocket(): dgram.Socket {
    if (this.socket) return this.socket;
    const s = dgram.createSocket('udp4');
    s.on('message', (msg) => this.onAnswer(msg));
    s.on('error', (err) => this.log.warn({ event: 'dns.upstream_error', err }, 'DNS upstream socket error'));
    this.socket = s;
    return s;
  }

  private onAnswer(msg: Buffer): void {
    if (msg.length < 12) return;
    const id = (msg[0] << 8) | msg[1];
    const p = this.pending.get(id);
    if (!p) return; // late or forged: nobody asked
    // The answer must be for the question we sent.
    const q = parseDnsQuestion(msg, 0, msg.length);
    if (!q || questionKey(q) !== questionKey(p.q)) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    const answer = new Uint8Array(msg);
    const info = inspectDnsResponse(answer);
    if (info && info.ttl > 0) {
      const now = Date.now();
      this.cache.set(p.key, {
        msg: answer.slice(),
        storedAt: now,
        expiresAt: now + Math.min(info.ttl, MAX_TTL_S) * 1000,
        ttlOffsets: info.ttlOffsets,
      });
      if (this.cache.size > MAX_CACHE) this.cache.delete(this.cache.keys().next().value!);
      this.stats.cached = this.cache.size;
    }
    setDnsId(answer, p.guestId);
    sendUdpToGuest(p.sb, this.counters, p.sb.config.dnsIp, 53, p.guestPort, answer);
  }

  /** Forgets a sandbox's pending queries. */
  forget(sb: SandboxNet): void {
    for (const [id, p] of this.pending) {
      if (p.sb !== sb) continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
    }
  }

  close(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
    this.socket?.close();
    this.socket = undefined;
  }
}
