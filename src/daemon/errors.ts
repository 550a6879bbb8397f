/**
 * Errors of the daemon, and how every error the layers below throw becomes an
 * HTTP answer.
 *
 * One body shape for every REST route, native or E2B:
 *
 *     { "code": 404, "message": "no sandbox 7-…", "error": "ERR_NO_SUCH_SANDBOX", "details": {…} }
 *
 * `code` and `message` are what E2B's API (and so its SDKs) read; `error` is
 * actorvm's stable code, the one to switch on. Connect RPC routes answer
 * Connect errors instead (`{code: "not_found", message}`), mapped from the
 * same stable codes by `connectCodeFor`.
 */
import { Code, ConnectError } from '@connectrpc/connect';
import { PoolErrorCode } from '../actors/pool/errors.js';
import { SandboxErrorCode } from '../api/errors.js';
import { ActorvmError } from '../errors.js';

export const DaemonErrorCode = {
  /** No API key (TCP), or a wrong one. */
  UNAUTHORIZED: 'ERR_DAEMON_UNAUTHORIZED',
  /** The request body is not valid JSON, or fails the route's schema. */
  BAD_REQUEST: 'ERR_DAEMON_BAD_REQUEST',
  /** No route for this method and path. */
  NO_ROUTE: 'ERR_DAEMON_NO_ROUTE',
  /** The body is larger than the route accepts. */
  TOO_LARGE: 'ERR_DAEMON_BODY_TOO_LARGE',
  /** E2B's (deprecated) resume of a sandbox that is not paused: E2B answers 409 "already running". */
  NOT_PAUSED: 'ERR_DAEMON_NOT_PAUSED',
  /** An in-sandbox call without the E2b-Sandbox-Id header. */
  NO_SANDBOX_HEADER: 'ERR_DAEMON_NO_SANDBOX_HEADER',
  /**
   * An in-sandbox call for a sandbox that does not exist (any more). 502, and
   * Connect `unavailable`: what E2B's SDK reads as "the sandbox timed out or
   * was killed" (isRunning() is false on it).
   */
  SANDBOX_GONE: 'ERR_DAEMON_SANDBOX_GONE',
  /** The daemon could not start (bad --listen, unreadable key file, …). */
  START_FAILED: 'ERR_DAEMON_START_FAILED',
  /** Another daemon is serving the control socket. */
  IN_USE: 'ERR_DAEMON_IN_USE',
  /** No actor with that id or name (inspect). */
  NO_SUCH_ACTOR: 'ERR_NO_SUCH_ACTOR',
  /** No running pool with that name (`image@backend/256m/1c`). */
  NO_SUCH_POOL: 'ERR_NO_SUCH_POOL',
} as const;

export class DaemonError extends ActorvmError {}

/** HTTP status for a stable code from any layer. */
const STATUS: Record<string, number> = {
  [DaemonErrorCode.UNAUTHORIZED]: 401,
  [DaemonErrorCode.BAD_REQUEST]: 400,
  [DaemonErrorCode.NO_ROUTE]: 404,
  [DaemonErrorCode.TOO_LARGE]: 413,
  [DaemonErrorCode.NOT_PAUSED]: 409,
  [DaemonErrorCode.NO_SANDBOX_HEADER]: 400,
  [DaemonErrorCode.SANDBOX_GONE]: 502,
  ERR_NO_SUCH_SANDBOX: 404,
  [DaemonErrorCode.NO_SUCH_ACTOR]: 404,
  [DaemonErrorCode.IN_USE]: 409,
  [DaemonErrorCode.NO_SUCH_POOL]: 404,
  // A pool that had no machine in time, or hands out none any more, is a busy service:
  // 503 is what E2B's SDK reads as "no capacity right now, retry" (ServiceBusyError).
  [PoolErrorCode.EXHAUSTED]: 503,
  [PoolErrorCode.DRAINING]: 503,
  [PoolErrorCode.CAPACITY]: 503,
  [PoolErrorCode.EXISTS]: 409,
  [PoolErrorCode.BAD_CONFIG]: 400,
  [PoolErrorCode.TOO_MANY]: 409,
  // The sandbox exists but is not in a state for the call (still booting, failed, or paused).
  ERR_VM_NOT_READY: 409,
  ERR_PROCESS_NOT_FOUND: 404,
  ERR_PROCESS_TOO_MANY: 429,
  ERR_SANDBOX_STOPPED: 410,
  ERR_SANDBOX_BOOT_FAILED: 502,
  ERR_NET_FORWARD: 409,
  ERR_NET_NO_SANDBOX: 404,
  ERR_IMAGE_NOT_FOUND: 404,
  ERR_AGENT_NOT_REGULAR_FILE: 400,
  ERR_AGENT_NOT_DIRECTORY: 400,
  ERR_AGENT_WATCH_LIMIT: 429,
  // Pause, snapshots, forks. E2B's SDK reads a 409 on pause as "already paused" (pause() is false).
  [SandboxErrorCode.PAUSED]: 409,
  [SandboxErrorCode.SNAPSHOT_NOT_FOUND]: 404,
  [SandboxErrorCode.SNAPSHOT_IN_USE]: 409,
  [SandboxErrorCode.SNAPSHOT_MISMATCH]: 400,
  [SandboxErrorCode.SNAPSHOT_IMAGE_CHANGED]: 409,
  // ERR_FORK_CHILD_FAILED is never a request's answer, only an entry of a fork's (see forkEntryStatus).
};

