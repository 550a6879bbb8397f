/**
 * A sandbox's network: addressing, MTU, timeouts and egress policy. Built on
 * the main thread from user options (`resolveNetConfig`), sent as JSON to the
 * guest side and the shards once per sandbox (control plane).
 */
import { z } from 'zod';
import { type Cidr, mustParseIp, parseCidr, parseIp, parseIpPort } from '../../protocol/net/addr.js';
import { describeIssues, NetError, NetErrorCode } from './errors.js';

/** An egress rule: a CIDR and optional port ranges (all ports when empty). */
export interface EgressRule {
  cidr: Cidr;
  /** Inclusive [from, to] ranges. */
  ports: [number, number][];
  /** The text it was parsed from, for logs and refusals. */
  text: string;
}

export interface NetPolicy {
  /** Every new flow refused, DNS included: a pooled sandbox before its claim binds a policy. */
  sealed: boolean;
  allowOut: EgressRule[];
  denyOut: EgressRule[];
  /** Lets the guest reach the host's loopback through the gateway address. */
  allowHostLoopback: boolean;
  /** Lets the guest reach 169.254.0.0/16 (cloud metadata lives there). */
  allowLinkLocal: boolean;
  /** The DNS proxy answers at the DNS address. */
  dns: boolean;
  /** Concurrent flows per sandbox (split evenly across shards). */
  maxFlows: number;
  /** New flows per second per sandbox (token bucket, split across shards). */
  newFlowsPerSecond: number;
  newFlowsBurst: number;
}

export interface NetConfig {
  guestIp: number;
  gatewayIp: number;
  dnsIp: number;
  prefix: number;
  mtu: number;
  gatewayMac: string;
  /** DNS upstream "ip:port"; default the first nameserver of /etc/resolv.conf. */
  dnsUpstream?: string;
  hostname?: string;
  policy: NetPolicy;
  tcpConnectTimeoutMs: number;
  tcpIdleTimeoutMs: number;
  tcpKeepaliveMs: number;
  udpIdleTimeoutMs: number;
  /** Verify TCP/UDP/ICMP checksums of guest packets (the IPv4 header checksum is always checked). */
  verifyChecksums: boolean;
}

/** What a user may say about a sandbox's network (Runtime API, actorctl, the daemon). */
export interface NetworkOptions {
  guestIp?: string;
  gatewayIp?: string;
  dnsIp?: string;
  prefix?: number;
  mtu?: number;
  /** "a.b.c.d[:port]" the DNS proxy forwards to; default the first nameserver of /etc/resolv.conf. */
  dnsUpstream?: string;
  hostname?: string;
  /** "CIDR[:PORTS]" with PORTS like "80,443,8000-8100"; when non-empty, only these are reachable. */
  allowOut?: string[];
  denyOut?: string[];
  allowHostLoopback?: boolean;
  allowLinkLocal?: boolean;
  /** The DNS proxy at the DNS address (default true); false refuses every query to it. */
  dns?: boolean;
  maxFlows?: number;
  newFlowsPerSecond?: number;
  tcpIdleTimeoutMs?: number;
  udpIdleTimeoutMs?: number;
  verifyChecksums?: boolean;
}

export const DEFAULT_MTU = 65520;

const ipv4 = z.string().refine((s) => parseIp(s) !== undefined, 'not an IPv4 address');
const DAY_MS = 86_400_000;

/** The schema of NetworkOptions: every field bounded, nothing unknown accepted. */
export const NetworkOptionsSchema = z
  .object({
    guestIp: ipv4,
    gatewayIp: ipv4,
    dnsIp: ipv4,
    prefix: z.number().int().min(8).max(30),
    mtu: z.number().int().min(576).max(65520),
    dnsUpstream: z.string().refine((s) => parseIpPort(s, 53) !== undefined, 'not "a.b.c.d[:port]"'),
    hostname: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/, 'not a hostname'),
    allowOut: z.array(z.string().max(256)).max(1024),
    denyOut: z.array(z.string().max(256)).max(1024),
    allowHostLoopback: z.boolean(),
    allowLinkLocal: z.boolean(),
    dns: z.boolean(),
    maxFlows: z.number().int().min(1).max(1_000_000),
    newFlowsPerSecond: z.number().min(1).max(1_000_000),
    tcpIdleTimeoutMs: z
      .number()
      .int()
      .min(1)
      .max(7 * DAY_MS),
    udpIdleTimeoutMs: z.number().int().min(1).max(DAY_MS),
    verifyChecksums: z.boolean(),
  })
  .partial()
  .strict();

