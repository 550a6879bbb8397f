/**
 * Errors of the guest-agent client. Every one is an `ActorvmError` with a stable
 * code (documented in docs/protocol.md); callers switch on `err.code`.
 */
import { ActorvmError } from '../errors.js';
import type { RemoteErrorInfo } from '../protocol/agent-messages.js';

export const AgentErrorCode = {
  /** A call's `timeoutMs` (or the handshake timeout) elapsed. */
  TIMEOUT: 'ERR_AGENT_TIMEOUT',
  /** The connection is closed or closed while the call was pending. */
  CLOSED: 'ERR_AGENT_CLOSED',
  /** The agent violated the protocol, or rejected our frames as malformed. */
  PROTOCOL: 'ERR_AGENT_PROTOCOL',
  /** A system call failed in the guest; `details.errnoName` (e.g. `ENOENT`) and `details.errno`. */
  REMOTE: 'ERR_AGENT_REMOTE',
  /** get_file on a directory, FIFO, device or socket. */
  NOT_REGULAR_FILE: 'ERR_AGENT_NOT_REGULAR_FILE',
  /** watch on something that is not a directory. */
  NOT_DIRECTORY: 'ERR_AGENT_NOT_DIRECTORY',
  /** watch: too many watches at once, or a tree with more directories than one watch takes. */
  WATCH_LIMIT: 'ERR_AGENT_WATCH_LIMIT',
  /** The request was cancelled (by `cancel()` or an abandoned upload). */
  CANCELLED: 'ERR_AGENT_CANCELLED',
  /** put_file: the source produced a different number of bytes than declared. */
  SIZE_MISMATCH: 'ERR_AGENT_SIZE_MISMATCH',
} as const;
export type AgentErrorCodeValue = (typeof AgentErrorCode)[keyof typeof AgentErrorCode];

export class AgentError extends ActorvmError {}

export class AgentTimeoutError extends AgentError {
  constructor(what: string, timeoutMs: number) {
    super(AgentErrorCode.TIMEOUT, `${what} timed out after ${timeoutMs} ms`, { timeoutMs });
  }
}

export class AgentClosedError extends AgentError {
  constructor(reason = 'agent connection closed', cause?: unknown) {
    super(AgentErrorCode.CLOSED, reason, undefined, cause === undefined ? undefined : { cause });
  }
}

export class AgentProtocolError extends AgentError {
  constructor(message: string, details?: Record<string, unknown>) {
    super(AgentErrorCode.PROTOCOL, message, details);
  }
}

export class AgentRemoteError extends AgentError {
  /** Errno name reported by the guest, e.g. `ENOENT`. */
  readonly errnoName: string;
  readonly errno: number | undefined;
  constructor(info: RemoteErrorInfo, op: string) {
    super(AgentErrorCode.REMOTE, `${op}: ${info.message || info.code}`, {
      op,
      errnoName: info.code,
      errno: info.errno,
    });
    this.errnoName = info.code;
    this.errno = info.errno;
  }
}

export class AgentNotRegularFileError extends AgentError {
  constructor(info: RemoteErrorInfo, op: string) {
    super(AgentErrorCode.NOT_REGULAR_FILE, `${op}: ${info.message}`, { op, errno: info.errno });
  }
}

export class AgentNotDirectoryError extends AgentError {
  constructor(info: RemoteErrorInfo, op: string) {
    super(AgentErrorCode.NOT_DIRECTORY, `${op}: ${info.message}`, { op, errno: info.errno });
  }
}

export class AgentWatchLimitError extends AgentError {
  constructor(info: RemoteErrorInfo, op: string) {
    super(AgentErrorCode.WATCH_LIMIT, `${op}: ${info.message}`, { op });
  }
}

export class AgentCancelledError extends AgentError {
  constructor(op: string) {
    super(AgentErrorCode.CANCELLED, `${op} was cancelled`, { op });
  }
}

export class AgentSizeMismatchError extends AgentError {
  constructor(op: string, declared: number, actual: number) {
    super(AgentErrorCode.SIZE_MISMATCH, `${op}: source gave ${actual} bytes, declared ${declared}`, {
      op,
      declared,
      actual,
    });
  }
}

/** Protocol codes the agent uses in ERROR frames besides errno names. */
const PROTOCOL_CODES = new Set([
  'BAD_REQUEST',
  'BAD_STREAM',
  'UNKNOWN_TYPE',
  'FLOW_CONTROL',
  'CHUNK_TOO_LARGE',
  'FRAME_TOO_LARGE',
  'TRUNCATED_FRAME',
  'STREAM_IN_USE',
]);

/** Maps an agent ERROR payload to the typed error for operation `op`. */
export function errorFromRemote(info: RemoteErrorInfo, op: string): AgentError {
  if (info.code === 'NOT_REGULAR_FILE') return new AgentNotRegularFileError(info, op);
  if (info.code === 'NOT_DIRECTORY') return new AgentNotDirectoryError(info, op);
  if (info.code === 'WATCH_LIMIT') return new AgentWatchLimitError(info, op);
  if (info.code === 'CANCELLED') return new AgentCancelledError(op);
  if (info.code === 'SIZE_MISMATCH') {
    return new AgentError(AgentErrorCode.SIZE_MISMATCH, `${op}: ${info.message}`, { op });
  }
  if (PROTOCOL_CODES.has(info.code)) {
    return new AgentProtocolError(`${op}: agent rejected the request: ${info.message}`, {
      op,
      remoteCode: info.code,
    });
  }
  return new AgentRemoteError(info, op);
}
