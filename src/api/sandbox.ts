/**
 * A sandbox, as the main thread holds it: commands, files, exposed ports,
 * console logs, teardown. Every operation is a message to the sandbox's VM
 * actor; bytes stream over the rings (see streams.ts).
 *
 * A directory watch (SandboxWatcher) is armed in the guest before
 * `files.watch()` resolves: a change made after that is always reported.
 * Its events are acknowledged as they are emitted; only an async iterator
 * that falls behind holds acknowledgements back, which stops the guest's
 * agent, whose bounded queue then drops events and reports the gap
 * ('overflow') rather than anything growing.
 */

import { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import { OUT_FILE, OUT_WATCH, type VmInfo, type VmMessage, type VmState } from '../actors/vm/messages.js';
import { AgentErrorCode } from '../agent/errors.js';
import { decodeWatchEvents, type WatchEndReason, type WatchEventType } from '../protocol/agent-messages.js';
import type { ActorRef } from '../runtime/actor-ref.js';
import { deferred } from './deferred.js';
import { errorFrom, SandboxError, SandboxErrorCode } from './errors.js';
import { EventQueue } from './event-queue.js';
import { type ProcessResult, SandboxProcess } from './process.js';
import type { SandboxRecord } from './sandbox-record.js';
import {
  checkCommand,
  checkExposeArgs,
  checkOptions,
  checkPath,
  checkPort,
  checkWriteArgs,
  DEFAULT_MAX_OUTPUT_BYTES,
  ExecOptionsSchema,
  handled,
  LogBytes,
  MkdirOptionsSchema,
  Proto,
  RemoveOptionsSchema,
  SpawnOptionsSchema,
  WatchOptionsSchema,
} from './schemas.js';
import type { OperationHandler, SinkRegistry } from './sink.js';
import type { SnapshotInfo } from './snapshots.js';
import { finishExec, InputChannel, OutputStream } from './streams.js';

/** A command: a shell string (run by `/bin/sh -c`), or an argv array (run directly). */
export type Command = string | string[];

export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Kills the command's process group after this long (the result says timedOut). */
  timeoutMs?: number;
  /** 'pipe' gives the process a writable stdin; default closed. */
  stdin?: 'pipe' | 'closed';
  /** Run a shell string through the login shell (`$SHELL -lc`) instead of `/bin/sh -c`. */
  login?: boolean;
  /**
   * Run on a pseudo-terminal of this size (1..1000 each): stdin is always
   * piped (the terminal's input), stdout carries what the terminal shows,
   * stderr stays empty, `TERM` defaults to xterm-256color, and
   * `resize()` changes the size.
   */
  pty?: { cols: number; rows: number };
}

export interface ExecOptions extends Omit<SpawnOptions, 'stdin' | 'pty'> {
  /** Data for the command's stdin (then closed). */
  stdin?: string | Uint8Array | Readable;
  onStdout?: (chunk: string) => void;
  onStderr?: (chunk: string) => void;
  /** Bytes of each stream kept in the result (default 16 MiB); past it the callbacks still get everything. */
  maxOutputBytes?: number;
}

export interface ExecResult extends ProcessResult {
  stdout: string;
  stderr: string;
  /** The stream produced more than `maxOutputBytes`: the result holds only its first bytes. */
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

export interface FileInfo {
  size: number;
  mode: number;
  mtimeMs?: number;
}

export interface ForkOptions {
  /** Children to make, 1..16. */
  count: number;
  /** Kill each child this long after it is ready. Default: no limit. */
  timeoutMs?: number;
  /** QEMU: how long a child waits for its handoff ack before the fallback. Default 1000. */
  ackTimeoutMs?: number;
  /** Test hook: the children's networks drop their handoff acks, so the fallback wins. */
  dropHandoffAck?: boolean;
}

/** One child of a fork: its Sandbox, or the typed error that child met (its siblings are unaffected). */
export type ForkResult = { ok: true; sandbox: Sandbox } | { ok: false; error: SandboxError };

/** What a Sandbox needs from the runtime that made it. */
export interface SandboxHost {
  readonly registry: SinkRegistry;
  expose(
    sandbox: number,
    guestPort: number,
    opts: { hostPort?: number; proto?: 'tcp' | 'udp' },
  ): Promise<{ hostIp: string; hostPort: number }>;
  unexpose(sandbox: number, hostPort: number, proto: 'tcp' | 'udp'): Promise<boolean>;
  kill(sandbox: number): Promise<void>;
  setTimeout(sandbox: number, ms: number | undefined): Date | undefined;
  pause(sandbox: number): Promise<void>;
  resume(sandbox: number): Promise<void>;
  snapshot(sandbox: number, opts: { stayPaused?: boolean }): Promise<SnapshotInfo & { pauseMs: number }>;
  fork(sandbox: number, opts: ForkOptions): Promise<ForkResult[]>;
}

export class Sandbox {
  /** Last lifecycle state reported by the VM actor. */
  state: VmState = 'ready';
  readonly files: SandboxFiles;
  private killed = false;

