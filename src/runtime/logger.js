/**
 * pino, configured once per thread. Every thread writes its own JSON lines to
 * the same destination (a file opened O_APPEND, or stderr) through sonic-boom:
 * no transport threads at all, so well under "one per process".
 *
 * Convention: every state transition is one line with an `event` field
 * (`actor.started`, `vm.ready`, `flow.closed`, …) plus the fields that identify
 * what changed; the message text is for humans only.
 */
import { pino } from 'pino';
export function createLogger(opts, bindings) {
  const level = opts.level ?? process.env.ACTORVM_LOG_LEVEL ?? 'info';
  const dest = pino.destination({ dest: opts.file ?? 2, sync: false, mkdir: true, append: true });
  return pino(
    { level, base: { pid: process.pid, ...bindings }, timestamp: pino.stdTimeFunctions.isoTime },
    dest,
  );
}
/** Writes what is buffered, synchronously (before a thread exits). */
export function flushLogger(log) {
  try {
    log.flush();
  } catch {
    // The destination may not be ready yet (nothing written); nothing to lose.
  }
}
