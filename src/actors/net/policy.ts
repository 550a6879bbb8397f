/**
 * Egress policy: may this sandbox open a flow to (ip, port)? And where does
 * that flow really go on the host? The gateway address stands for the host
 * itself, i.e. its loopback — refused unless the sandbox was allowed host
 * loopback, or an allow rule names the gateway and port explicitly.
 */
import { inCidr, parseCidr } from '../../protocol/net/addr.js';
import type { EgressRule, NetConfig } from './config.js';

export const HOST_LOOPBACK = 0x7f000001;
const LINK_LOCAL = parseCidr('169.254.0.0/16')!;
const LOOPBACK = parseCidr('127.0.0.0/8')!;

export type EgressVerdict =
  | { ok: true; hostIp: number }
  | { ok: false; reason: 'host_loopback' | 'link_local' | 'denied' | 'not_allowed' | 'loopback' };

const portMatches = (r: EgressRule, port: number): boolean =>
  r.ports.length === 0 || r.ports.some(([lo, hi]) => port >= lo && port <= hi);

const matches = (rules: EgressRule[], ip: number, port: number): boolean =>
  rules.some((r) => inCidr(ip, r.cidr) && portMatches(r, port));

export function checkEgress(cfg: NetConfig, ip: number, port: number): EgressVerdict {
  const p = cfg.policy;
  if (ip === cfg.gatewayIp) {
    if (matches(p.denyOut, ip, port)) return { ok: false, reason: 'denied' };
    if (p.allowHostLoopback || matches(p.allowOut, ip, port)) return { ok: true, hostIp: HOST_LOOPBACK };
    return { ok: false, reason: 'host_loopback' };
  }
  // A guest never legitimately sends to 127/8 on the wire; do not let it reach ours.
  if (inCidr(ip, LOOPBACK)) return { ok: false, reason: 'loopback' };
  if (inCidr(ip, LINK_LOCAL) && !p.allowLinkLocal && !matches(p.allowOut, ip, port)) {
    return { ok: false, reason: 'link_local' };
  }
  if (matches(p.denyOut, ip, port)) return { ok: false, reason: 'denied' };
  if (p.allowOut.length > 0 && !matches(p.allowOut, ip, port)) return { ok: false, reason: 'not_allowed' };
  return { ok: true, hostIp: ip };
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