  constructor(
    /** Runtime-wide sandbox number. */
    readonly id: number,
    readonly backend: 'qemu' | 'namespace',
    private readonly vm: ActorRef<VmMessage, string>,
    private readonly host: SandboxHost,
    /** Boot information (time to ready, accel, agent version). */
    readonly boot: VmInfo,
    private readonly record: SandboxRecord,
  ) {
    this.files = new SandboxFiles(id, this.vm, host.registry);
  }

  /** The sandbox's key: how other processes name it (`rt.sandbox(key)`, the daemon, E2B's sandboxID). */
  get key(): string {
    return this.record.key;
  }

  /** Labels given at create (`rt.sandboxes({ metadata })` filters by them). */
  get metadata(): Readonly<Record<string, string>> {
    return this.record.metadata;
  }

  /** How it was claimed from a warm pool (pool, hit, ms), or undefined when it booted cold. */
  get claim(): SandboxRecord['claim'] {
    return this.record.claim;
  }

  /** The sandbox this one was forked from (its number), if it is a fork's child. */
  get forkOf(): number | undefined {
    return this.record.forkOf;
  }

  /** Made from a snapshot or a fork: of its memory (processes and all) or of its filesystem only. */
  get restored(): 'memory' | 'filesystem' | undefined {
    return this.boot.restored;
  }

  /** How a memory-restored sandbox took on its own network identity: through its data path (ack) or the fallback. */
  get handoff(): VmInfo['handoff'] {
    return this.boot.handoff;
  }

  /**
   * Stops the guest (QEMU's vCPUs; a namespace sandbox's processes but its
   * agent). Its network flows are kept and their timers hold; commands and
   * file calls fail with ERR_VM_PAUSED until `resume()`.
   */
  pause(): Promise<void> {
    if (this.killed) return Promise.reject(this.stoppedError());
    return this.host.pause(this.id);
  }

  resume(): Promise<void> {
    if (this.killed) return Promise.reject(this.stoppedError());
    return this.host.resume(this.id);
  }

  /**
   * Writes a snapshot under the runtime's home and resolves with its info:
   * `kind: 'memory'` (QEMU: the running machine, restorable later with
   * `createSandbox({ snapshot: id })`, also by another runtime) or
   * `'filesystem'` (namespace: its files; processes cannot be captured on
   * this kernel). `stayPaused` leaves the sandbox paused after it.
   */
  snapshot(opts: { stayPaused?: boolean } = {}): Promise<SnapshotInfo & { pauseMs: number }> {
    if (this.killed) return Promise.reject(this.stoppedError());
    return this.host.snapshot(this.id, opts);
  }

  /**
   * Forks the sandbox into `count` children: one result per child, a
   * Sandbox or a typed error. QEMU children continue from this instant,
   * processes and all, each with its own id, MAC, hostname and network;
   * namespace children boot on a copy of this sandbox's files.
   */
  fork(opts: ForkOptions): Promise<ForkResult[]> {
    if (this.killed) return Promise.reject(this.stoppedError());
    return this.host.fork(this.id, opts);
  }

  /** When the runtime will kill the sandbox, or undefined when it lives until killed. */
  get endAt(): Date | undefined {
    return this.record.lifetime.endAt;
  }

  /**
   * Kills the sandbox `ms` from now (undefined: never on its own). Throws
   * ERR_SANDBOX_BAD_OPTIONS, ERR_NO_SUCH_SANDBOX once it is gone.
   */
  setTimeout(ms: number | undefined): Date | undefined {
    return this.host.setTimeout(this.id, ms);
  }

