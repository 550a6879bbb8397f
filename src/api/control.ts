/**
 * The runtime's sandbox methods on the control socket (`actorctl vm …`):
 * list, create, exec (streaming its output), logs, kill.
 */
import type { Readable } from 'node:stream';
import { z } from 'zod';
import type { ControlServer } from '../runtime/control-server.js';
import { SandboxError } from './errors.js';
import type { Runtime } from './runtime.js';
import { Backend, Command, LogBytes, SandboxOptionsSchema, TimeoutMs } from './schemas.js';

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
    params: z
      .object({
        image: z.string().min(1).max(256),
        backend: Backend,
        memoryMiB: SandboxOptionsSchema.shape.memoryMiB,
        cpus: SandboxOptionsSchema.shape.cpus,
        allowHostLoopback: z.boolean(),
      })
      .partial()
      .strict(),
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
      cmd: Command,
      timeoutMs: TimeoutMs.optional(),
    }),
    handle: async ({ id, cmd, timeoutMs }, call) => {
      const p = get(id).spawn(cmd, { timeoutMs });
      // A client that does not read pauses the command's output (and so the guest), not our memory.
      const pump = (stream: Readable, name: string): void => {
        stream.on('data', (d: Buffer) => {
          if (call.send({ stream: name, data: d.toString('utf8') })) return;
          stream.pause();
          void call.drained().then(() => stream.resume());
        });
      };
      pump(p.stdout, 'stdout');
      pump(p.stderr, 'stderr');
      call.signal.addEventListener('abort', () => p.cancel());
      return p.result;
    },
  });

  server.register('vm.logs', {
    params: SandboxId.extend({ bytes: LogBytes.optional() }),
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
