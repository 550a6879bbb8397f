/**
 * A sandbox behind the daemon, with the in-process Sandbox's methods:
 * commands (spawn, exec, and what only the daemon has: attach to a process
 * that outlived its client, list them), files (files.ts), exposed ports,
 * console logs, lifetime, pause and resume, snapshots and forks, kill.
 * Sandbox-level calls are native REST
 * (/v1/sandboxes/:id/…); commands and files are the in-sandbox services,
 * addressed by the sandbox's key.
 */
import { z } from 'zod';
import type { VmState } from '../../actors/vm/messages.js';
import type { Signal } from '../../protocol/envd/index.js';
import type { Command, ExecOptions, ExecResult, ForkOptions, SpawnOptions } from '../sandbox.js';
import {
  checkCommand,
  checkExposeArgs,
  checkOptions,
  checkPort,
  DEFAULT_MAX_OUTPUT_BYTES,
  ExecOptionsSchema,
  ForkOptionsSchema,
  handled,
  LogBytes,
  Proto,
  SnapshotOptionsSchema,
  SpawnOptionsSchema,
} from '../schemas.js';
import type { SnapshotSummary } from '../snapshots.js';
import { finishExec } from '../streams.js';
import type { Endpoint } from './endpoint.js';
import { fromConnect, RemoteError } from './errors.js';
import { RemoteFiles } from './files.js';
import { type ProcessCalls, type ProcessEventMessage, RemoteProcess } from './process.js';
import { callOptions, type RpcClients } from './rpc.js';

/** A sandbox as the daemon describes it (src/daemon/sandboxes.ts). */
export interface SandboxSummary {
  id: number;
  /** The key: E2B's sandboxID, what in-sandbox calls name. */
  sandboxId: string;
  image: string;
  backend: 'qemu' | 'namespace';
  state: string;
  metadata: Record<string, string>;
  startedAt: string;
  endAt: string | null;
  memoryMiB: number;
  cpus: number;
  accel?: string;
  pid?: number;
  bootMs?: number;
  processes: number;
  /** Claimed from a warm pool: which, whether a machine was idle (hit), the create's ms. */
  claim?: { pool: string; hit: boolean; ms: number };
  /** A fork's child: the number of the sandbox it was forked from. */
  forkOf?: number;
  /** Made from a snapshot or a fork: of its memory (processes and all) or of its files only. */
  restored?: 'memory' | 'filesystem';
  /** A memory-restored one: how it took on its own network identity (ack or fallback), and how long that took. */
  handoff?: { via: 'ack' | 'fallback'; ms: number; applyUs?: number };
  /** Restored from this snapshot. */
  snapshot?: string;
  /** Only in the answer to a create (or a fork): the secret for in-sandbox calls on TCP. */
  accessToken?: string;
}

/** One child of a fork: its RemoteSandbox, or the typed error that child met (its siblings are unaffected). */
export type RemoteForkResult = { ok: true; sandbox: RemoteSandbox } | { ok: false; error: RemoteError };

/** What the daemon answers per fork child (src/daemon/routes/native.ts). */
type ForkEntry =
  | SandboxSummary
  | { error: { code: string; message: string; details?: Record<string, unknown> } };

/**
 * The in-process SpawnOptions, plus a tag to reattach by (`attach({ tag })`).
 * Differences: cwd defaults to the daemon's (/home/user), and `timeoutMs` is
 * kept by this client (SIGKILL when it passes; the command outlives a client
 * that went away).
 */
export interface RemoteSpawnOptions extends SpawnOptions {
  tag?: string;
}

export type RemoteExecOptions = ExecOptions & { tag?: string };

/** A process the daemon keeps for this sandbox. */
export interface RemoteProcessInfo {
  pid: number;
  tag?: string;
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string;
}

const Tag = z.string().min(1).max(256);
export const RemoteSpawnOptionsSchema = z
  .object({ ...SpawnOptionsSchema.shape, tag: Tag })
  .partial()
  .strict();
const RemoteExecOptionsSchema = z
  .object({ ...ExecOptionsSchema.shape, tag: Tag })
  .partial()
  .strict();
/** Fork options over the daemon: the in-process ones but the QEMU test hooks, which it does not take. */
export type RemoteForkOptions = Pick<ForkOptions, 'count' | 'timeoutMs'>;
const RemoteForkOptionsSchema = ForkOptionsSchema.pick({ count: true, timeoutMs: true }).strict();