  /**
   * Starts a command and returns its live streams. Throws ERR_SANDBOX_BAD_COMMAND
   * or ERR_SANDBOX_BAD_OPTIONS for what no guest could run, ERR_SANDBOX_STOPPED
   * once killed.
   */
  spawn(cmd: Command, opts: SpawnOptions = {}): SandboxProcess {
    opts = checkOptions(SpawnOptionsSchema, opts);
    // The sandbox's environment (given at create or claim) under the command's own.
    const env = Object.keys(this.record.env).length > 0 ? { ...this.record.env, ...opts.env } : opts.env;
    cmd = checkCommand(cmd, env);
    if (this.killed) throw this.stoppedError();
    const registry = this.host.registry;
    const vm = this.vm;
    let id = 0;
    const proc = new SandboxProcess(
      {
        ack: (bytes) => vm.tell({ type: 'ack', id, bytes }),
        input: (data, end) => vm.tell({ type: 'input', id, data, end }),
        writable: () => vm.writable(),
        signal: (signal) => vm.tell({ type: 'signal', id, signal }),
        cancel: () => vm.tell({ type: 'cancel', id }),
        resize: (cols, rows) => vm.tell({ type: 'resize', id, cols, rows }),
      },
      opts.stdin === 'pipe' || opts.pty !== undefined,
      opts.pty !== undefined,
    );
    id = registry.add(this.id, proc);
    const request = {
      cmd: typeof cmd === 'string' ? { shell: cmd, login: opts.login } : { argv: cmd },
      env,
      cwd: opts.cwd ?? this.record.workdir,
      timeoutMs: opts.timeoutMs,
      stdin: opts.stdin === 'pipe' || opts.pty !== undefined,
      pty: opts.pty,
    };
    vm.tell({ type: 'exec', id, request: JSON.stringify(request) });
    return proc;
  }

  /**
   * Runs a command to completion and collects its output: at most
   * `maxOutputBytes` of each stream are kept (the result says when more was
   * cut), while `onStdout`/`onStderr` receive every byte, decoded as UTF-8
   * across chunk boundaries.
   */
  async exec(cmd: Command, opts: ExecOptions = {}): Promise<ExecResult> {
    opts = checkOptions(ExecOptionsSchema, opts);
    const { stdin, onStdout, onStderr, maxOutputBytes = DEFAULT_MAX_OUTPUT_BYTES, ...rest } = opts;
    const proc = this.spawn(cmd, { ...rest, stdin: stdin === undefined ? 'closed' : 'pipe' });
    return finishExec(proc, { stdin, maxOutputBytes, onStdout, onStderr });
  }

  private stoppedError(): SandboxError {
    return new SandboxError(SandboxErrorCode.STOPPED, `sandbox ${this.id} was killed`, { sandbox: this.id });
  }

  /**
   * Makes a guest port reachable from the host: a listener on 127.0.0.1
   * (port chosen by the system unless given) forwarded to the guest.
   */
  async expose(
    guestPort: number,
    opts: { hostPort?: number; proto?: 'tcp' | 'udp' } = {},
  ): Promise<{ host: string; port: number; url: string }> {
    opts = checkExposeArgs(guestPort, opts);
    if (this.killed) throw this.stoppedError();
    const r = await this.host.expose(this.id, guestPort, opts);
    return { host: r.hostIp, port: r.hostPort, url: `http://${r.hostIp}:${r.hostPort}/` };
  }

  async unexpose(hostPort: number, proto: 'tcp' | 'udp' = 'tcp'): Promise<boolean> {
    checkPort(hostPort, 'hostPort');
    checkOptions(Proto, proto, 'proto');
    return this.host.unexpose(this.id, hostPort, proto);
  }

  /** The last bytes of the sandbox's console (serial console, or the init's stderr). */
  async logs(bytes = 64 * 1024): Promise<string> {
    checkOptions(LogBytes, bytes, 'bytes');
    return this.vm.ask({ type: 'logs', bytes });
  }

  async info(): Promise<VmInfo> {
    return JSON.parse(await this.vm.ask({ type: 'info' })) as VmInfo;
  }