export function parseEgressRule(text: string): EgressRule {
  if (typeof text !== 'string') {
    throw new NetError(NetErrorCode.BAD_RULE, `a rule is a string "CIDR[:PORTS]", got ${typeof text}`);
  }
  const [cidrText, portsText] = text.includes(':') ? text.split(':', 2) : [text, ''];
  const cidr = parseCidr(cidrText);
  if (!cidr)
    throw new NetError(NetErrorCode.BAD_RULE, `not a CIDR: '${cidrText}' in rule '${text}'`, { rule: text });
  const ports: [number, number][] = [];
  for (const part of portsText.split(',').filter(Boolean)) {
    const [a, b, extra] = part.split('-');
    const lo = /^\d+$/.test(a) ? Number(a) : Number.NaN;
    const hi = b === undefined ? lo : /^\d+$/.test(b) ? Number(b) : Number.NaN;
    if (
      extra !== undefined ||
      !Number.isInteger(lo) ||
      !Number.isInteger(hi) ||
      lo < 1 ||
      hi > 65535 ||
      lo > hi
    ) {
      throw new NetError(NetErrorCode.BAD_RULE, `bad port range '${part}' in rule '${text}'`, { rule: text });
    }
    ports.push([lo, hi]);
  }
  return { cidr, ports, text };
}

/**
 * Validates user options and builds the config. Throws ERR_NET_BAD_CONFIG
 * (shape, ranges) or ERR_NET_BAD_RULE (a rule's text), never a plain TypeError.
 */
export function resolveNetConfig(options: NetworkOptions = {}): NetConfig {
  const parsed = NetworkOptionsSchema.safeParse(options ?? {});
  if (!parsed.success) {
    throw new NetError(NetErrorCode.BAD_CONFIG, describeIssues(parsed.error.issues, 'network'), {
      issues: parsed.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })),
    });
  }
  const o = parsed.data;
  const allowOut = (o.allowOut ?? []).map(parseEgressRule);
  const denyOut = (o.denyOut ?? []).map(parseEgressRule);
  const guestIp = mustParseIp(o.guestIp ?? '10.0.2.15');
  const gatewayIp = mustParseIp(o.gatewayIp ?? '10.0.2.2');
  const dnsIp = mustParseIp(o.dnsIp ?? '10.0.2.3');
  const prefix = o.prefix ?? 24;
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  if (
    (gatewayIp & mask) >>> 0 !== (guestIp & mask) >>> 0 ||
    (dnsIp & mask) >>> 0 !== (guestIp & mask) >>> 0
  ) {
    throw new NetError(
      NetErrorCode.BAD_CONFIG,
      "network: the gateway and DNS addresses must be in the guest's subnet",
    );
  }
  if (new Set([guestIp, gatewayIp, dnsIp]).size !== 3) {
    throw new NetError(NetErrorCode.BAD_CONFIG, 'network: guestIp, gatewayIp and dnsIp must differ');
  }
  const maxFlows = o.maxFlows ?? 4096;
  const rate = o.newFlowsPerSecond ?? 2000;
  return {
    guestIp,
    gatewayIp,
    dnsIp,
    prefix,
    mtu: o.mtu ?? DEFAULT_MTU,
    gatewayMac: '52:55:0a:00:02:02',
    dnsUpstream: o.dnsUpstream,
    hostname: o.hostname,
    policy: {
      sealed: false,
      allowOut,
      denyOut,
      allowHostLoopback: o.allowHostLoopback ?? false,
      allowLinkLocal: o.allowLinkLocal ?? false,
      dns: o.dns ?? true,
      maxFlows,
      newFlowsPerSecond: rate,
      newFlowsBurst: Math.max(rate, 64),
    },
    tcpConnectTimeoutMs: 20_000,
    tcpIdleTimeoutMs: o.tcpIdleTimeoutMs ?? 2 * 3600_000,
    tcpKeepaliveMs: 60_000,
    udpIdleTimeoutMs: o.udpIdleTimeoutMs ?? 30_000,
    verifyChecksums: o.verifyChecksums ?? true,
  };
}

/** The same addressing with every egress refused: what a pooled sandbox idles with. */
export function sealedNetConfig(config: NetConfig): NetConfig {
  return { ...config, policy: { ...config.policy, sealed: true, dns: false, allowOut: [], denyOut: [] } };
}
