/** Errors of the public sandbox API. Codes are stable. */
import { ActorvmError } from '../errors.js';

/**
 * A sandbox operation failed. `code` is the cause's stable code when one
 * crossed a thread (ERR_AGENT_REMOTE, ERR_VM_EXITED, …), else one of:
 * ERR_SANDBOX_BOOT_FAILED, ERR_SANDBOX_STOPPED, ERR_SANDBOX_BAD_OPTIONS,
 * ERR_SANDBOX_TIMEOUT.
 */
export class SandboxError extends ActorvmError {}

/** Rebuilds a typed error from the `{code, message, details}` that crossed a thread. */
export function errorFrom(e: { code?: string; message?: string; details?: unknown }): SandboxError {
  return new SandboxError(
    e.code ?? 'ERR_INTERNAL',
    e.message ?? 'unknown error',
    (e.details ?? undefined) as Record<string, unknown> | undefined,
  );
}
