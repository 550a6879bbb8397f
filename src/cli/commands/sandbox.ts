/**
 * Sandbox commands: `actorctl run` (one-shot, in-process), `actorctl serve`
 * (the daemon: a runtime and its HTTP API), and `actorctl vm …` (against a
 * running daemon, over its HTTP API): ls, create (also from a snapshot),
 * exec, shell, attach, ps, logs, kill, timeout, pause, resume, snapshot,
 * fork (snapshots themselves: `actorctl snapshot …`, snapshot.ts).
 *
 * Interactive commands (`run -i/-t`, `vm exec -i/-t`, `vm shell`) share one
 * terminal session (attachTerminal): our stdin forwarded to the command
 * (EOF closes its stdin, or sends ^D to a terminal), its output to ours with
 * backpressure, and with a PTY our terminal in raw mode, its size sent at
 * start (--cols/--rows, else ours) and again on every SIGWINCH, and the
 * terminal restored however the session ends. Without raw mode, ^C sends the
 * command SIGTERM (a second one SIGKILL) and actorctl exits with its status.
 */
import type { Readable, Writable } from 'node:stream';
import type { Command } from 'commander';
import { DEFAULT_POOL_MAX } from '../../actors/pool/pool-key.js';
import type { ProcessResult } from '../../api/process.js';
import type { RemoteForkResult, RemoteSandbox, SandboxSummary } from '../../api/remote/index.js';
import { type BackendChoice, Runtime, type SandboxOptions } from '../../api/runtime.js';
import { ActorvmError } from '../../errors.js';
import { type GlobalOptions, withClient } from '../context.js';
import { badOption, collect, intFlag, pairs, terminalFlags } from '../flags.js';
import { formatDuration, printJson, printTable } from '../output.js';
import { type ServeOptions, serve } from './serve.js';

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