  /** Stops the sandbox and frees everything it held. Later calls fail with ERR_SANDBOX_STOPPED. */
  kill(): Promise<void> {
    this.markKilled();
    return handled(this.host.kill(this.id));
  }

  /** The runtime took the sandbox down (kill, or the runtime stopping). */
  markKilled(): void {
    this.killed = true;
    this.files.markKilled();
    if (this.state !== 'failed') this.state = 'stopped';
  }
}

/** Files inside a sandbox. Large files stream; nothing is held whole unless asked (`read`). */
export class SandboxFiles {
  private killed = false;

  constructor(
    private readonly sandbox: number,
    private readonly vm: ActorRef<VmMessage, string>,
    private readonly registry: SinkRegistry,
  ) {}

  markKilled(): void {
    this.killed = true;
  }

  private live(): void {
    if (this.killed) {
      throw new SandboxError(SandboxErrorCode.STOPPED, `sandbox ${this.sandbox} was killed`, {
        sandbox: this.sandbox,
      });
    }
  }

  /**
   * Writes a file atomically (temporary file, fsync, rename): the path holds
   * either the old content or all of the new one. Streams need `size`.
   */
  async write(
    path: string,
    data: string | Uint8Array | Readable,
    opts: { mode?: number; size?: number } = {},
  ): Promise<void> {
    opts = checkWriteArgs(path, data, opts);
    this.live();
    const bytes =
      typeof data === 'string' ? Buffer.from(data) : data instanceof Uint8Array ? data : undefined;
    const size = bytes ? bytes.length : opts.size;
    if (size === undefined)
      throw new SandboxError(SandboxErrorCode.BAD_OPTIONS, 'writing a stream needs its size');
    const vm = this.vm;
    let id = 0;
    const input = new InputChannel(
      (chunk, end) => vm.tell({ type: 'input', id, data: chunk, end }),
      () => vm.writable(),
    );
    const done = new Promise<void>((resolve, reject) => {
      const handler: OperationHandler = {
        out: () => {},
        started: () => {},
        credit: (n) => input.credit(n),
        done: (r) => {
          input.close();
          if (r.error) reject(errorFrom(r.error));
          else resolve();
        },
      };
      id = this.registry.add(this.sandbox, handler);
    });
    vm.tell({ type: 'put', id, path, mode: opts.mode ?? 0o644, size });
    const send = async (): Promise<void> => {
      if (bytes) await input.write(bytes);
      else for await (const chunk of data as Readable) await input.write(chunk as Uint8Array);
      input.end();
    };
    // A source that fails mid-way ends the put in the guest too (its slot and temporary file freed).
    const sent = send().catch((err: unknown) => {
      vm.tell({ type: 'cancel', id });
      throw err;
    });
    // If the guest refuses early (bad path), `done` rejects first and sending stops.
    await Promise.all([done, sent]);
  }

  /** Opens a file for streaming: its size and mode, and its content as a Readable. */
  async readStream(path: string): Promise<FileInfo & { stream: Readable }> {
    checkPath(path);
    this.live();
    const vm = this.vm;
    let id = 0;
    const stream = new OutputStream((n) => vm.tell({ type: 'ack', id, bytes: n }));
    let over = false;
    // A reader that goes away before the end (a dropped download) ends the read in the guest.
    stream.once('close', () => {
      if (!over) vm.tell({ type: 'cancel', id });
    });
    return new Promise((resolve, reject) => {
      let opened = false;
      id = this.registry.add(this.sandbox, {
        out: (channel, data) => {
          if (channel === OUT_FILE) stream.deliver(data);
        },
        started: (info) => {
          opened = true;
          resolve({ ...(info as FileInfo), stream });
        },
        credit: () => {},
        done: (r) => {
          over = true;
          if (r.error) {
            const err = errorFrom(r.error);
            if (opened) stream.finish(err);
            else reject(err);
          } else stream.finish();
        },
      });
      vm.tell({ type: 'get', id, path });
    });
  }

  /** Reads a whole file into memory. */
  async read(path: string): Promise<Buffer> {
    const { stream } = await this.readStream(path);
    const parts: Buffer[] = [];
    for await (const c of stream) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }

  async stat(path: string): Promise<Record<string, unknown>> {
    checkPath(path);
    this.live();
    return JSON.parse(await this.vm.ask({ type: 'fs', op: 'stat', path, mode: 0 }));
  }

  async list(path: string): Promise<Record<string, unknown>[]> {
    checkPath(path);
    this.live();
    return JSON.parse(await this.vm.ask({ type: 'fs', op: 'list', path, mode: 0 }));
  }

  /** `mkdir -p`. */
  async mkdir(path: string, opts: { mode?: number } = {}): Promise<void> {
    checkPath(path);
    opts = checkOptions(MkdirOptionsSchema, opts);
    this.live();
    await this.vm.ask({ type: 'fs', op: 'mkdir', path, mode: opts.mode ?? 0o755 });
  }

  /**
   * Removes a file, a symlink (never its target) or an empty directory; with
   * `recursive`, a directory and everything in it (symlinks inside are
   * removed, not followed). A missing path rejects with ERR_AGENT_REMOTE,
   * `details.errnoName` ENOENT; a non-empty directory without `recursive`
   * with ENOTEMPTY.
   */
  async remove(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    checkPath(path);
    opts = checkOptions(RemoveOptionsSchema, opts);
    this.live();
    await this.vm.ask({ type: 'remove', path, recursive: opts.recursive ?? false });
  }

  /** rename(2): `to` is replaced if it exists; errors as the guest reports them (ENOENT, EXDEV, …). */
  async rename(from: string, to: string): Promise<void> {
    checkPath(from);
    checkPath(to);
    this.live();
    await this.vm.ask({ type: 'rename', from, to });
  }

  /** Whether `path` exists (symlinks followed); other failures (EACCES, …) reject. */
  async exists(path: string): Promise<boolean> {
    checkPath(path);
    this.live();
    try {
      await this.vm.ask({ type: 'fs', op: 'stat', path, mode: 0 });
      return true;
    } catch (err) {
      const e = err as { code?: string; details?: { errnoName?: string } };
      if (e.code === AgentErrorCode.REMOTE && NOT_FOUND.has(e.details?.errnoName ?? '')) return false;
      throw err;
    }
  }

