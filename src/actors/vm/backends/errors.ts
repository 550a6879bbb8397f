/**
 * Errors of the VM backends. Stable codes; `details.consoleTail` carries the
 * last console output where the machine's own words explain the failure.
 */
import { ActorvmError } from '../../../errors.js';

export const VmErrorCode = {
  /** The machine spec is malformed. */
  SPEC: 'ERR_VM_SPEC',
  /** The backend cannot run on this host (missing QEMU, kernel, unshare, user namespaces, …). */
  BACKEND_UNAVAILABLE: 'ERR_BACKEND_UNAVAILABLE',
  /** The machine process could not be started or failed before it was running. */
  BOOT_FAILED: 'ERR_VM_BOOT_FAILED',
  /** The machine exited (while we waited for its agent, or before a call could complete). */
  EXITED: 'ERR_VM_EXITED',
  /** No agent HELLO within the absolute backstop, with the machine still alive. */
  BOOT_TIMEOUT: 'ERR_VM_BOOT_TIMEOUT',
  /** QMP returned an error or the monitor connection failed. */
  QMP: 'ERR_QMP',
  /** The call needs a running guest and this one is paused (resume it first). */
  PAUSED: 'ERR_VM_PAUSED',
  /** A namespace sandbox kept starting processes while being paused; it was resumed. */
  PAUSE_FAILED: 'ERR_VM_PAUSE_FAILED',
  /** A restored guest refused its new identity on both handoff paths. */
  HANDOFF: 'ERR_VM_HANDOFF',
  /** A memory snapshot could not be written or loaded (the migration failed or hung, the RAM copy failed). */
  SNAPSHOT_FAILED: 'ERR_SNAPSHOT_FAILED',
  /** A namespace sandbox's writable layer could not be copied (writable-layer.ts). */
  LAYER_CAPTURE: 'ERR_VM_LAYER_CAPTURE',
} as const;

export class VmError extends ActorvmError {}

export class VmSpecError extends VmError {
  constructor(message: string) {
    super(VmErrorCode.SPEC, message);
  }
}

export class BackendUnavailableError extends VmError {
  constructor(backend: string, reason: string) {
    super(VmErrorCode.BACKEND_UNAVAILABLE, `${backend} backend unavailable: ${reason}`, { backend, reason });
  }
}

/** Formats a console tail for an error message: the last lines, indented. */
export function tailForMessage(tail: string, maxLines = 25): string {
  const lines = tail.replace(/\r/g, '').trimEnd().split('\n').slice(-maxLines);
  return lines.length && lines[0] !== ''
    ? `\n--- console (last ${lines.length} lines) ---\n${lines.join('\n')}`
    : '';
}

export class VmExitedError extends VmError {
  constructor(
    id: string,
    exit: { code: number | null; signal: string | null },
    consoleTail: string,
    what: string,
  ) {
    super(
      VmErrorCode.EXITED,
      `machine ${id} exited (${exit.signal ?? `code ${exit.code}`}) ${what}${tailForMessage(consoleTail)}`,
      { id, code: exit.code, signal: exit.signal, consoleTail },
    );
  }
}
