/**
 * The host side of the guest-agent protocol: an async API over any duplex byte
 * stream (a Unix socket, a virtio-serial chardev socket, an inherited socketpair).
 *
 * One connection carries many concurrent requests, each on its own stream id.
 * Bulk data is flow-controlled per stream in both directions (credit.ts), so a
 * 100 MiB transfer shares the connection fairly with small requests.
 */
import { randomBytes } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import { Channel, FrameDecoder, MAX_CHUNK, RESET_MAGIC, RESET_NONCE_BYTES } from '../protocol/agent-frame.js';
import {
  type AgentDirEntry,
  type AgentHello,
  type AgentMessage,
  type AgentStat,
  decodeAgentFrame,
  decodeList,
  decodePutResult,
  decodeStat,
  encodeHostMessage,
  type FileInfo,
  type HostMessage,
  type NetConfig,
  type RunRequest,
  type ShutdownAction,
  type TerminalSize,
} from '../protocol/agent-messages.js';
import { decodeHandoffResult } from '../protocol/handoff.js';
import { InboundStream, OutboundCredit } from './credit.js';
import {
  AgentClosedError,
  type AgentError,
  AgentProtocolError,
  AgentSizeMismatchError,
  AgentTimeoutError,
  errorFromRemote,
} from './errors.js';
import { AgentProcess, type RunResult, type StreamHandler, type StreamLink } from './process.js';
import { AgentWatch } from './watch.js';

/** The protocol major version this client speaks. */
export const CLIENT_PROTOCOL_VERSION = 1;

export interface ConnectOptions {
  /** How long to wait for the agent's HELLO; default 10 000 ms. */
  handshakeTimeoutMs?: number;
  /**
   * Start with a RESET: the agent ends whatever session it had on this byte
   * stream (killing its commands) and answers with a marker and a fresh HELLO;
   * everything before the marker is ignored. For transports that outlive a
   * host, such as a virtio-serial port, where a previous session may still be
   * open in the guest (a quick reattach, a restored snapshot).
   */
  reset?: boolean;
}

export interface VirtioSerialConnectOptions {
  /** Overall deadline; default 60 000 ms. */
  timeoutMs?: number;
  /** How long one attempt waits for HELLO before it is dropped and retried; default 2 000 ms. */
  attemptTimeoutMs?: number;
}

export interface CallOptions {
  /** Rejects with ERR_AGENT_TIMEOUT (and cancels the request in the guest) after this long. */
  timeoutMs?: number;
}

/** What to run: an argv (no shell), or a shell command string. */
export type RunCommand = { argv: string[] } | { shell: string; login?: boolean };

export interface RunOptions {
  /** Environment overrides; `null` unsets a variable. */
  env?: Record<string, string | null>;
  /** Start from an empty environment instead of the agent's. */
  clearEnv?: boolean;
  cwd?: string;
  /** `'pipe'` gives a writable `stdin`; default `'closed'` (/dev/null). */
  stdin?: 'pipe' | 'closed';
  /** Guest-side timeout: the whole process group is SIGKILLed and `result.timedOut` is true. */
  timeoutMs?: number;
  /**
   * Run on a pseudo-terminal of this size: `stdin` is always piped (to the
   * terminal), `stdout` carries everything the terminal shows, `stderr` stays
   * empty, and `resize()` changes the size.
   */
  pty?: TerminalSize;
}

export interface ExecOptions extends RunOptions {
  /** Written to stdin, then EOF. */
  input?: string | Uint8Array;
}

export interface ExecResult extends RunResult {
  stdout: Buffer;
  stderr: Buffer;
}

export interface PutFileOptions extends CallOptions {
  /** Permission bits of the new file (default 0o644). */
  mode?: number;
  /** Byte count; required when the source is a stream. */
  size?: number;
}

export interface GetFileResult extends FileInfo {
  /** The file's bytes; consume it to keep the transfer going. Errors mid-transfer destroy it. */
  stream: Readable;
}

