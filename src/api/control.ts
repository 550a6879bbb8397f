/**
 * The runtime's sandbox methods on the control socket (`actorctl vm …`):
 * list, create, exec (streaming its output), logs, kill.
 */
import { z } from 'zod';
import type { ControlServer } from '../runtime/control-server.js';
import { SandboxError } from './errors.js';
import type { Runtime } from './runtime.js';

const SandboxId = z.object({ id: z.number().int().positive() });

export function registerSandboxMethods(server: ControlServer, rt: Runtime): void {
  const get = (id: number) => {
    const s = rt.sandbox(id);
    if (!s) throw new SandboxError('ERR_NO_SUCH_SANDBOX', `no sandbox ${id}`, { id });
    return s;
  };

  server.register('vm.ls', {
    params: z.object({}),
    handle: () =>
      rt.sandboxes().map((s) => ({
        id: s.id,
        backend: s.backend,
        state: s.state,
        accel: s.boot.accel,
        pid: s.boot.pid,
        bootMs: s.boot.bootMs,
      })),
  });

  server.register('vm.create', {
    params: z.object({
      image: z.string().optional(),
      backend: z.enum(['qemu', 'namespace', 'auto']).optional(),
      memoryMiB: z.number().int().min(64).optional(),
      cpus: z.number().int().min(1).optional(),
      allowHostLoopback: z.boolean().optional(),
    }),
    handle: async (p) => {
      const s = await rt.createSandbox({
        image: p.image,
        backend: p.backend,
        memoryMiB: p.memoryMiB,
        cpus: p.cpus,
        network: { allowHostLoopback: p.allowHostLoopback },
      });
      return { id: s.id, backend: s.backend, boot: s.boot };
    },
  });

  server.register('vm.exec', {
    params: SandboxId.extend({
      cmd: z.union([z.string().min(1), z.array(z.string()).min(1)]),
      timeoutMs: z.number().int().positive().optional(),
    }),
    handle: async ({ id, cmd, timeoutMs }, call) => {
      const p = get(id).spawn(cmd, { timeoutMs });
      p.stdout.on('data', (d: Buffer) => call.send({ stream: 'stdout', data: d.toString('utf8') }));
      p.stderr.on('data', (d: Buffer) => call.send({ stream: 'stderr', data: d.toString('utf8') }));
      call.signal.addEventListener('abort', () => p.cancel());
      return p.result;
    },
  });

  server.register('vm.logs', {
    params: SandboxId.extend({ bytes: z.number().int().positive().optional() }),
    handle: ({ id, bytes }) => get(id).logs(bytes),
  });

  server.register('vm.kill', {
    params: SandboxId,
    handle: async ({ id }) => {
      await get(id).kill();
      return { killed: id };
    },
  });
}
