/**
 * The sandbox an in-sandbox request is for: E2B's SDK names it in the
 * E2b-Sandbox-Id header on every call (with E2B_SANDBOX_URL set, one URL
 * serves every sandbox). Only the key is accepted (sandboxes.ts). An unknown
 * one is ERR_DAEMON_SANDBOX_GONE (502), which the SDK reads as "not running".
 */
import type { IncomingHttpHeaders } from 'node:http';
import { DaemonError, DaemonErrorCode } from '../../errors.js';
import { type Found, findSandbox } from '../../sandboxes.js';
import type { Daemon } from '../../server.js';

export const SANDBOX_HEADER = 'e2b-sandbox-id';

export function sandboxOf(d: Daemon, req: { headers: IncomingHttpHeaders }): Found {
  return sandboxFromHeader(d, req.headers[SANDBOX_HEADER]);
}

export function sandboxFromHeader(d: Daemon, id: string | string[] | null | undefined): Found {
  if (typeof id !== 'string' || id.length === 0) {
    throw new DaemonError(
      DaemonErrorCode.NO_SANDBOX_HEADER,
      'in-sandbox calls need the E2b-Sandbox-Id header',
    );
  }
  try {
    return findSandbox(d.runtime, id, { keyOnly: true });
  } catch (err) {
    throw new DaemonError(DaemonErrorCode.SANDBOX_GONE, (err as Error).message, { sandboxId: id });
  }
}
