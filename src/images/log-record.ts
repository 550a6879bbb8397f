/**
 * Log lines made on an image worker, carried back to the thread that asked
 * for the work and written there. A worker has no logger of the caller's
 * (its file, level and bindings belong to the caller's thread), and a task's
 * result is the one channel piscina gives back, so the structured events
 * travel with it and keep their `event` fields.
 */
import type { Logger } from '../runtime/logger.js';

export interface LogRecord {
  level: 'debug' | 'info' | 'warn' | 'error';
  obj: Record<string, unknown>;
  msg: string;
}

/** A logger that appends to `out` (only the methods image code calls). */
export function recordingLogger(out: LogRecord[]): Logger {
  const at =
    (level: LogRecord['level']) =>
    (obj: Record<string, unknown>, msg = ''): void => {
      out.push({ level, obj: JSON.parse(JSON.stringify(obj)), msg });
    };
  const log = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } as Record<
    string,
    unknown
  >;
  log.child = () => log;
  return log as unknown as Logger;
}

/** Writes `records` to `log` (nothing without one). */
export function replayLog(log: Logger | undefined, records: LogRecord[]): void {
  if (!log) return;
  for (const r of records) log[r.level](r.obj, r.msg);
}
