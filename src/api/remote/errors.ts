/**
 * Errors of the remote client (src/api/remote). Two kinds reach a caller:
 *
 * - The daemon's own: a REST error body `{code, message, error, details}` is
 *   rethrown as a `RemoteError` whose `code` is the body's stable `error`
 *   (ERR_NO_SUCH_SANDBOX, ERR_SANDBOX_BAD_OPTIONS, ERR_DAEMON_UNAUTHORIZED, …),
 *   so callers switch on `err.code` exactly as they would in-process. A
 *   Connect error (the in-sandbox services) carries the stable code in its
 *   `actorvm-error-code` metadata when the daemon sends it; otherwise the
 *   Connect code is mapped to the in-process code the same failure has there
 *   (see `fromConnect`).
 * - The client's own, below (ERR_REMOTE_*): no daemon at the address, a
 *   connection lost mid-stream, an answer that is not the daemon's protocol.
 */
import { Code, ConnectError } from '@connectrpc/connect';
import { SandboxError } from '../errors.js';

export const RemoteErrorCode = {
  /** Nothing answers at the socket or URL (no daemon running, wrong path, refused). */
  UNREACHABLE: 'ERR_REMOTE_UNREACHABLE',
  /** connectRuntime's options, or an argument only the remote client takes, failed its schema. */
  BAD_OPTIONS: 'ERR_REMOTE_BAD_OPTIONS',
  /** The daemon answered something that is not its protocol (no error body, unparsable JSON). */
  PROTOCOL: 'ERR_REMOTE_PROTOCOL',
  /** The connection broke while a stream (a command's output, a watch, a download) was open. */
  CONNECTION_LOST: 'ERR_REMOTE_CONNECTION_LOST',
  /** The RemoteRuntime was closed: its calls and streams end. */
  CLOSED: 'ERR_REMOTE_CLOSED',
  /** The daemon's API has no way to do this (e.g. signals other than SIGTERM and SIGKILL). */
  UNSUPPORTED: 'ERR_REMOTE_UNSUPPORTED',
  /** A command ended without a result: the daemon reported it could not run or follow it. */
  PROCESS_FAILED: 'ERR_REMOTE_PROCESS_FAILED',
  /** An in-sandbox call failed in a way the daemon did not name (Connect `internal`, `unknown`). */
  RPC: 'ERR_REMOTE_RPC',
} as const;

/**
 * Every error the remote client throws. `code` is the daemon's stable code
 * or one of RemoteErrorCode; `status` is the HTTP status when there was one.
 */
export class RemoteError extends SandboxError {
  constructor(
    code: string,
    message: string,
    details?: Record<string, unknown>,
    readonly status?: number,
    options?: ErrorOptions,
  ) {
    super(code, message, details, options);
  }
}

/** The daemon's REST error body (src/daemon/errors.ts). */
export interface ErrorBody {
  code: number;
  message: string;
  error: string;
  details?: Record<string, unknown>;
}

export function isErrorBody(v: unknown): v is ErrorBody {
  const b = v as ErrorBody;
  return typeof v === 'object' && v !== null && typeof b.error === 'string' && typeof b.message === 'string';
}

/** A RemoteError from a daemon error body. */
export function fromBody(body: ErrorBody, status: number): RemoteError {
  return new RemoteError(body.error, body.message, body.details, status);
}

/** Node's errno code somewhere in an error's cause chain (ECONNREFUSED, ENOENT, EPIPE, …). */
export function errnoOf(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, hops = 0; e && hops < 8; hops++) {
    if (typeof e.code === 'string' && /^E[A-Z0-9]+$/.test(e.code)) return e.code;
    e = e.cause as typeof e;
  }
  return undefined;
}

const UNREACHABLE_ERRNO = new Set([
  'ENOENT',
  'ECONNREFUSED',
  'EACCES',
  'ENOTSOCK',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
]);