const Selector = z.union([
  z.object({ pid: z.number().int().min(1).max(0xffffffff) }).strict(),
  z.object({ tag: Tag }).strict(),
]);

/** What a RemoteSandbox needs from its runtime. */
export interface SandboxLink {
  readonly endpoint: Endpoint;
  readonly rpc: RpcClients;
  setTimeout(id: number, ms: number | undefined): Promise<Date | undefined>;
}

export class RemoteSandbox {
  readonly id: number;
  /** Unguessable, unique across daemon restarts (E2B's sandboxID). */
  readonly key: string;
  readonly backend: 'qemu' | 'namespace';
  readonly image: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** Boot information, as the daemon reported it when this object was made. */
  readonly boot: { sandbox: number; backend: string; accel?: string; pid?: number; bootMs?: number };
  /** Present when this client created the sandbox. */
  readonly accessToken: string | undefined;
  readonly files: RemoteFiles;
  /** Last state the daemon reported (refreshed by info()). */
  state: VmState;
  /** When the daemon will kill it (refreshed by info() and setTimeout()). */
  endAt: Date | undefined;
  /** What the daemon last said about it (refreshed by info()). */
  summary: SandboxSummary;
  private killed = false;

  constructor(
    private readonly link: SandboxLink,
    summary: SandboxSummary,
  ) {
    this.id = summary.id;
    this.key = summary.sandboxId;
    this.backend = summary.backend;
    this.image = summary.image;
    this.metadata = Object.freeze({ ...summary.metadata });
    this.boot = {
      sandbox: summary.id,
      backend: summary.backend,
      accel: summary.accel,
      pid: summary.pid,
      bootMs: summary.bootMs,
    };
    this.accessToken = summary.accessToken;
    this.state = summary.state as VmState;
    this.endAt = summary.endAt ? new Date(summary.endAt) : undefined;
    this.summary = summary;
    const endpoint = link.endpoint;
    this.files = new RemoteFiles({
      endpoint,
      rpc: link.rpc,
      key: this.key,
      live: () => this.live(),
      chmod: (path, mode) => this.chmod(path, mode),
    });
  }

  private get path(): string {
    return `/v1/sandboxes/${encodeURIComponent(this.key)}`;
  }

  /** The sandbox this one was forked from (its number), if it is a fork's child. */
  get forkOf(): number | undefined {
    return this.summary.forkOf;
  }

  /** Made from a snapshot or a fork: of its memory (processes and all) or of its filesystem only. */
  get restored(): 'memory' | 'filesystem' | undefined {
    return this.summary.restored;
  }

  /** How a memory-restored sandbox took on its own network identity. */
  get handoff(): SandboxSummary['handoff'] {
    return this.summary.handoff;
  }

  private live(): void {
    if (this.killed) {
      throw new RemoteError('ERR_SANDBOX_STOPPED', `sandbox ${this.id} was killed`, { sandbox: this.id });
    }
  }

  private calls(): ProcessCalls {
    const rpc = this.link.rpc.process;
    const opts = () => callOptions(this.link.endpoint, this.key);
    const where = this.link.endpoint.where;
    const guard = <T>(p: Promise<T>): Promise<void> =>
      p.then(
        () => {},
        (err) => {
          throw fromConnect(err, 'process', where);
        },
      );
    return {
      sendInput: (pid, data, pty) =>
        guard(
          rpc.sendInput(
            {
              process: { selector: { case: 'pid', value: pid } },
              input: { input: { case: pty ? 'pty' : 'stdin', value: data } },
            },
            opts(),
          ),
        ),
      closeStdin: (pid) =>
        guard(rpc.closeStdin({ process: { selector: { case: 'pid', value: pid } } }, opts())),
      signal: (pid, signal) =>
        guard(
          rpc.sendSignal(
            {
              process: { selector: { case: 'pid', value: pid } },
              signal: signal as Signal,
            },
            opts(),
          ),
        ),
      resize: (pid, cols, rows) =>
        guard(
          rpc.update(
            { process: { selector: { case: 'pid', value: pid } }, pty: { size: { cols, rows } } },
            opts(),
          ),
        ),
    };
  }