export interface TerminalFlags {
  interactive?: boolean;
  tty?: boolean;
  cols?: string;
  rows?: string;
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

/** A sandbox argument: its number or its key. */
const sandboxRef = (id: string): number | string => (/^\d+$/.test(id) ? Number(id) : id);

/** One argument runs through /bin/sh -c; more are an argv. */
export const commandOf = (cmd: string[]): string | string[] => (cmd.length === 1 ? cmd[0] : cmd);

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

// ---- the terminal session ----

/** What a terminal session drives: an in-process SandboxProcess or a RemoteProcess. */
export interface Attachable {
  stdout: Readable;
  stderr: Readable;
  stdin: Writable | null;
  result: Promise<ProcessResult>;
  resize(size: { cols: number; rows: number }): Promise<void>;
  signal(signal: string): Promise<void>;
  cancel(): void;
}

/** The size a PTY starts with: the flags, else our terminal's, else 80x24. */
export function terminalSize(f: TerminalFlags): { cols: number; rows: number } {
  const out = process.stdout;
  const [tc, tr] = out.isTTY ? out.getWindowSize() : [0, 0];
  return {
    cols: intFlag('cols', f.cols, 1, 1000) ?? (tc > 0 ? Math.min(tc, 1000) : 80),
    rows: intFlag('rows', f.rows, 1, 1000) ?? (tr > 0 ? Math.min(tr, 1000) : 24),
  };
}

/**
 * Connects a command to this process's terminal until it ends: output to
 * stdout/stderr (or collected, for --json), stdin forwarded when `input`,
 * raw mode and SIGWINCH-driven resizes when `pty`. Resolves with the result
 * once all output was written.
 */
export async function attachTerminal(
  proc: Attachable,
  opts: { pty: boolean; input: boolean; collect?: boolean },
): Promise<{ result: ProcessResult; stdout: string; stderr: string }> {
  const stdin = process.stdin;
  const raw = opts.pty && opts.input && stdin.isTTY === true;
  const restore = () => {
    if (raw && stdin.isTTY) stdin.setRawMode(false);
  };
  const collected = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  const drained = (from: Readable, to: NodeJS.WriteStream, parts: Buffer[]) =>
    new Promise<void>((resolve) => {
      if (opts.collect) from.on('data', (d: Buffer) => parts.push(d));
      else from.pipe(to, { end: false });
      from.once('end', resolve);
      from.once('error', () => resolve());
    });
  const onWinch = () => {
    if (!process.stdout.isTTY) return;
    const [cols, rows] = process.stdout.getWindowSize();
    if (cols > 0 && rows > 0)
      void proc.resize({ cols: Math.min(cols, 1000), rows: Math.min(rows, 1000) }).catch(() => {});
  };
  const target = proc.stdin;
  const onData = (d: Buffer) => {
    if (target && !target.write(d)) {
      stdin.pause();
      target.once('drain', () => stdin.resume());
    }
  };
  const onEnd = () => {
    if (!target) return;
    // A terminal's EOF is ^D; a pipe's is closing it.
    if (opts.pty) target.write(Buffer.from([4]));
    else target.end();
  };
  // Without raw mode ^C reaches us, not the command: the first asks it to stop, the second kills it.
  let interrupts = 0;
  const onSigint = () => {
    if (++interrupts === 1) void proc.signal('SIGTERM').catch(() => {});
    else proc.cancel();
  };
  process.once('exit', restore);
  process.on('SIGINT', onSigint);
  try {
    if (raw) stdin.setRawMode(true);
    if (opts.pty) process.on('SIGWINCH', onWinch);
    if (opts.input && target) {
      target.on('error', () => {}); // the command stopped reading: its result tells
      stdin.on('data', onData);
      stdin.once('end', onEnd);
      stdin.resume();
    }
    const [result] = await Promise.all([
      proc.result,
      drained(proc.stdout, process.stdout, collected.stdout),
      drained(proc.stderr, process.stderr, collected.stderr),
    ]);
    return {
      result,
      stdout: Buffer.concat(collected.stdout).toString('utf8'),
      stderr: Buffer.concat(collected.stderr).toString('utf8'),
    };
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGWINCH', onWinch);
    stdin.off('data', onData);
    stdin.off('end', onEnd);
    if (opts.input) stdin.pause();
    restore();
    process.off('exit', restore);
  }
}

// ---- vm ls ----

function remainingMs(s: SandboxSummary, now = Date.now()): number | null {
  return s.endAt ? Math.max(0, Date.parse(s.endAt) - now) : null;
}

function printSandboxes(list: SandboxSummary[]): void {
  printTable(
    ['ID', 'KEY', 'IMAGE', 'BACKEND', 'STATE', 'PID', 'BOOT ms', 'METADATA', 'REMAINING'],
    list.map((s) => {
      const left = remainingMs(s);
      return [
        s.id,
        s.sandboxId,
        s.image,
        s.backend,
        s.state,
        s.pid,
        s.bootMs,
        Object.entries(s.metadata)
          .map(([k, v]) => `${k}=${v}`)
          .join(' '),
        left === null ? '-' : formatDuration(left),
      ];
    }),
  );
}

export function registerSandboxCommands(program: Command): void {
  terminalFlags(
    program
      .command('run')
      .description(
        'create a sandbox, run one command in it (output as it comes), tear it down; exits with its code',
      )
      .option('--image <name>', 'image (default: base)')
      .option('--backend <kind>', 'qemu | namespace | auto', 'auto')
      .option('--memory <MiB>', 'guest memory')
      .option(
        '--allow-host-loopback',
        "let the sandbox reach the host's loopback through its gateway address",
      )
      .option('--allow-out <cidr[:ports]>', 'only these destinations are reachable (repeatable)', collect)
      .option('--deny-out <cidr[:ports]>', 'never reachable (repeatable)', collect)
      .option('--no-dns', 'no DNS proxy at 10.0.2.3 (queries are refused)')
      .option(
        '--expose <guest[:host]>',
        'forward a host port (127.0.0.1) to a guest port (repeatable)',
        collect,
      )
      .option('--timeout <ms>', 'kill the command after this long'),
  )
    .argument('<cmd...>', 'command (after --); one argument runs through /bin/sh -c')
    .action(async (cmd: string[], _o, c: Command) => {
      const opts = c.optsWithGlobals<RunOptions & TerminalFlags>();
      const timeoutMs = intFlag('timeout', opts.timeout, 1, 86_400_000);
      const pty = opts.tty ? terminalSize(opts) : undefined;
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
        const p = sbx.spawn(commandOf(cmd), {
          timeoutMs,
          stdin: opts.interactive ? 'pipe' : 'closed',
          ...(pty ? { pty } : {}),
        });
        const { result, stdout, stderr } = await attachTerminal(p, {
          pty: pty !== undefined,
          input: Boolean(opts.interactive),
          collect: opts.json,
        });
        if (opts.json) {
          printJson({
            sandbox: sbx.id,
            backend: sbx.backend,
            bootMs: Math.round(booted),
            exposed,
            ...result,
            stdout,
            stderr,
          });
        }
        process.exitCode = exitStatus(result);
      } finally {
        await rt.stop();
      }
    });

