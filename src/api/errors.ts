/**
 * Errors of the public Runtime/Sandbox API. Codes are stable. An operation
 * that failed below the API keeps its cause's code (ERR_AGENT_REMOTE,
 * ERR_VM_EXITED, ERR_NET_FORWARD, …); these are the API's own.
 */
import { VmErrorCode } from '../actors/vm/backends/errors.js';
import { ActorvmError } from '../errors.js';

export const SandboxErrorCode = {
  /** The sandbox could not boot (the cause's code is in `details.cause`). */
  BOOT_FAILED: 'ERR_SANDBOX_BOOT_FAILED',
  /** The sandbox (or the runtime) was stopped: the call cannot run any more. */
  STOPPED: 'ERR_SANDBOX_STOPPED',
  /** An options object failed its schema; `details.issues` lists `{ path, message }`. */
  BAD_OPTIONS: 'ERR_SANDBOX_BAD_OPTIONS',
  /** A command is empty, not strings, or too large for a guest's argv. */
  BAD_COMMAND: 'ERR_SANDBOX_BAD_COMMAND',
  /** A signal name or number the guest does not know. */
  BAD_SIGNAL: 'ERR_SANDBOX_BAD_SIGNAL',
  /** A port outside 1..65535 (0 also allowed for a host port: any free one). */
  BAD_PORT: 'ERR_SANDBOX_BAD_PORT',
  /** A guest path that is empty, too long, or contains NUL. */
  BAD_PATH: 'ERR_SANDBOX_BAD_PATH',
  /** No sandbox with that id. */
  NOT_FOUND: 'ERR_NO_SUCH_SANDBOX',
  /** Runtime.start's options failed their schema. */
  BAD_RUNTIME_OPTIONS: 'ERR_RUNTIME_BAD_OPTIONS',
  /** The call needs a running sandbox and this one is paused (`resume()` first); the VM's code. */
  PAUSED: VmErrorCode.PAUSED,

  // Snapshots and forks.
  /** No snapshot with that id under this home. */
  SNAPSHOT_NOT_FOUND: 'ERR_SNAPSHOT_NOT_FOUND',
  /** A running sandbox's filesystem is that snapshot's layer: kill it first. */
  SNAPSHOT_IN_USE: 'ERR_SNAPSHOT_IN_USE',
  /** The snapshot's image was rebuilt or removed since: its machine cannot be restored on it. */
  SNAPSHOT_IMAGE_CHANGED: 'ERR_SNAPSHOT_IMAGE_CHANGED',
  /** Create options that a snapshot fixes (image, backend, memory, cpus) differ from the snapshot's. */
  SNAPSHOT_MISMATCH: 'ERR_SNAPSHOT_MISMATCH',
  /** Writing, reading or removing a snapshot's files failed (disk full, no /dev/shm, a tampered file). */
  SNAPSHOT_FAILED: VmErrorCode.SNAPSHOT_FAILED,
  /** One child of a fork could not be made (the cause's code is in `details.cause`); its siblings are unaffected. */
  FORK_CHILD_FAILED: 'ERR_FORK_CHILD_FAILED',
} as const;

export class SandboxError extends ActorvmError {}

/** Rebuilds a typed error from the `{code, message, details}` that crossed a thread. */
export function errorFrom(e: { code?: string; message?: string; details?: unknown }): SandboxError {
  return new SandboxError(
    e.code ?? 'ERR_INTERNAL',
    e.message ?? 'unknown error',
    (e.details ?? undefined) as Record<string, unknown> | undefined,
  );
}
