/**
 * The control protocol `actorctl` speaks to a running system over its Unix
 * socket: one JSON object per line, both ways. Control plane only — nothing
 * here is ever on a per-frame or per-message path, which is why JSON is fine.
 *
 *   → {"id": 1, "method": "ps", "params": {}}
 *   ← {"id": 1, "event": {...}}                         (0..n, streaming methods only)
 *   ← {"id": 1, "ok": true, "result": ...}
 *   ← {"id": 1, "ok": false, "error": {"code": "ERR_…", "message": "…"}}
 *
 * A malformed line gets an error reply with `id: null` and the connection
 * stays open; a line over MAX_CONTROL_LINE bytes closes the connection.
 */
import { z } from 'zod';

export const MAX_CONTROL_LINE = 1 << 20;

export const ControlRequest = z.object({
  id: z.union([z.number().int(), z.string().max(64)]),
  method: z.string().min(1).max(64),
  params: z.record(z.string(), z.unknown()).default({}),
});
export type ControlRequest = z.infer<typeof ControlRequest>;

export interface ControlErrorBody {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

export type ControlResponse =
  | { id: number | string | null; ok: true; result: unknown }
  | { id: number | string | null; ok: false; error: ControlErrorBody }
  | { id: number | string; event: unknown };