  program
    .command('serve')
    .description(
      'run the daemon: a runtime and its HTTP API (native, E2B-compatible) on the control socket, optionally on loopback TCP',
    )
    .option('--backend <kind>', 'default backend: qemu | namespace | auto', 'auto')
    .option('--listen <host:port>', 'also serve on TCP (API key required); loopback unless named otherwise')
    .option(
      '--api-key-file <path>',
      'API key for TCP (default: $ACTORVM_API_KEY, else $ACTORVM_HOME/api-key)',
    )
    .option(
      '--warm <spec>',
      'warm pools to keep: IMAGE[@BACKEND][=MIN] items, comma-separated (e.g. base=4,py@qemu=2; MIN default 1)',
    )
    .option('--pool-max <n>', `machines per pool at most (default ${DEFAULT_POOL_MAX}; never below its MIN)`)
    .option('--lazy-pools <min>', 'start a pool of MIN idle machines for the first create no pool serves')
    .option('--pool-memory <MiB>', "guest memory all pools' machines may hold together (default 75% of RAM)")
    .action(async (_o, c: Command) => {
      await serve(c.optsWithGlobals<ServeOptions>());
    });

  const vm = program.command('vm').description('sandboxes of a running daemon (see actorctl serve)');

  vm.command('ls')
    .description(
      'list sandboxes: id, key, image, backend, state, pid, boot time, metadata, remaining lifetime',
    )
    .option('--metadata <key=value>', 'only sandboxes with this label (repeatable)', collect)
    .action(async (_o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions & { metadata?: string[] }>();
      const metadata = pairs('metadata', opts.metadata);
      const list = await withClient(opts, async (rt) =>
        (await rt.sandboxes({ metadata })).map((s) => s.summary),
      );
      if (opts.json) printJson(list.map((s) => ({ ...s, remainingMs: remainingMs(s) })));
      else printSandboxes(list);
    });

  vm.command('create')
    .description('create a sandbox; prints its id (--json: its summary, key and access token)')
    .option('--image <name>', 'image (default: base)')
    .option('--backend <kind>', 'qemu | namespace | auto')
    .option('--memory <MiB>', 'guest memory')
    .option('--cpus <n>', 'guest CPUs')
    .option('--env <key=value>', 'environment of every command (repeatable)', collect)
    .option('--metadata <key=value>', 'label (repeatable); list with vm ls --metadata', collect)
    .option('--timeout-ms <ms>', 'kill the sandbox this long after it is ready (see vm timeout)')
    .option('--on-timeout <action>', "what the deadline does: 'kill' (default) or 'pause'")
    .option(
      '--snapshot <id>',
      'restore this snapshot (actorctl snapshot ls); image, backend, memory and cpus are its own',
    )
    .option('--allow-host-loopback', "reach the host's loopback through the gateway address")
    .action(async (_o, c: Command) => {
      const opts = c.optsWithGlobals<
        RunOptions & {
          cpus?: string;
          env?: string[];
          metadata?: string[];
          timeoutMs?: string;
          onTimeout?: string;
          snapshot?: string;
        }
      >();
      if (opts.onTimeout !== undefined && opts.onTimeout !== 'kill' && opts.onTimeout !== 'pause')
        throw badOption(`--on-timeout takes kill or pause, got '${opts.onTimeout}'`);
      const s = await withClient(opts, async (rt) => {
        const sbx = await rt.createSandbox({
          image: opts.image,
          backend: opts.backend,
          memoryMiB: intFlag('memory', opts.memory, 1, 1 << 30),
          cpus: intFlag('cpus', opts.cpus, 1, 4096),
          env: pairs('env', opts.env),
          metadata: pairs('metadata', opts.metadata),
          timeoutMs: intFlag('timeout-ms', opts.timeoutMs, 1, Number.MAX_SAFE_INTEGER),
          onTimeout: opts.onTimeout as 'kill' | 'pause' | undefined,
          snapshot: opts.snapshot,
          network: opts.allowHostLoopback ? { allowHostLoopback: true } : undefined,
        });
        return sbx.summary;
      });
      if (opts.json) printJson(s);
      else process.stdout.write(`${s.id}\n`);
    });