const noop = (): void => {};

export class AgentClient {
  /** The agent's handshake: versions, capabilities, limits, boot milestones. */
  readonly hello: AgentHello;
  /** Resolves (never rejects) with the reason once the connection is closed. */
  readonly closed: Promise<AgentError>;

  readonly #conn: Connection;

  private constructor(conn: Connection, hello: AgentHello) {
    this.#conn = conn;
    this.hello = hello;
    this.closed = conn.closed;
  }

  /**
   * Speaks the protocol over `duplex`. Resolves once the agent's HELLO arrived;
   * rejects with ERR_AGENT_PROTOCOL on a protocol version mismatch and
   * ERR_AGENT_TIMEOUT when no HELLO came in time. The client owns the duplex
   * from now on and destroys it on close.
   */
  static async connect(duplex: Duplex, opts: ConnectOptions = {}): Promise<AgentClient> {
    const conn = new Connection(duplex);
    if (opts.reset) conn.reset();
    const hello = await conn.handshake(opts.handshakeTimeoutMs ?? 10_000);
    return new AgentClient(conn, hello);
  }

  /** Connects to an agent serving `--listen unix:PATH`. */
  static async connectUnix(path: string, opts: ConnectOptions = {}): Promise<AgentClient> {
    const sock = netConnect(path);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', (err) =>
        reject(new AgentClosedError(`cannot connect to ${path}: ${err.message}`, err)),
      );
    });
    return AgentClient.connect(sock, opts);
  }

  /**
   * Connects to an agent behind a virtio-serial port whose host side is a Unix
   * socket (QEMU `-chardev socket,server=on`).
   *
   * The guest learns that the host detached only if it reads the port while
   * the host is away; a host that reattaches faster than that (or a guest
   * restored from a snapshot) still has the previous session open. So every
   * attempt starts with a RESET (see ConnectOptions.reset). An attempt that
   * sees no answer within `attemptTimeoutMs` (the guest is still booting, or
   * the previous host died inside a frame and the RESET was taken for its
   * payload) is dropped, and the next one starts after a growing pause, which
   * the guest does see as a detach, until `timeoutMs`. Also covers the socket
   * not existing yet while QEMU starts.
   */
  static async connectVirtioSerial(
    path: string,
    opts: VirtioSerialConnectOptions = {},
  ): Promise<AgentClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    const attemptMs = opts.attemptTimeoutMs ?? 2_000;
    let pause = 50;
    let lastError: unknown;
    while (Date.now() < deadline) {
      try {
        const left = Math.max(1, deadline - Date.now());
        return await AgentClient.connectUnix(path, {
          handshakeTimeoutMs: Math.min(attemptMs, left),
          reset: true,
        });
      } catch (err) {
        lastError = err;
      }
      await new Promise((r) => setTimeout(r, Math.min(pause, Math.max(0, deadline - Date.now()))));
      pause = Math.min(pause * 2, 1_000);
    }
    throw new AgentTimeoutError(
      `connect to the agent at ${path} (last error: ${(lastError as Error | undefined)?.message ?? 'none'})`,
      opts.timeoutMs ?? 60_000,
    );
  }

  /** True once the connection is closed; every call then rejects with ERR_AGENT_CLOSED. */
  get isClosed(): boolean {
    return this.#conn.failure !== undefined;
  }

  /** Closes the connection; the agent cancels this connection's commands and uploads. */
  close(): void {
    this.#conn.fail(new AgentClosedError('closed by the client'));
  }

  /**
   * Starts a command. Returns at once; the command may first wait for one of the
   * agent's concurrency slots (`hello.maxConcurrent`).
   */
  run(cmd: RunCommand, opts: RunOptions = {}): AgentProcess {
    const request: RunRequest = {
      ...('argv' in cmd ? { argv: cmd.argv } : { shell: cmd.shell, login: cmd.login }),
      env: opts.env,
      clearEnv: opts.clearEnv,
      cwd: opts.cwd,
      stdin: opts.stdin ?? 'closed',
      timeoutMs: opts.timeoutMs,
      pty: opts.pty,
    };
    if (request.pty) request.stdin = 'pipe';
    const link = this.#conn.open();
    const proc = new AgentProcess(link, request.stdin === 'pipe', request.pty !== undefined);
    this.#conn.attach(link.stream, proc);
    try {
      // An older agent would skip the pty field and run on pipes.
      if (request.pty) this.#require('pty', 'run');
      link.send({ type: 'run', stream: link.stream, request });
    } catch (err) {
      proc.onClose(err as AgentError);
    }
    return proc;
  }

  /** Runs a command to completion and collects its output. */
  async exec(cmd: RunCommand, opts: ExecOptions = {}): Promise<ExecResult> {
    const { input, ...runOpts } = opts;
    const p = this.run(cmd, { ...runOpts, stdin: input !== undefined ? 'pipe' : runOpts.stdin });
    const collect = async (r: Readable): Promise<Buffer> => {
      const parts: Buffer[] = [];
      for await (const c of r) parts.push(c as Buffer);
      return Buffer.concat(parts);
    };
    if (input !== undefined && p.stdin) p.stdin.end(input);
    const [stdout, stderr, result] = await Promise.all([collect(p.stdout), collect(p.stderr), p.result]);
    return { ...result, stdout, stderr };
  }

  /**
   * Writes a file atomically: the guest writes a temporary file next to `path`,
   * fsyncs it and renames it over `path`, so `path` never holds a partial file.
   */
  async putFile(
    path: string,
    data: string | Uint8Array | Readable,
    opts: PutFileOptions = {},
  ): Promise<{ size: number }> {
    let size: number;
    let source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
    if (typeof data === 'string' || data instanceof Uint8Array) {
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      size = buf.length;
      if (opts.size !== undefined && opts.size !== size)
        throw new AgentSizeMismatchError('put_file', opts.size, size);
      source = [buf];
    } else {
      if (opts.size === undefined)
        throw new TypeError('putFile: `size` is required when the source is a stream');
      size = opts.size;
      source = data;
    }
    const op = `put_file ${path}`;
    const conn = this.#conn;
    const link = conn.open();
    const credit = new OutboundCredit();
    return new Promise<{ size: number }>((resolve, reject) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const settle = (err: Error | null, value?: { size: number }): void => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        link.release();
        credit.fail(err ?? new Error('finished'));
        if (err) reject(err);
        else resolve(value!);
      };
      const abort = (err: Error): void => {
        if (settled) return;
        try {
          link.send({ type: 'cancel', stream: link.stream });
        } catch {
          // connection already gone
        }
        settle(err);
      };
      conn.attach(link.stream, {
        onMessage(m) {
          if (m.type === 'window' && m.channel === Channel.IN) credit.add(m.increment);
          else if (m.type === 'result') settle(null, decodePutResult(m.payload));
          else if (m.type === 'error') settle(errorFromRemote(m.error, op));
        },
        onClose: (err) => settle(err),
      });
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => abort(new AgentTimeoutError(op, opts.timeoutMs!)), opts.timeoutMs);
      }
      try {
        link.send({ type: 'put_file', stream: link.stream, path, size, mode: opts.mode });
      } catch (err) {
        settle(err as Error);
        return;
      }
      const pump = async (): Promise<void> => {
        let sent = 0;
        try {
          for await (const chunk of source) {
            if (settled) return;
            const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
            if (sent + buf.length > size) {
              abort(new AgentSizeMismatchError('put_file', size, sent + buf.length));
              return;
            }
            let off = 0;
            while (off < buf.length) {
              const n = await credit.acquire(Math.min(MAX_CHUNK, buf.length - off));
              await link.writable();
              if (settled) return;
              sent += n;
              link.send({
                type: 'data',
                stream: link.stream,
                data: buf.subarray(off, off + n),
                end: sent === size,
              });
              off += n;
            }
          }
          if (sent < size) abort(new AgentSizeMismatchError('put_file', size, sent));
        } catch (err) {
          abort(err as Error);
        }
      };
      pump().catch(noop);
    });
  }

  /**
   * Streams a file out of the guest. Resolves once the agent opened it (size,
   * mode, mtime known); the bytes follow on `stream`. Directories, FIFOs and
   * devices are rejected with ERR_AGENT_NOT_REGULAR_FILE before any data.
   * `timeoutMs` covers the whole transfer.
   */
  getFile(path: string, opts: CallOptions = {}): Promise<GetFileResult> {
    const op = `get_file ${path}`;
    const conn = this.#conn;
    const link = conn.open();
    return new Promise<GetFileResult>((resolve, reject) => {
      let opened = false;
      let over = false;
      let timer: NodeJS.Timeout | undefined;
      const stream = new InboundStream({
        window: link.window,
        grant: (bytes) => {
          if (!over)
            trySend(link, { type: 'window', stream: link.stream, channel: Channel.OUT, increment: bytes });
        },
        onAbandon: () => {
          if (over) return;
          trySend(link, { type: 'cancel', stream: link.stream });
          end(null);
        },
      });
      const end = (err: Error | null): void => {
        if (over) return;
        over = true;
        if (timer) clearTimeout(timer);
        link.release();
        if (!opened) reject(err ?? new AgentProtocolError(`${op}: ended before FILE_INFO`));
        else if (err) stream.destroy(err);
        else stream.finish();
      };
      conn.attach(link.stream, {
        onMessage(m) {
          if (m.type === 'file_info') {
            opened = true;
            resolve({ ...m.info, stream });
          } else if (m.type === 'data' && m.channel === Channel.OUT && m.data.length) {
            stream.deliver(m.data);
          } else if (m.type === 'result') {
            end(null);
          } else if (m.type === 'error') {
            end(errorFromRemote(m.error, op));
          }
        },
        onClose: (err) => end(err),
      });
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          trySend(link, { type: 'cancel', stream: link.stream });
          end(new AgentTimeoutError(op, opts.timeoutMs!));
        }, opts.timeoutMs);
      }
      try {
        link.send({ type: 'get_file', stream: link.stream, path });
      } catch (err) {
        end(err as Error);
      }
    });
  }

  /** Reads a whole file into memory. */
  async readFile(path: string, opts: CallOptions = {}): Promise<Buffer> {
    const { stream } = await this.getFile(path, opts);
    const parts: Buffer[] = [];
    for await (const c of stream) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }

  /** stat(2), or lstat(2) with `noFollow`. */
  stat(path: string, opts: CallOptions & { noFollow?: boolean } = {}): Promise<AgentStat> {
    return this.#conn.unary(
      `stat ${path}`,
      (stream) => ({ type: 'stat', stream, path, noFollow: opts.noFollow }),
      decodeStat,
      opts,
    );
  }

  /** Directory entries (without `.` and `..`), sorted by name. */
  async list(path: string, opts: CallOptions = {}): Promise<AgentDirEntry[]> {
    const entries = await this.#conn.unary(
      `list ${path}`,
      (stream) => ({ type: 'list', stream, path }),
      decodeList,
      opts,
    );
    return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** mkdir -p; `mode` (default 0o755) is applied exactly to the last component. */
  async mkdir(path: string, opts: CallOptions & { mode?: number } = {}): Promise<void> {
    await this.#conn.unary(
      `mkdir ${path}`,
      (stream) => ({ type: 'mkdir', stream, path, mode: opts.mode }),
      noop,
      opts,
    );
  }

  /**
   * Removes a file, a symlink (never what it points to) or an empty directory;
   * with `recursive`, a directory and everything in it. A missing path is
   * ERR_AGENT_REMOTE with `errnoName` ENOENT.
   */
  async remove(path: string, opts: CallOptions & { recursive?: boolean } = {}): Promise<void> {
    this.#require('remove', 'remove');
    await this.#conn.unary(
      `remove ${path}`,
      (stream) => ({ type: 'remove', stream, path, recursive: opts.recursive }),
      noop,
      opts,
    );
  }

  /** rename(2): replaces `to` if it exists (a directory only by an empty one). */
  async rename(from: string, to: string, opts: CallOptions = {}): Promise<void> {
    this.#require('rename', 'rename');
    await this.#conn.unary(
      `rename ${from}`,
      (stream) => ({ type: 'rename', stream, path: from, to }),
      noop,
      opts,
    );
  }

  /**
   * Watches a directory (with `recursive`, every directory under it, including
   * ones created later). Resolves once the agent armed the watch; rejects with
   * ERR_AGENT_NOT_DIRECTORY, ERR_AGENT_WATCH_LIMIT or ERR_AGENT_REMOTE (ENOENT).
   * `timeoutMs` bounds the arming only.
   */
  watch(path: string, opts: CallOptions & { recursive?: boolean } = {}): Promise<AgentWatch> {
    try {
      this.#require('watch', 'watch');
    } catch (err) {
      return Promise.reject(err);
    }
    const link = this.#conn.open();
    const w = new AgentWatch(link, path);
    this.#conn.attach(link.stream, w);
    try {
      link.send({ type: 'watch', stream: link.stream, path, recursive: opts.recursive });
    } catch (err) {
      w.onClose(err as AgentError);
    }
    if (opts.timeoutMs === undefined) return w.armed;
    const ms = opts.timeoutMs;
    return new Promise<AgentWatch>((resolve, reject) => {
      const timer = setTimeout(() => {
        void w.close();
        reject(new AgentTimeoutError(`watch ${path}`, ms));
      }, ms);
      w.armed.then(
        (armed) => {
          clearTimeout(timer);
          resolve(armed);
        },
        (err) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  /** Round trip to the agent; resolves with the elapsed milliseconds. Never waits behind busy slots. */
  async ping(opts: CallOptions = {}): Promise<number> {
    const t0 = performance.now();
    await this.#conn.unary('ping', (stream) => ({ type: 'ping', stream }), noop, opts);
    return performance.now() - t0;
  }

  /**
   * Asks the agent to stop: as PID 1 it terminates every process and powers off
   * (or reboots); otherwise it exits. Resolves when the agent acknowledged.
   */
  async shutdown(opts: CallOptions & { action?: ShutdownAction } = {}): Promise<void> {
    await this.#conn.unary(
      'shutdown',
      (stream) => ({ type: 'shutdown', stream, action: opts.action }),
      noop,
      opts,
    );
  }

  /** Throws ERR_AGENT_PROTOCOL when the agent's HELLO does not list `cap` (an older agent). */
  #require(cap: string, op: string): void {
    if (!this.hello.capabilities.includes(cap)) {
      throw new AgentProtocolError(
        `${op}: the agent (${this.hello.agentVersion}) has no '${cap}' capability`,
        {
          capability: cap,
        },
      );
    }
  }

  /** Applies a new network identity in the guest; resolves once it is applied. */
  async netConfig(config: NetConfig, opts: CallOptions = {}): Promise<void> {
    await this.#conn.unary('net_config', (stream) => ({ type: 'net_config', stream, config }), noop, opts);
  }

  /**
   * Sends a restored machine its new identity (src/protocol/handoff.ts).
   * Resolves when the agent has applied it — which says nothing about the
   * network: the caller waits for the ack datagram for that.
   */
  handoff(payload: Buffer, opts: CallOptions = {}): Promise<{ applyUs: number }> {
    return this.#conn.unary(
      'handoff',
      (stream) => ({ type: 'handoff', stream, payload }),
      decodeHandoffResult,
      opts,
    );
  }
}