/** Codes that are the caller's fault whatever their area (`ERR_*_BAD_*`, schema failures). */
const isBadInput = (code: string): boolean => /^ERR_[A-Z]+_BAD_|_SPEC$|^ERR_NET_BAD/.test(code);

export interface HttpErrorBody {
  code: number;
  message: string;
  error: string;
  details?: Record<string, unknown>;
}

export function httpStatusFor(code: string): number {
  return STATUS[code] ?? (isBadInput(code) ? 400 : 500);
}

/**
 * The status a failed fork child's entry carries (E2B's per-fork `error.code`):
 * that of the cause the child met (`details.cause`), else 500.
 */
export function forkEntryStatus(err: { code?: string; details?: Record<string, unknown> }): number {
  const cause = err.details?.cause;
  return typeof cause === 'string' && cause.startsWith('ERR_') ? httpStatusFor(cause) : 500;
}

/** HTTP status for a guest system call's failure (ERR_AGENT_REMOTE carries the errno name). */
const ERRNO_STATUS: Record<string, number> = {
  ENOENT: 404,
  ENOTDIR: 404,
  EISDIR: 400,
  EINVAL: 400,
  ENAMETOOLONG: 400,
  EEXIST: 409,
  ENOTEMPTY: 409,
  EACCES: 403,
  EPERM: 403,
  EROFS: 403,
  ENOSPC: 507,
  EDQUOT: 507,
};

/** The answer for any thrown value. Unknown throwables are 500 ERR_INTERNAL, never a crash. */
export function httpErrorFor(err: unknown): HttpErrorBody {
  if (err instanceof ActorvmError || (typeof err === 'object' && err !== null && 'code' in err)) {
    const e = err as { code: unknown; message?: string; details?: Record<string, unknown> };
    if (typeof e.code === 'string' && e.code.startsWith('ERR_')) {
      const errno = e.details?.errnoName;
      const status = (typeof errno === 'string' ? ERRNO_STATUS[errno] : undefined) ?? httpStatusFor(e.code);
      return { code: status, message: e.message ?? e.code, error: e.code, details: e.details };
    }
  }
  return { code: 500, message: err instanceof Error ? err.message : String(err), error: 'ERR_INTERNAL' };
}

/** The Connect code for a stable code (and, for guest syscall failures, its errno). */
export function connectCodeFor(err: unknown): Code {
  const e = (err ?? {}) as { code?: string; details?: { errnoName?: string } };
  switch (e.details?.errnoName) {
    case 'ENOENT':
    case 'ENOTDIR':
      return Code.NotFound;
    case 'EEXIST':
    case 'ENOTEMPTY':
      return Code.AlreadyExists;
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return Code.PermissionDenied;
    case 'EISDIR':
    case 'EINVAL':
    case 'ENAMETOOLONG':
      return Code.InvalidArgument;
    case 'ENOSPC':
    case 'EDQUOT':
      return Code.ResourceExhausted;
  }
  const status = httpStatusFor(e.code ?? 'ERR_INTERNAL');
  if (status === 400) return Code.InvalidArgument;
  if (status === 401) return Code.Unauthenticated;
  if (status === 404) return Code.NotFound;
  if (status === 409) return Code.FailedPrecondition;
  if (status === 410) return Code.Unavailable;
  if (status === 429) return Code.ResourceExhausted;
  if (status === 502 || status === 503) return Code.Unavailable;
  return Code.Internal;
}

/** Response metadata (trailers) that carry actorvm's stable code across Connect: the remote client reads them. */
export const ERROR_CODE_HEADER = 'actorvm-error-code';
export const ERROR_DETAILS_HEADER = 'actorvm-error-details';

/** Any thrown value as a ConnectError (already-Connect errors pass through). */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const body = httpErrorFor(err);
  const metadata: Record<string, string> = { [ERROR_CODE_HEADER]: body.error };
  if (body.details) metadata[ERROR_DETAILS_HEADER] = encodeURIComponent(JSON.stringify(body.details));
  return new ConnectError(body.message, connectCodeFor(err), metadata, undefined, err);
}
