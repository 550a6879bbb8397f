/**
 * A sandbox, as the main thread holds it: commands, files, exposed ports,
 * console logs, teardown. Every operation is a message to the sandbox's VM
 * actor; bytes stream over the rings (see streams.ts).
 */
import { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { OUT_FILE, type VmInfo, type VmMessage, type VmState } from '../actors/vm/messages.js';
import type { ActorRef } from '../runtime/actor-ref.js';
import { errorFrom, SandboxError, SandboxErrorCode } from './errors.js';
import { type ProcessResult, SandboxProcess } from './process.js';
import {
  checkCommand,
  checkOptions,
  checkPath,
  checkPort,
  DEFAULT_MAX_OUTPUT_BYTES,
  ExecOptionsSchema,
  ExposeOptionsSchema,
  handled,
  LogBytes,
  MkdirOptionsSchema,
  Proto,
  SpawnOptionsSchema,
  WriteOptionsSchema,
} from './schemas.js';
import type { OperationHandler, SinkRegistry } from './sink.js';
import { InputChannel, OutputStream } from './streams.js';

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
}

export interface ExecOptions extends Omit<SpawnOptions, 'stdin'> {
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
  ) {
    this.files = new SandboxFiles(id, this.vm, host.registry);
  }

  /**
   * Starts a command and returns its live streams. Throws ERR_SANDBOX_BAD_COMMAND
   * or ERR_SANDBOX_BAD_OPTIONS for what no guest could run, ERR_SANDBOX_STOPPED
   * once killed.
   */
  spawn(cmd: Command, opts: SpawnOptions = {}): SandboxProcess {
    opts = checkOptions(SpawnOptionsSchema, opts);
    cmd = checkCommand(cmd, opts.env);
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
      },
      opts.stdin === 'pipe',
    );
    id = registry.add(this.id, proc);
    const request = {
      cmd: typeof cmd === 'string' ? { shell: cmd, login: opts.login } : { argv: cmd },
      env: opts.env,
      cwd: opts.cwd,
      timeoutMs: opts.timeoutMs,
      stdin: opts.stdin === 'pipe',
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
    const collect = (r: Readable, cb?: (s: string) => void): Promise<{ text: string; truncated: boolean }> =>
      new Promise((resolve, reject) => {
        const parts: Buffer[] = [];
        let kept = 0;
        let truncated = false;
        const decoder = cb ? new StringDecoder('utf8') : undefined;
        r.on('data', (d: Buffer) => {
          if (kept < maxOutputBytes) {
            const take = Math.min(d.length, maxOutputBytes - kept);
            parts.push(take === d.length ? d : d.subarray(0, take));
            kept += take;
            if (take < d.length) truncated = true;
          } else if (d.length > 0) truncated = true;
          if (decoder) {
            const text = decoder.write(d);
            if (text) cb!(text);
          }
        });
        r.once('end', () => {
          const rest = decoder?.end();
          if (rest) cb!(rest);
          resolve({ text: Buffer.concat(parts).toString('utf8'), truncated });
        });
        r.once('error', reject);
      });
    if (stdin !== undefined && proc.stdin) {
      // A command that stops reading its stdin ends the write with an error: the result tells.
      proc.stdin.on('error', () => {});
      if (typeof stdin === 'string' || stdin instanceof Uint8Array) proc.stdin.end(stdin);
      else (stdin as Readable).pipe(proc.stdin);
    }
    const [stdout, stderr, result] = await Promise.all([
      collect(proc.stdout, onStdout),
      collect(proc.stderr, onStderr),
      proc.result,
    ]);
    return {
      ...result,
      stdout: stdout.text,
      stderr: stderr.text,
      stdoutTruncated: stdout.truncated,
      stderrTruncated: stderr.truncated,
    };
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
    checkPort(guestPort, 'guestPort');
    const hostPort = (opts as { hostPort?: unknown } | undefined)?.hostPort;
    if (hostPort !== undefined) checkPort(hostPort, 'hostPort', true);
    opts = checkOptions(ExposeOptionsSchema, opts);
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
    checkPath(path);
    opts = checkOptions(WriteOptionsSchema, opts);
    if (typeof data !== 'string' && !(data instanceof Uint8Array) && !(data instanceof Readable)) {
      throw new SandboxError(
        SandboxErrorCode.BAD_OPTIONS,
        'data must be a string, a Uint8Array or a Readable',
      );
    }
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
    const sent = send();
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
}