function trySend(link: StreamLink, m: HostMessage): void {
  try {
    link.send(m);
  } catch {
    // connection closed: the stream's onClose reports it
  }
}

/** Frame I/O, stream table and lifecycle of one connection. */
class Connection {
  readonly closed: Promise<AgentError>;
  failure: AgentError | undefined;
  window = MAX_CHUNK * 4;

  readonly #duplex: Duplex;
  readonly #decoder = new FrameDecoder();
  readonly #streams = new Map<number, StreamHandler>();
  #nextId = 1;
  #corked = false;
  #drain: Promise<void> | undefined;
  #onHello: ((m: AgentMessage | AgentError) => void) | undefined;
  #resolveClosed!: (err: AgentError) => void;
  /** While set, incoming bytes are searched for this (RESET answer) and dropped until it is found. */
  #resetMarker: Buffer | undefined;
  #scanned: Buffer = Buffer.alloc(0);

  constructor(duplex: Duplex) {
    this.#duplex = duplex;
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    duplex.on('data', (chunk: Buffer) => this.#onData(chunk));
    duplex.on('end', () => {
      if (this.#decoder.pendingBytes > 0) {
        this.fail(new AgentProtocolError('agent connection ended inside a frame'));
      } else {
        this.fail(new AgentClosedError('agent closed the connection'));
      }
    });
    duplex.on('close', () => this.fail(new AgentClosedError('agent connection closed')));
    duplex.on('error', (err) =>
      this.fail(new AgentClosedError(`agent connection failed: ${err.message}`, err)),
    );
  }

  /** Sends RESET with a fresh nonce and ignores input until the agent's answer. */
  reset(): void {
    const nonce = randomBytes(RESET_NONCE_BYTES);
    this.#resetMarker = Buffer.concat([RESET_MAGIC, nonce]);
    this.send({ type: 'reset', stream: 0, nonce });
  }

  handshake(timeoutMs: number): Promise<AgentHello> {
    return new Promise<AgentHello>((resolve, reject) => {
      const timer = setTimeout(() => {
        const err = new AgentTimeoutError('agent handshake', timeoutMs);
        this.fail(err);
      }, timeoutMs);
      this.#onHello = (m) => {
        clearTimeout(timer);
        this.#onHello = undefined;
        if (!('type' in m)) {
          reject(m);
          return;
        }
        if (m.type !== 'hello') {
          const err = new AgentProtocolError(`expected HELLO, got ${m.type}`);
          this.fail(err);
          reject(err);
          return;
        }
        if (m.hello.protocolVersion !== CLIENT_PROTOCOL_VERSION) {
          const err = new AgentProtocolError(
            `agent speaks protocol ${m.hello.protocolVersion}, this client ${CLIENT_PROTOCOL_VERSION}`,
            { agentVersion: m.hello.agentVersion, protocolVersion: m.hello.protocolVersion },
          );
          this.fail(err);
          reject(err);
          return;
        }
        if (m.hello.window > 0) this.window = m.hello.window;
        resolve(m.hello);
      };
      if (this.failure) this.#onHello(this.failure);
    });
  }

