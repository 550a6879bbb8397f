/**
 * Every error actorvm throws on purpose is an `ActorvmError` with a stable `code`.
 *
 * Codes are part of the public API: callers switch on `err.code`, never on the
 * message text. Subclasses exist per area (ring, actor, agent, net, sandbox) so
 * `instanceof` narrows too, but the code alone must be enough.
 */
export class ActorvmError extends Error {
  /** Stable machine-readable code, e.g. `ERR_RING_RECORD_TOO_LARGE`. */
  code;
  /** Optional structured detail for logs and `--json` output. */
  details;
  constructor(code, message, details, options) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
  /** A plain object that survives JSON and structured clone (control socket, comlink). */
  toJSON() {
    return { name: this.name, code: this.code, message: this.message, details: this.details };
  }
}
/** True when `err` carries the given stable code (works across threads, where classes are lost). */
export function hasCode(err, code) {
  return typeof err === 'object' && err !== null && err.code === code;
}
