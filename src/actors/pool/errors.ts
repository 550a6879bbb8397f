/**
 * Errors of the warm pools. Stable codes; the Runtime API and the daemon pass
 * them through unchanged.
 */
import { ActorvmError } from '../../errors.js';

export const PoolErrorCode = {
  /** No machine of the pool came free within the claim timeout (the pool was at its `max`). */
  EXHAUSTED: 'ERR_POOL_EXHAUSTED',
  /** The pool is draining or drained: it hands nothing out any more. */
  DRAINING: 'ERR_POOL_DRAINING',
  /** A pool configuration or a `--warm` spec failed its schema; `details.issues` says where. */
  BAD_CONFIG: 'ERR_POOL_BAD_CONFIG',
  /** The machine budget across all pools is spent (the boot waits for a machine to go). */
  CAPACITY: 'ERR_POOL_CAPACITY',
  /** A pool for this key exists already. */
  EXISTS: 'ERR_POOL_EXISTS',
  /** As many pools run as the runtime allows (MAX_POOLS). */
  TOO_MANY: 'ERR_POOL_TOO_MANY',
} as const;

export class PoolError extends ActorvmError {}
