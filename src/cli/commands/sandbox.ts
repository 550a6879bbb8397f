/**
 * Sandbox commands: `actorctl run` (one-shot, in-process), `actorctl serve`
 * (a runtime daemon with the control socket), and `actorctl vm …` (against a
 * running daemon).
 */
import type { Command } from 'commander';
import type { ProcessResult } from '../../api/process.js';
import { type BackendChoice, Runtime, type SandboxOptions } from '../../api/runtime.js';
import { ActorvmError } from '../../errors.js';
import { type GlobalOptions, withClient } from '../context.js';
import { printJson, printTable } from '../output.js';

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

interface RunOptions extends GlobalOptions {
  image?: string;
  backend?: BackendChoice;
  allowHostLoopback?: boolean;
  allowOut?: string[];
  denyOut?: string[];
  expose?: string[];
  timeout?: string;
  memory?: string;
  /** commander's --no-dns sets this false. */
  dns?: boolean;
}

/** Exit status a shell would report for a command result. */
export function exitStatus(r: ProcessResult): number {
  if (r.exitCode !== null) return r.exitCode;
  const n = (
    {
      SIGHUP: 1,
      SIGINT: 2,
      SIGQUIT: 3,
      SIGKILL: 9,
      SIGSEGV: 11,
      SIGPIPE: 13,
      SIGALRM: 14,
      SIGTERM: 15,
    } as Record<string, number>
  )[r.signal ?? ''];
  return 128 + (n ?? 0);
}

function parseExpose(spec: string): { guestPort: number; hostPort?: number } {
  const [g, h] = spec.split(':').map(Number);
  if (
    !Number.isInteger(g) ||
    g < 1 ||
    g > 65535 ||
    (h !== undefined && (!Number.isInteger(h) || h < 0 || h > 65535))
  ) {
    throw new ActorvmError('ERR_CLI_BAD_OPTION', `--expose takes GUEST_PORT[:HOST_PORT], got '${spec}'`);
  }
  return { guestPort: g, hostPort: h };
}

export function sandboxOptions(opts: RunOptions): SandboxOptions {
  return {
    image: opts.image,
    backend: opts.backend,
    memoryMiB: opts.memory ? Number(opts.memory) : undefined,
    network: {
      allowHostLoopback: opts.allowHostLoopback,
      allowOut: opts.allowOut,
      denyOut: opts.denyOut,
      dns: opts.dns,
    },
  };
}