  terminalFlags(
    vm
      .command('exec')
      .description('run a command in a sandbox, streaming its output; exits with its code')
      .argument('<id>', 'sandbox id or key')
      .argument('<cmd...>', 'command (after --); one argument runs through /bin/sh -c'),
  )
    .option('--timeout <ms>', 'kill the command after this long')
    .option('--env <key=value>', 'environment variable (repeatable)', collect)
    .option('--cwd <dir>', 'working directory (default /home/user)')
    .option('--tag <name>', 'a name to reattach by (vm attach --tag)')
    .action(async (id: string, cmd: string[], _o, c: Command) => {
      const opts = c.optsWithGlobals<
        GlobalOptions & TerminalFlags & { timeout?: string; env?: string[]; cwd?: string; tag?: string }
      >();
      const timeoutMs = intFlag('timeout', opts.timeout, 1, 86_400_000);
      const pty = opts.tty ? terminalSize(opts) : undefined;
      const out = await withClient(opts, async (rt) => {
        const sbx = await rt.sandbox(sandboxRef(id));
        const p = sbx.spawn(commandOf(cmd), {
          timeoutMs,
          env: pairs('env', opts.env),
          cwd: opts.cwd,
          tag: opts.tag,
          stdin: opts.interactive ? 'pipe' : 'closed',
          ...(pty ? { pty } : {}),
        });
        return attachTerminal(p, {
          pty: pty !== undefined,
          input: Boolean(opts.interactive),
          collect: opts.json,
        });
      });
      if (opts.json) printJson({ ...out.result, stdout: out.stdout, stderr: out.stderr });
      process.exitCode = exitStatus(out.result);
    });

  vm.command('shell')
    .description('an interactive shell in a sandbox on a pseudo-terminal (/bin/sh -l unless --cmd)')
    .argument('<id>', 'sandbox id or key')
    .option('--cmd <command>', 'run this instead (through /bin/sh -c)')
    .option('--cols <n>', 'terminal width (default: ours, else 80)')
    .option('--rows <n>', 'terminal height (default: ours, else 24)')
    .action(async (id: string, _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions & TerminalFlags & { cmd?: string }>();
      const pty = terminalSize(opts);
      const out = await withClient(opts, async (rt) => {
        const sbx = await rt.sandbox(sandboxRef(id));
        const p = sbx.spawn(opts.cmd ?? ['/bin/sh', '-l'], { pty });
        return attachTerminal(p, { pty: true, input: true, collect: opts.json });
      });
      if (opts.json) printJson({ ...out.result, output: out.stdout });
      process.exitCode = exitStatus(out.result);
    });

  vm.command('attach')
    .description(
      'follow a process the daemon keeps (started with --tag, or by pid) until it ends; exits with its code',
    )
    .argument('<id>', 'sandbox id or key')
    .option('--pid <pid>', 'the process by pid')
    .option('--tag <name>', 'the process by tag')
    .option('-i, --interactive', 'forward our stdin to it')
    .action(async (id: string, _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions & TerminalFlags & { pid?: string; tag?: string }>();
      const pid = intFlag('pid', opts.pid, 1, 0xffffffff);
      if ((pid === undefined) === (opts.tag === undefined))
        throw badOption('vm attach takes one of --pid or --tag');
      const out = await withClient(opts, async (rt) => {
        const sbx = await rt.sandbox(sandboxRef(id));
        const p = sbx.attach(pid !== undefined ? { pid } : { tag: opts.tag! });
        return attachTerminal(p, { pty: false, input: Boolean(opts.interactive), collect: opts.json });
      });
      if (opts.json) printJson({ ...out.result, stdout: out.stdout, stderr: out.stderr });
      process.exitCode = exitStatus(out.result);
    });

  vm.command('ps')
    .description('processes the daemon keeps for a sandbox: pid, tag, command')
    .argument('<id>', 'sandbox id or key')
    .action(async (id: string, _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions>();
      const list = await withClient(opts, async (rt) => (await rt.sandbox(sandboxRef(id))).processes());
      if (opts.json) printJson(list);
      else
        printTable(
          ['PID', 'TAG', 'COMMAND', 'CWD'],
          list.map((p) => [p.pid, p.tag ?? '', [p.cmd, ...p.args].join(' '), p.cwd ?? '']),
        );
    });