  /** Allocates a stream id and the link its operation talks through. */
  open(): StreamLink {
    const stream = this.#allocId();
    this.#streams.set(stream, PLACEHOLDER);
    let released = false;
    return {
      stream,
      window: this.window,
      send: (m) => this.send(m),
      writable: () => this.writable(),
      release: () => {
        // Once released the id may belong to a newer request: never delete twice.
        if (released) return;
        released = true;
        this.#streams.delete(stream);
      },
    };
  }

  attach(stream: number, handler: StreamHandler): void {
    if (this.failure) {
      this.#streams.delete(stream);
      handler.onClose(this.failure);
      return;
    }
    this.#streams.set(stream, handler);
  }

  send(m: HostMessage): void {
    if (this.failure) throw this.failure;
    const bufs = encodeHostMessage(m);
    if (!this.#corked) {
      // Frames queued in the same tick leave in one write.
      this.#corked = true;
      this.#duplex.cork();
      process.nextTick(() => {
        this.#corked = false;
        this.#duplex.uncork();
      });
    }
    for (const b of bufs) this.#duplex.write(b);
  }

  writable(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (!this.#duplex.writableNeedDrain) return Promise.resolve();
    this.#drain ??= new Promise<void>((resolve) => {
      const done = (): void => {
        this.#duplex.off('drain', done);
        this.#drain = undefined;
        resolve();
      };
      this.#duplex.on('drain', done);
      this.closed.then(done);
    });
    return this.#drain.then(() => {
      if (this.failure) throw this.failure;
    });
  }

  /** A request answered by one RESULT or ERROR. */
  unary<T>(
    op: string,
    build: (stream: number) => HostMessage,
    decode: (payload: Buffer) => T,
    opts: CallOptions,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const link = this.open();
      let timer: NodeJS.Timeout | undefined;
      let over = false;
      const end = (err: Error | null, value?: T): void => {
        if (over) return;
        over = true;
        if (timer) clearTimeout(timer);
        link.release();
        if (err) reject(err);
        else resolve(value as T);
      };
      this.attach(link.stream, {
        onMessage(m) {
          if (m.type === 'result') {
            try {
              end(null, decode(m.payload));
            } catch (err) {
              end(err as Error);
            }
          } else if (m.type === 'error') {
            end(errorFromRemote(m.error, op));
          }
        },
        onClose: (err) => end(err),
      });
      if (over) return;
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => end(new AgentTimeoutError(op, opts.timeoutMs!)), opts.timeoutMs);
      }
      try {
        link.send(build(link.stream));
      } catch (err) {
        end(err as Error);
      }
    });
  }

  fail(err: AgentError): void {
    if (this.failure) return;
    this.failure = err;
    this.#onHello?.(err);
    const handlers = [...this.#streams.values()];
    this.#streams.clear();
    for (const h of handlers) h.onClose(err);
    this.#duplex.destroy();
    this.#resolveClosed(err);
  }

  #allocId(): number {
    for (;;) {
      const id = this.#nextId;
      this.#nextId = id >= 0xffffffff ? 1 : id + 1;
      if (!this.#streams.has(id)) return id;
    }
  }

  #onData(chunk: Buffer): void {
    if (this.failure) return;
    if (this.#resetMarker) {
      const marker = this.#resetMarker;
      const seen = Buffer.concat([this.#scanned, chunk]);
      const at = seen.indexOf(marker);
      if (at < 0) {
        // Keep only what could be the start of a marker split across reads.
        this.#scanned = seen.subarray(Math.max(0, seen.length - marker.length + 1));
        return;
      }
      this.#resetMarker = undefined;
      this.#scanned = Buffer.alloc(0);
      chunk = seen.subarray(at + marker.length);
    }
    let frames: ReturnType<FrameDecoder['push']>;
    try {
      frames = this.#decoder.push(chunk);
    } catch (err) {
      this.fail(new AgentProtocolError((err as Error).message));
      return;
    }
    for (const f of frames) {
      let m: AgentMessage;
      try {
        m = decodeAgentFrame(f);
      } catch (err) {
        this.fail(new AgentProtocolError((err as Error).message));
        return;
      }
      if (this.#onHello) {
        this.#onHello(m);
        continue;
      }
      if (m.stream === 0) {
        if (m.type === 'error') {
          this.fail(
            new AgentProtocolError(`agent reset the connection: ${m.error.code}: ${m.error.message}`, {
              remoteCode: m.error.code,
            }),
          );
          return;
        }
        continue;
      }
      this.#streams.get(m.stream)?.onMessage(m);
      if (this.failure) return;
    }
  }
}

/** Reserves an id between open() and attach(). */
const PLACEHOLDER: StreamHandler = { onMessage: noop, onClose: noop };