  /**
   * Watches a directory (with `recursive`, every directory under it, also
   * ones created later). Resolves once the guest armed the watch. Rejects
   * with ERR_AGENT_NOT_DIRECTORY for a non-directory, ERR_AGENT_REMOTE
   * (ENOENT) for a missing path, ERR_AGENT_WATCH_LIMIT past the agent's
   * bounds (32 watches, 4096 directories per watch).
   */
  async watch(path: string, opts: { recursive?: boolean } = {}): Promise<SandboxWatcher> {
    checkPath(path);
    opts = checkOptions(WatchOptionsSchema, opts);
    this.live();
    const vm = this.vm;
    let id = 0;
    const watcher = new SandboxWatcher({
      ack: (bytes) => vm.tell({ type: 'ack', id, bytes }),
      cancel: () => vm.tell({ type: 'cancel', id }),
    });
    id = this.registry.add(this.sandbox, watcher);
    vm.tell({ type: 'watch', id, path, recursive: opts.recursive ?? false });
    await watcher.armed;
    return watcher;
  }
}

/** Errno names that mean "there is nothing at that path". */
const NOT_FOUND = new Set(['ENOENT', 'ENOTDIR']);

/** A change under a watched directory. */
export interface WatchEvent {
  type: WatchEventType;
  /** Path relative to the watched directory ('' is the directory itself). */
  name: string;
  isDir: boolean;
}

export interface SandboxWatcherEvents {
  event: [WatchEvent];
  /** Events were dropped here: the consumer fell behind, or part of the tree could not be watched. */
  overflow: [];
  /** The watch failed (the sandbox went away, …); emitted only when listened to, `ended` rejects too. */
  error: [Error];
  /** The last event: closed by `close()`, or the directory was deleted or moved away ('closed' after an error). */
  end: [WatchEndReason];
}

/** What a SandboxWatcher needs from its sandbox. */
interface WatcherLink {
  ack(bytes: number): void;
  cancel(): void;
}

/** Events an async iterator may hold before acknowledgements (and so the guest) wait for it. */
const ITERATOR_BACKLOG = 4096;

/**
 * The agent writes files atomically: content goes to `.NAME.avm-XXXXXXXX`
 * (guest/agent/op_file.c), then is renamed over NAME. A watcher would see the
 * temporary file's create/write/chmod/rename and then a create of NAME; what
 * happened is that NAME was created and written. Watchers hide the temporary
 * name and report its arrival as create + write (what E2B clients expect too).
 */
const ATOMIC_TEMP = /(^|\/)\.([^/]+)\.avm-[0-9a-f]{8}$/;
/** Renamed temporaries whose arrival has not been seen yet (moved out of the tree: never). */
const MAX_PENDING_TEMPS = 256;

/** A directory watch: an EventEmitter, and an async iterable of its events (single consumer). */
export class SandboxWatcher
  extends EventEmitter<SandboxWatcherEvents>
  implements OperationHandler, AsyncIterable<WatchEvent>
{
  /** Directories the guest watches (counted when it armed the watch). */
  directories = 0;
  private readonly armedAt = deferred<void>();
  private readonly endedAt = deferred<WatchEndReason>();
  /** Resolves once armed; rejects when the watch could not be set up. */
  readonly armed: Promise<void> = this.armedAt.promise;
  /** Resolves with why the watch ended; rejects with the error that ended it. */
  readonly ended: Promise<WatchEndReason> = this.endedAt.promise;
  private over = false;
  private readonly renamedTemps = new Set<string>();
  private queue: EventQueue<WatchEvent> | undefined;
  private owed = 0;

  constructor(private readonly link: WatcherLink) {
    super();
  }

  /** Ends the watch in the guest; resolves once it ended. Idempotent. */
  close(): Promise<void> {
    if (!this.over) this.link.cancel();
    return this.ended.then(
      () => {},
      () => {},
    );
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    this.queue ??= new EventQueue((left) => {
      // Credit held back while the iterator was behind goes out once it caught up.
      if (this.owed > 0 && left <= ITERATOR_BACKLOG / 2) {
        this.link.ack(this.owed);
        this.owed = 0;
      }
    });
    return this.queue.iterator(() => this.close());
  }

  private rememberTemp(name: string): void {
    if (this.renamedTemps.size >= MAX_PENDING_TEMPS) this.renamedTemps.clear();
    this.renamedTemps.add(name);
  }

  // ---- OperationHandler (called by the sink) ----

  out(channel: number, data: Uint8Array): void {
    if (channel !== OUT_WATCH) return;
    let records: ReturnType<typeof decodeWatchEvents>;
    try {
      records = decodeWatchEvents(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    } catch {
      records = [{ type: 'overflow' }]; // unreadable records: say events are missing
    }
    for (const r of records) {
      if (r.type === 'overflow') {
        this.emit('overflow');
        continue;
      }
      if (ATOMIC_TEMP.test(r.name)) {
        if (r.type === 'rename') this.rememberTemp(r.name.replace(ATOMIC_TEMP, '$1$2'));
        continue;
      }
      const arrived = r.type === 'create' && this.renamedTemps.delete(r.name);
      for (const type of arrived ? (['create', 'write'] as const) : [r.type]) {
        const e: WatchEvent = { type, name: r.name, isDir: r.isDir };
        this.emit('event', e);
        this.queue?.push(e);
      }
    }
    if (this.queue && this.queue.items.length > ITERATOR_BACKLOG) this.owed += data.byteLength;
    else this.link.ack(data.byteLength);
  }

  started(info: unknown): void {
    this.directories = Number((info as { directories?: number }).directories ?? 0);
    this.armedAt.resolve();
  }

  credit(): void {}

  done(
    result: { error?: { code: string; message: string; details?: unknown } } & Record<string, unknown>,
  ): void {
    this.over = true;
    if (result.error) {
      const err = errorFrom(result.error);
      this.queue?.end(err);
      this.armedAt.reject(err);
      this.endedAt.reject(err);
      if (this.listenerCount('error') > 0) this.emit('error', err);
      this.emit('end', 'closed');
    } else {
      const reason = (result.reason as WatchEndReason | undefined) ?? 'closed';
      this.queue?.end();
      this.armedAt.resolve();
      this.endedAt.resolve(reason);
      this.emit('end', reason);
    }
  }
}