  vm.command('logs')
    .description("print a sandbox's console")
    .argument('<id>', 'sandbox id or key')
    .option('--bytes <n>', 'at most this many of the last bytes (default 64 KiB)')
    .action(async (id: string, _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions & { bytes?: string }>();
      const bytes = intFlag('bytes', opts.bytes, 1, 16 * 1024 * 1024);
      const r = await withClient(opts, async (rt) => {
        const sbx = await rt.sandbox(sandboxRef(id));
        return { id: sbx.id, console: await sbx.logs(bytes) };
      });
      if (opts.json) printJson(r);
      else process.stdout.write(r.console.endsWith('\n') || r.console === '' ? r.console : `${r.console}\n`);
    });

  vm.command('kill')
    .description('stop a sandbox and free everything it held')
    .argument('<id>', 'sandbox id or key')
    .action(async (id: string, _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions>();
      const r = await withClient(opts, async (rt) => {
        const sbx = await rt.sandbox(sandboxRef(id));
        await sbx.kill();
        return { id: sbx.id, sandboxId: sbx.key, killed: true };
      });
      if (opts.json) printJson(r);
    });

  vm.command('timeout')
    .description("move a sandbox's deadline to MS from now ('none': no deadline)")
    .argument('<id>', 'sandbox id or key')
    .argument('<ms>', "milliseconds from now, or 'none'")
    .action(async (id: string, ms: string, _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions>();
      const timeoutMs = ms === 'none' ? undefined : intFlag('timeout', ms, 1, Number.MAX_SAFE_INTEGER);
      const r = await withClient(opts, async (rt) => {
        const sbx: RemoteSandbox = await rt.sandbox(sandboxRef(id));
        const endAt = await sbx.setTimeout(timeoutMs);
        return { id: sbx.id, endAt: endAt?.toISOString() ?? null };
      });
      if (opts.json) printJson(r);
      else process.stdout.write(`${r.endAt ?? 'no deadline'}\n`);
    });

  for (const [name, description] of [
    ['pause', 'stop a sandbox (commands and file calls fail with ERR_VM_PAUSED until vm resume)'],
    ['resume', 'continue a paused sandbox'],
  ] as const) {
    vm.command(name)
      .description(description)
      .argument('<id>', 'sandbox id or key')
      .action(async (id: string, _o, c: Command) => {
        const opts = c.optsWithGlobals<GlobalOptions>();
        const r = await withClient(opts, async (rt) => {
          const sbx = await rt.sandbox(sandboxRef(id));
          await (name === 'pause' ? sbx.pause() : sbx.resume());
          return { id: sbx.id, sandboxId: sbx.key, state: sbx.state };
        });
        if (opts.json) printJson(r);
      });
  }

  vm.command('snapshot')
    .description(
      'write a snapshot of a sandbox (QEMU: its memory; namespace: its files); prints its id (--json: its info)',
    )
    .argument('<id>', 'sandbox id or key')
    .option('--stay-paused', 'leave the sandbox paused once the snapshot is written')
    .action(async (id: string, _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions & { stayPaused?: boolean }>();
      const info = await withClient(opts, async (rt) =>
        (await rt.sandbox(sandboxRef(id))).snapshot({ stayPaused: opts.stayPaused === true }),
      );
      if (opts.json) printJson(info);
      else process.stdout.write(`${info.id}\n`);
    });

  vm.command('fork')
    .description(
      'fork a sandbox into children; one line per child: its id and key, or its error (exits 1 if any failed)',
    )
    .argument('<id>', 'sandbox id or key')
    .option('--count <n>', 'children to make, 1..16', '1')
    .option('--timeout-ms <ms>', 'kill each child this long after it is ready')
    .action(async (id: string, _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions & { count?: string; timeoutMs?: string }>();
      const count = intFlag('count', opts.count, 1, 16) ?? 1;
      const timeoutMs = intFlag('timeout-ms', opts.timeoutMs, 1, Number.MAX_SAFE_INTEGER);
      const results = await withClient(opts, async (rt) =>
        (await rt.sandbox(sandboxRef(id))).fork({ count, timeoutMs }),
      );
      if (opts.json) printJson(results.map(forkJson));
      else {
        for (const r of results) {
          process.stdout.write(
            r.ok ? `${r.sandbox.id} ${r.sandbox.key}\n` : `error ${r.error.code}: ${r.error.message}\n`,
          );
        }
      }
      if (results.some((r) => !r.ok)) process.exitCode = 1;
    });
}

/** A fork child for --json: its summary (with access token), or its error. */
function forkJson(r: RemoteForkResult): Record<string, unknown> {
  if (r.ok) return { ok: true, ...r.sandbox.summary };
  return { ok: false, error: { code: r.error.code, message: r.error.message, details: r.error.details } };
}
