/**
 * Egress policy: may this sandbox open a flow to (ip, port), and where does
 * that flow really go on the host?
 *
 * Every destination is classified before any allow/deny rule is read, so a
 * wide rule can never grant what only a specific switch may:
 *
 *   class          destinations                         verdict
 *   -------------  -----------------------------------  --------------------------------------------
 *   gateway        the gateway address                  the host's loopback (127.0.0.1): only with
 *                                                       allowHostLoopback, or an allow rule naming
 *                                                       the gateway itself (a /32), and no deny rule
 *   dns            the DNS address                      port 53 (UDP and TCP) to the DNS proxy unless
 *                                                       dns: false; every other port refused
 *   this_network   0.0.0.0/8                            always refused (0.0.0.0 means "this host")
 *   loopback       127.0.0.0/8                          always refused
 *   link_local     169.254.0.0/16                       refused unless allowLinkLocal, or an allow
 *                                                       rule inside 169.254.0.0/16
 *   multicast      224.0.0.0/4                          dropped silently
 *   broadcast      255.255.255.255, the subnet's        dropped silently
 *                  broadcast address
 *   reserved       240.0.0.0/4                          always refused
 *   sandbox_net    the rest of the sandbox's own subnet refused: nothing of the host lives there, and
 *                  (other sandboxes' addresses)         other sandboxes are never reachable
 *   external       everything else                      deny rules, then allow rules (when any are
 *                                                       given, only what they allow)
 *
 * A sealed sandbox (a pooled one waiting to be claimed) is refused every
 * destination, DNS included, before any of this: nobody's policy is bound
 * to it yet.
 *
 * `allowOut`/`denyOut` govern only the external class (and the gateway
 * through an exact rule). DNS to the DNS address is served by the proxy
 * whatever the rules say — resolving names is what an allow-listed sandbox
 * needs to reach its allowed hosts — and `dns: false` turns it off; queries
 * to other resolvers are ordinary flows under the rules.
 */
import { type Cidr, inCidr, parseCidr } from '../../protocol/net/addr.js';
import type { EgressRule, NetConfig } from './config.js';

export const HOST_LOOPBACK = 0x7f000001;
const THIS_NETWORK = parseCidr('0.0.0.0/8')!;
const LOOPBACK = parseCidr('127.0.0.0/8')!;
const LINK_LOCAL = parseCidr('169.254.0.0/16')!;
const MULTICAST = parseCidr('224.0.0.0/4')!;
const RESERVED = parseCidr('240.0.0.0/4')!;
const LIMITED_BROADCAST = 0xffffffff;

export type DestinationClass =
  | 'gateway'
  | 'dns'
  | 'this_network'
  | 'loopback'
  | 'link_local'
  | 'multicast'
  | 'broadcast'
  | 'reserved'
  | 'sandbox_net'
  | 'external';

/** Why a flow was refused: the class itself for the always-refused ones, else what stopped it. */
export type RefusalReason =
  | Exclude<DestinationClass, 'gateway' | 'dns' | 'external'>
  | 'host_loopback'
  | 'sealed'
  | 'dns_disabled'
  | 'dns_port'
  | 'denied'
  | 'not_allowed';

export type EgressVerdict =
  | {
      ok: true;
      hostIp: number /** Set when the flow goes to another port than the guest asked for (TCP DNS). */;
      hostPort?: number;
    }
  | {
      ok: false;
      reason: RefusalReason;
      /** Drop without an answer (multicast, broadcast): nobody would have answered. */
      silent: boolean;
    };

const portMatches = (r: EgressRule, port: number): boolean =>
  r.ports.length === 0 || r.ports.some(([lo, hi]) => port >= lo && port <= hi);

const matches = (rules: EgressRule[], ip: number, port: number): boolean =>
  rules.some((r) => inCidr(ip, r.cidr) && portMatches(r, port));

/** A rule whose block lies inside `within` (so 0.0.0.0/0 does not count as naming 169.254/16). */
const inside = (r: EgressRule, within: Cidr): boolean =>
  r.cidr.prefix >= within.prefix && inCidr(r.cidr.net, within);

const matchesInside = (rules: EgressRule[], within: Cidr, ip: number, port: number): boolean =>
  rules.some((r) => inside(r, within) && inCidr(ip, r.cidr) && portMatches(r, port));

export function classify(cfg: NetConfig, ip: number): DestinationClass {
  if (ip === cfg.gatewayIp) return 'gateway';
  if (ip === cfg.dnsIp) return 'dns';
  if (inCidr(ip, THIS_NETWORK)) return 'this_network';
  if (inCidr(ip, LOOPBACK)) return 'loopback';
  if (inCidr(ip, LINK_LOCAL)) return 'link_local';
  if (inCidr(ip, MULTICAST)) return 'multicast';
  if (ip === LIMITED_BROADCAST) return 'broadcast';
  if (inCidr(ip, RESERVED)) return 'reserved';
  const mask = cfg.prefix === 0 ? 0 : (0xffffffff << (32 - cfg.prefix)) >>> 0;
  const net = (cfg.guestIp & mask) >>> 0;
  if (cfg.prefix < 31 && (ip & mask) >>> 0 === net) {
    return ip === (net | ~mask) >>> 0 ? 'broadcast' : 'sandbox_net';
  }
  return 'external';
}

const refuse = (reason: RefusalReason, silent = false): EgressVerdict => ({ ok: false, reason, silent });

/**
 * The verdict for a new flow to (ip, port) of `proto` (6 TCP, 17 UDP, 1 ICMP
 * with port 0). `dnsUpstream` is where the DNS proxy forwards (for TCP DNS).
 */
export function checkEgress(
  cfg: NetConfig,
  ip: number,
  port: number,
  dnsUpstream?: { ip: number; port: number },
): EgressVerdict {
  const p = cfg.policy;
  if (p.sealed) return refuse('sealed');
  switch (classify(cfg, ip)) {
    case 'gateway': {
      if (matches(p.denyOut, ip, port)) return refuse('denied');
      const named = p.allowOut.some((r) => r.cidr.prefix === 32 && r.cidr.net === ip && portMatches(r, port));
      return p.allowHostLoopback || named ? { ok: true, hostIp: HOST_LOOPBACK } : refuse('host_loopback');
    }
    case 'dns':
      if (port !== 53) return refuse('dns_port');
      if (!p.dns || !dnsUpstream) return refuse('dns_disabled');
      return { ok: true, hostIp: dnsUpstream.ip, hostPort: dnsUpstream.port };
    case 'this_network':
      return refuse('this_network');
    case 'loopback':
      return refuse('loopback');
    case 'link_local':
      if (!p.allowLinkLocal && !matchesInside(p.allowOut, LINK_LOCAL, ip, port)) return refuse('link_local');
      if (matches(p.denyOut, ip, port)) return refuse('denied');
      return { ok: true, hostIp: ip };
    case 'multicast':
      return refuse('multicast', true);
    case 'broadcast':
      return refuse('broadcast', true);
    case 'reserved':
      return refuse('reserved');
    case 'sandbox_net':
      return refuse('sandbox_net');
    case 'external':
      if (matches(p.denyOut, ip, port)) return refuse('denied');
      if (p.allowOut.length > 0 && !matches(p.allowOut, ip, port)) return refuse('not_allowed');
      return { ok: true, hostIp: ip };
  }
}

/** Token bucket for new flows: refilled lazily from the clock, no timer. */
export class RateLimiter {
  private tokens: number;
  private last: number;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  take(now: number): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
