/**
 * A sandbox's network: addressing, MTU, timeouts and egress policy. Built on
 * the main thread from user options (`resolveNetConfig`), sent as JSON to the
 * guest side and the shards once per sandbox (control plane).
 */
import { ActorvmError } from '../../errors.js';
import { type Cidr, mustParseIp, parseCidr } from '../../protocol/net/addr.js';

/** An egress rule: a CIDR and optional port ranges (all ports when empty). */
export interface EgressRule {
  cidr: Cidr;
  /** Inclusive [from, to] ranges. */
  ports: [number, number][];
  /** The text it was parsed from, for logs and refusals. */
  text: string;
}

export interface NetPolicy {
  allowOut: EgressRule[];
  denyOut: EgressRule[];
  /** Lets the guest reach the host's loopback through the gateway address. */
  allowHostLoopback: boolean;
  /** Lets the guest reach 169.254.0.0/16 (cloud metadata lives there). */
  allowLinkLocal: boolean;
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

/** What a user may say about a sandbox's network (Runtime API, actorctl). */
export interface NetworkOptions {
  guestIp?: string;
  gatewayIp?: string;
  dnsIp?: string;
  prefix?: number;
  mtu?: number;
  dnsUpstream?: string;
  hostname?: string;
  /** "CIDR[:PORTS]" with PORTS like "80,443,8000-8100"; when non-empty, only these are reachable. */
  allowOut?: string[];
  denyOut?: string[];
  allowHostLoopback?: boolean;
  allowLinkLocal?: boolean;
  maxFlows?: number;
  newFlowsPerSecond?: number;
  tcpIdleTimeoutMs?: number;
  udpIdleTimeoutMs?: number;
  verifyChecksums?: boolean;
}

export const DEFAULT_MTU = 65520;

export function parseEgressRule(text: string): EgressRule {
  const [cidrText, portsText] = text.includes(':') ? text.split(':', 2) : [text, ''];
  const cidr = parseCidr(cidrText);
  if (!cidr) throw new ActorvmError('ERR_NET_BAD_RULE', `not a CIDR: '${cidrText}' in rule '${text}'`);
  const ports: [number, number][] = [];
  for (const part of portsText.split(',').filter(Boolean)) {
    const [a, b] = part.split('-').map(Number);
    const lo = a;
    const hi = b ?? a;
    if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 1 || hi > 65535 || lo > hi) {
      throw new ActorvmError('ERR_NET_BAD_RULE', `bad port range '${part}' in rule '${text}'`);
    }
    ports.push([lo, hi]);
  }
  return { cidr, ports, text };
}

export function resolveNetConfig(o: NetworkOptions = {}): NetConfig {
  const mtu = o.mtu ?? DEFAULT_MTU;
  if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65520) {
    throw new ActorvmError('ERR_NET_BAD_CONFIG', `MTU must be 576..65520, got ${mtu}`);
  }
  const maxFlows = o.maxFlows ?? 4096;
  const rate = o.newFlowsPerSecond ?? 2000;
  return {
    guestIp: mustParseIp(o.guestIp ?? '10.0.2.15'),
    gatewayIp: mustParseIp(o.gatewayIp ?? '10.0.2.2'),
    dnsIp: mustParseIp(o.dnsIp ?? '10.0.2.3'),
    prefix: o.prefix ?? 24,
    mtu,
    gatewayMac: '52:55:0a:00:02:02',
    dnsUpstream: o.dnsUpstream,
    hostname: o.hostname,
    policy: {
      allowOut: (o.allowOut ?? []).map(parseEgressRule),
      denyOut: (o.denyOut ?? []).map(parseEgressRule),
      allowHostLoopback: o.allowHostLoopback ?? false,
      allowLinkLocal: o.allowLinkLocal ?? false,
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