/** A transport failure (no HTTP answer) as a RemoteError. `where` names the daemon's address. */
export function fromTransport(err: unknown, where: string, streaming = false): RemoteError {
  if (err instanceof RemoteError) return err;
  const errno = errnoOf(err);
  const message = (err as Error)?.message ?? String(err);
  if (errno && UNREACHABLE_ERRNO.has(errno)) {
    return new RemoteError(
      RemoteErrorCode.UNREACHABLE,
      `no actorvm daemon at ${where} (${errno}); start one with \`actorctl serve\``,
      { address: where, errno },
      undefined,
      { cause: err },
    );
  }
  return new RemoteError(
    streaming ? RemoteErrorCode.CONNECTION_LOST : RemoteErrorCode.UNREACHABLE,
    `connection to the daemon at ${where} failed: ${message}`,
    { address: where, errno },
    undefined,
    { cause: err },
  );
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** What a Connect code means for the call that got it (the in-process code of the same failure). */
export type RpcContext = 'process' | 'start' | 'files';

/** The errno the daemon's connectCodeFor derived a Connect code from, for file operations. */
const FILE_ERRNO: Partial<Record<Code, string>> = {
  [Code.NotFound]: 'ENOENT',
  [Code.AlreadyExists]: 'EEXIST',
  [Code.PermissionDenied]: 'EACCES',
};

/**
 * A Connect error as a RemoteError. The daemon's stable code wins when it
 * sent one (metadata `actorvm-error-code`, details in `actorvm-error-details`
 * as JSON); otherwise the code is inferred from the Connect code and `ctx`.
 */
export function fromConnect(err: unknown, ctx: RpcContext, where: string, streaming = false): RemoteError {
  if (err instanceof RemoteError) return err;
  const ce = ConnectError.from(err);
  const stable = ce.metadata.get('actorvm-error-code');
  let details: Record<string, unknown> = { connectCode: Code[ce.code] };
  const extra = ce.metadata.get('actorvm-error-details');
  if (extra) {
    // JSON, percent-encoded (header values are ASCII) or plain.
    for (const text of [safeDecode(extra), extra]) {
      try {
        details = { ...JSON.parse(text), ...details };
        break;
      } catch {
        // not this form
      }
    }
  }
  if (stable) return new RemoteError(stable, ce.rawMessage, details, undefined, { cause: err });
  // No HTTP answer at all (or the connection broke): the transport failed.
  if (errnoOf(ce.cause)) return fromTransport(ce.cause, where, streaming);
  if (ce.code === Code.Canceled || ce.code === Code.Aborted) {
    return new RemoteError(RemoteErrorCode.CLOSED, ce.rawMessage, details, undefined, { cause: err });
  }
  const code = ((): string => {
    switch (ce.code) {
      case Code.Unauthenticated:
        return 'ERR_DAEMON_UNAUTHORIZED';
      case Code.InvalidArgument:
        return ctx === 'files' ? 'ERR_SANDBOX_BAD_PATH' : 'ERR_SANDBOX_BAD_OPTIONS';
      case Code.Unavailable:
        // The daemon's ERR_DAEMON_SANDBOX_GONE: in-process, a killed sandbox answers ERR_SANDBOX_STOPPED.
        return 'ERR_SANDBOX_STOPPED';
      case Code.NotFound:
        return ctx === 'process' ? 'ERR_PROCESS_NOT_FOUND' : 'ERR_AGENT_REMOTE';
      case Code.AlreadyExists:
      case Code.PermissionDenied:
        return 'ERR_AGENT_REMOTE';
      case Code.ResourceExhausted:
        return ctx === 'files' ? 'ERR_AGENT_REMOTE' : 'ERR_PROCESS_TOO_MANY';
      case Code.Unimplemented:
        return RemoteErrorCode.UNSUPPORTED;
      case Code.FailedPrecondition:
        return 'ERR_SANDBOX_BAD_OPTIONS';
      default:
        return RemoteErrorCode.RPC;
    }
  })();
  if (code === 'ERR_AGENT_REMOTE' && ctx !== 'process') {
    const errnoName = FILE_ERRNO[ce.code] ?? (ce.code === Code.ResourceExhausted ? 'ENOSPC' : undefined);
    if (errnoName) details = { ...details, errnoName };
  }
  return new RemoteError(code, ce.rawMessage, details, undefined, { cause: err });
}