  /**
   * Starts a command and returns its live streams. Throws
   * ERR_SANDBOX_BAD_COMMAND or ERR_SANDBOX_BAD_OPTIONS at once; failures to
   * run reject `pid` and `result`. The command belongs to the daemon: it runs
   * on when this client goes away (reattach with `attach({ pid })` or by `tag`).
   */
  spawn(cmd: Command, opts: RemoteSpawnOptions = {}): RemoteProcess {
    opts = checkOptions(RemoteSpawnOptionsSchema, opts);
    cmd = checkCommand(cmd, opts.env);
    this.live();
    const argv = typeof cmd === 'string' ? ['/bin/sh', opts.login ? '-lc' : '-c', cmd] : cmd;
    const abort = new AbortController();
    const withStdin = opts.stdin === 'pipe' || opts.pty !== undefined;
    const events = this.link.rpc.process.start(
      {
        process: { cmd: argv[0], args: argv.slice(1), envs: opts.env ?? {}, cwd: opts.cwd },
        pty: opts.pty ? { size: { cols: opts.pty.cols, rows: opts.pty.rows } } : undefined,
        tag: opts.tag,
        stdin: withStdin,
      },
      callOptions(this.link.endpoint, this.key, abort.signal),
    );
    return new RemoteProcess(events as AsyncIterable<ProcessEventMessage>, this.calls(), {
      withStdin,
      pty: opts.pty !== undefined,
      timeoutMs: opts.timeoutMs,
      abort,
      context: 'start',
      where: this.link.endpoint.where,
    });
  }

  /**
   * Runs a command to completion and collects its output (at most
   * `maxOutputBytes` of each stream kept; `onStdout`/`onStderr` get every
   * byte, decoded as UTF-8 across chunk boundaries).
   */
  async exec(cmd: Command, opts: RemoteExecOptions = {}): Promise<ExecResult> {
    opts = checkOptions(RemoteExecOptionsSchema, opts);
    const { stdin, onStdout, onStderr, maxOutputBytes = DEFAULT_MAX_OUTPUT_BYTES, ...rest } = opts;
    const proc = this.spawn(cmd, { ...rest, stdin: stdin === undefined ? 'closed' : 'pipe' });
    return finishExec(proc, { stdin, maxOutputBytes, onStdout, onStderr });
  }

  /**
   * Follows a process the daemon keeps (started by any client): its output
   * from now on, and its end. stdin is writable if the process has one open.
   * Rejects `pid`/`result` with ERR_PROCESS_NOT_FOUND for an unknown one.
   */
  attach(selector: { pid: number } | { tag: string }): RemoteProcess {
    const sel = checkOptions(Selector, selector, 'selector') as { pid: number } | { tag: string };
    this.live();
    const abort = new AbortController();
    const events = this.link.rpc.process.connect(
      {
        process: {
          selector: 'pid' in sel ? { case: 'pid', value: sel.pid } : { case: 'tag', value: sel.tag },
        },
      },
      callOptions(this.link.endpoint, this.key, abort.signal),
    );
    return new RemoteProcess(events as AsyncIterable<ProcessEventMessage>, this.calls(), {
      withStdin: true,
      pty: false,
      abort,
      context: 'process',
      where: this.link.endpoint.where,
    });
  }

  /** The running processes the daemon keeps for this sandbox. */
  async processes(): Promise<RemoteProcessInfo[]> {
    this.live();
    const r = await this.link.rpc.process.list({}, callOptions(this.link.endpoint, this.key)).catch((err) => {
      throw fromConnect(err, 'process', this.link.endpoint.where);
    });
    return r.processes.map((p) => ({
      pid: p.pid,
      tag: p.tag,
      cmd: p.config?.cmd ?? '',
      args: p.config?.args ?? [],
      envs: { ...p.config?.envs },
      cwd: p.config?.cwd,
    }));
  }

  /** Makes a guest port reachable on the daemon's host (127.0.0.1, port chosen unless given). */
  async expose(
    guestPort: number,
    opts: { hostPort?: number; proto?: 'tcp' | 'udp' } = {},
  ): Promise<{ host: string; port: number; url: string }> {
    opts = checkExposeArgs(guestPort, opts);
    this.live();
    return this.link.endpoint.json('POST', `${this.path}/forwards`, { guestPort, ...opts });
  }

  async unexpose(hostPort: number, proto: 'tcp' | 'udp' = 'tcp'): Promise<boolean> {
    checkPort(hostPort, 'hostPort');
    checkOptions(Proto, proto, 'proto');
    this.live();
    const r = await this.link.endpoint.json<{ removed: boolean }>(
      'DELETE',
      `${this.path}/forwards/${proto}/${hostPort}`,
    );
    return r.removed;
  }