export function registerSandboxCommands(program: Command): void {
  program
    .command('run')
    .description(
      'create a sandbox, run one command in it (output as it comes), tear it down; exits with its code',
    )
    .option('--image <name>', 'image (default: base)')
    .option('--backend <kind>', 'qemu | namespace | auto', 'auto')
    .option('--memory <MiB>', 'guest memory')
    .option('--allow-host-loopback', "let the sandbox reach the host's loopback through its gateway address")
    .option('--allow-out <cidr[:ports]>', 'only these destinations are reachable (repeatable)', collect)
    .option('--deny-out <cidr[:ports]>', 'never reachable (repeatable)', collect)
    .option('--no-dns', 'no DNS proxy at 10.0.2.3 (queries are refused)')
    .option(
      '--expose <guest[:host]>',
      'forward a host port (127.0.0.1) to a guest port (repeatable)',
      collect,
    )
    .option('--timeout <ms>', 'kill the command after this long')
    .argument('<cmd...>', 'command (after --); one argument runs through /bin/sh -c')
    .action(async (cmd: string[], _o, c: Command) => {
      const opts = c.optsWithGlobals<RunOptions>();
      const rt = await Runtime.start({ log: { level: 'warn' } });
      try {
        const t0 = performance.now();
        const exposes = (opts.expose ?? []).map(parseExpose);
        const sbx = await rt.createSandbox(sandboxOptions(opts));
        const booted = performance.now() - t0;
        const exposed = [];
        for (const e of exposes) {
          const x = await sbx.expose(e.guestPort, { hostPort: e.hostPort });
          exposed.push({ guestPort: e.guestPort, host: x.host, port: x.port });
          if (!opts.json)
            process.stderr.write(`actorctl: guest port ${e.guestPort} is at ${x.host}:${x.port}\n`);
        }
        const p = sbx.spawn(cmd.length === 1 ? cmd[0] : cmd, {
          timeoutMs: opts.timeout ? Number(opts.timeout) : undefined,
        });
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        p.stdout.on('data', (d: Buffer) => (opts.json ? out.push(d) : process.stdout.write(d)));
        p.stderr.on('data', (d: Buffer) => (opts.json ? err.push(d) : process.stderr.write(d)));
        const result = await p.result;
        if (opts.json) {
          printJson({
            sandbox: sbx.id,
            backend: sbx.backend,
            bootMs: Math.round(booted),
            exposed,
            ...result,
            stdout: Buffer.concat(out).toString('utf8'),
            stderr: Buffer.concat(err).toString('utf8'),
          });
        }
        process.exitCode = exitStatus(result);
      } finally {
        await rt.stop();
      }
    });

  program
    .command('serve')
    .description('run a runtime with its control socket until interrupted (for actorctl vm/ps/flows)')
    .option('--backend <kind>', 'default backend: qemu | namespace | auto', 'auto')
    .action(async (_o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions & { backend?: BackendChoice }>();
      const rt = await Runtime.start({ control: opts.socket ?? true, backend: opts.backend });
      const path = rt.control?.path;
      if (opts.json) printJson({ socket: path, pid: process.pid });
      else process.stdout.write(`actorvm runtime serving on ${path} (pid ${process.pid}); Ctrl-C to stop\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await rt.stop();
    });

  const vm = program.command('vm').description('sandboxes of a running runtime (see actorctl serve)');

  vm.command('ls')
    .description('list sandboxes')
    .action(async (_o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions>();
      const list = await withClient(opts, (cl) => cl.call<Record<string, unknown>[]>('vm.ls'));
      if (opts.json) printJson(list);
      else
        printTable(
          ['ID', 'BACKEND', 'ACCEL', 'STATE', 'PID', 'BOOT ms'],
          list.map((s) => [s.id, s.backend, s.accel ?? '', s.state, s.pid, s.bootMs]),
        );
    });

  vm.command('create')
    .description('create a sandbox')
    .option('--image <name>', 'image (default: base)')
    .option('--backend <kind>', 'qemu | namespace | auto')
    .option('--allow-host-loopback', "reach the host's loopback through the gateway address")
    .action(async (_o, c: Command) => {
      const opts = c.optsWithGlobals<RunOptions>();
      const r = await withClient(opts, (cl) =>
        cl.call<{ id: number }>('vm.create', {
          image: opts.image,
          backend: opts.backend,
          allowHostLoopback: opts.allowHostLoopback,
        }),
      );
      if (opts.json) printJson(r);
      else process.stdout.write(`${r.id}\n`);
    });

  vm.command('exec')
    .description('run a command in a sandbox, streaming its output; exits with its code')
    .argument('<id>', 'sandbox id')
    .argument('<cmd...>', 'command (after --)')
    .option('--timeout <ms>', 'kill the command after this long')
    .action(async (id: string, cmd: string[], _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions & { timeout?: string }>();
      const out = { stdout: '', stderr: '' };
      const result = await withClient(opts, (cl) =>
        cl.call<ProcessResult>(
          'vm.exec',
          {
            id: Number(id),
            cmd: cmd.length === 1 ? cmd[0] : cmd,
            timeoutMs: opts.timeout ? Number(opts.timeout) : undefined,
          },
          (e) => {
            const ev = e as { stream: 'stdout' | 'stderr'; data: string };
            if (opts.json) out[ev.stream] += ev.data;
            else (ev.stream === 'stdout' ? process.stdout : process.stderr).write(ev.data);
          },
        ),
      );
      if (opts.json) printJson({ ...result, ...out });
      process.exitCode = exitStatus(result);
    });

  vm.command('logs')
    .description("print a sandbox's console")
    .argument('<id>', 'sandbox id')
    .action(async (id: string, _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions>();
      const text = await withClient(opts, (cl) => cl.call<string>('vm.logs', { id: Number(id) }));
      if (opts.json) printJson({ id: Number(id), console: text });
      else process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    });

  vm.command('kill')
    .description('stop a sandbox and free everything it held')
    .argument('<id>', 'sandbox id')
    .action(async (id: string, _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions>();
      const r = await withClient(opts, (cl) => cl.call('vm.kill', { id: Number(id) }));
      if (opts.json) printJson(r);
    });
}
