/**
 * Errors of the network layer. Every one is an `ActorvmError` with a stable
 * code; the Runtime API passes them through unchanged.
 */
import { ActorvmError } from '../../errors.js';

export const NetErrorCode = {
  /** A network option is malformed or out of range (MTU, addresses, limits, timeouts, DNS upstream). */
  BAD_CONFIG: 'ERR_NET_BAD_CONFIG',
  /** An allowOut/denyOut rule is not `CIDR[:PORTS]`. */
  BAD_RULE: 'ERR_NET_BAD_RULE',
  /** A port forward could not be set up (bad port, host port in use, …). */
  FORWARD: 'ERR_NET_FORWARD',
  /** The sandbox is not attached to the network (stopped, or never attached). */
  NO_SANDBOX: 'ERR_NET_NO_SANDBOX',
} as const;

export class NetError extends ActorvmError {}

/** "path: message; …" from zod issues, for error messages. */
export function describeIssues(
  issues: readonly { path: PropertyKey[]; message: string }[],
  root: string,
): string {
  return issues.map((i) => `${[root, ...i.path.map(String)].join('.')}: ${i.message}`).join('; ');
}