  /** The last bytes of the sandbox's console. */
  async logs(bytes = 64 * 1024): Promise<string> {
    checkOptions(LogBytes, bytes, 'bytes');
    this.live();
    const r = await this.link.endpoint.json<{ logs: string }>('GET', `${this.path}/logs?bytes=${bytes}`);
    return r.logs;
  }

  /** What the daemon reports now (and this object's state and deadline, refreshed). */
  async info(): Promise<SandboxSummary> {
    this.live();
    const s = await this.link.endpoint.json<SandboxSummary>('GET', this.path);
    this.refresh(s);
    return s;
  }

  /** CPU, memory and disk use. */
  metrics(): Promise<Record<string, unknown>> {
    this.live();
    return this.link.endpoint.json('GET', `${this.path}/metrics`);
  }

  /** Moves the deadline to `ms` from now (undefined: none). Resolves with the new deadline. */
  async setTimeout(ms: number | undefined): Promise<Date | undefined> {
    this.live();
    this.endAt = await this.link.setTimeout(this.id, ms);
    return this.endAt;
  }

  /**
   * Stops the guest; commands and file calls fail with ERR_VM_PAUSED until
   * `resume()`. Its network flows are kept. Idempotent.
   */
  async pause(): Promise<void> {
    this.live();
    this.refresh(await this.link.endpoint.json<SandboxSummary>('POST', `${this.path}/pause`));
  }

  /** Continues a paused sandbox. Idempotent. */
  async resume(): Promise<void> {
    this.live();
    this.refresh(await this.link.endpoint.json<SandboxSummary>('POST', `${this.path}/resume`));
  }

  /**
   * Writes a snapshot under the daemon's home and resolves with its info:
   * `kind: 'memory'` (QEMU) or `'filesystem'` (namespace). `stayPaused`
   * leaves the sandbox paused after it. Restore it with
   * `createSandbox({ snapshot: id })`.
   */
  async snapshot(opts: { stayPaused?: boolean } = {}): Promise<SnapshotSummary & { pauseMs: number }> {
    const body = checkOptions(SnapshotOptionsSchema, opts);
    this.live();
    const info = await this.link.endpoint.json<SnapshotSummary & { pauseMs: number }>(
      'POST',
      `${this.path}/snapshot`,
      body,
    );
    if (body.stayPaused) this.state = 'paused';
    return info;
  }

  /**
   * Forks the sandbox into `count` (1..16) children: one result per child, a
   * RemoteSandbox (holding its access token) or the typed error that child
   * met (ERR_FORK_CHILD_FAILED, the cause in `details.cause`).
   */
  async fork(opts: RemoteForkOptions): Promise<RemoteForkResult[]> {
    const body = checkOptions(RemoteForkOptionsSchema, opts);
    this.live();
    const entries = await this.link.endpoint.json<ForkEntry[]>('POST', `${this.path}/fork`, body);
    return entries.map((e): RemoteForkResult => {
      if ('error' in e)
        return { ok: false, error: new RemoteError(e.error.code, e.error.message, e.error.details) };
      return { ok: true, sandbox: new RemoteSandbox(this.link, e) };
    });
  }

  private refresh(s: SandboxSummary): void {
    this.state = s.state as VmState;
    this.endAt = s.endAt ? new Date(s.endAt) : undefined;
    this.summary = s;
  }

  /** Stops the sandbox and frees everything it held. Later calls fail with ERR_SANDBOX_STOPPED. */
  kill(): Promise<void> {
    this.killed = true;
    this.state = 'stopped';
    return handled(
      this.link.endpoint.json<void>('DELETE', this.path).catch((err: RemoteError) => {
        // Already gone (its deadline, another client): what kill wanted.
        if (err.code !== 'ERR_NO_SUCH_SANDBOX') throw err;
      }),
    );
  }

  private async chmod(path: string, mode: number): Promise<void> {
    const r = await this.exec(['chmod', mode.toString(8), path]);
    if (r.exitCode !== 0) {
      throw new RemoteError('ERR_AGENT_REMOTE', `chmod ${path}: ${r.stderr.trim() || `exit ${r.exitCode}`}`, {
        path,
        errnoName: /No such file/.test(r.stderr) ? 'ENOENT' : 'EPERM',
      });
    }
  }
}
