/**
 * The control methods of the actor system itself: `ps`, `inspect`, `rings`,
 * `stats`. Later layers (network, sandboxes) register theirs on the same server.
 */
import { z } from 'zod';
import { ActorvmError } from '../errors.js';
import type { ActorSystem } from './actor-system.js';
import type { ControlServer } from './control-server.js';

export function registerSystemMethods(server: ControlServer, system: ActorSystem): void {
  server.register('ps', {
    params: z.object({}),
    handle: () => system.list(),
  });
  server.register('inspect', {
    params: z.object({ id: z.union([z.number().int(), z.string().min(1)]) }),
    handle: async ({ id }) => {
      const snapshot = await system.inspect(id);
      if (snapshot === undefined) throw new ActorvmError('ERR_NO_SUCH_ACTOR', `no actor '${id}'`, { id });
      return snapshot;
    },
  });
  server.register('rings', {
    params: z.object({}),
    handle: () => system.ringStats(),
  });
  server.register('stats', {
    params: z.object({}),
    handle: async () => ({
      workers: system.workers,
      deadLetters: system.deadLetters,
      escalations: system.escalated,
      hosts: await system.hostStats(),
    }),
  });
  server.register('methods', {
    params: z.object({}),
    handle: () => server.methodNames,
  });
}
