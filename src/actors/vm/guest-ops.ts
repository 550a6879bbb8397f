/**
 * The guest operations a VM actor runs through its agent on behalf of the
 * main thread — commands (on pipes or a pty), file writes, file reads,
 * directory watches — with their bytes streamed over the rings under a credit
 * window each way (see messages.ts), so neither a slow reader on the main
 * thread nor a slow guest can make the other side buffer without bound.
 *
 * A watch's events are re-packed into records (one `out` per burst, a burst
 * being what arrived in one tick) and paced by the same window: while the
 * main thread is behind, the agent watch gets no credit back, and the agent's
 * bounded queue drops and reports the gap instead of anything growing here.
 */
import { PassThrough, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { AgentClient } from '../../agent/client.js';
import type { AgentProcess } from '../../agent/process.js';
import type { AgentWatch } from '../../agent/watch.js';
import { encodeWatchEvents, type WatchRecord } from '../../protocol/agent-messages.js';
import type { ActorRef } from '../../runtime/actor-ref.js';
import {
  type ExecRequest,
  OUT_FILE,
  OUT_STDERR,
  OUT_STDOUT,
  OUT_WATCH,
  type SinkMessage,
  STREAM_WINDOW,
} from './messages.js';

type Sink = ActorRef<SinkMessage, void>;

/** What the window pauses: a Readable, or an agent watch (which then withholds credit). */
interface Pausable {
  pause(): unknown;
  resume(): unknown;
}

/** One running operation: where its input goes and how its output is paced. */
interface Op {
  /** Output bytes sent to the main thread and not yet acknowledged. */
  unacked: number;
  /** Output sources to pause while the window is full. */
  sources: Pausable[];
  paused: boolean;
  /** Where `input` bytes go (stdin or the put's content), if anywhere. */
  input?: NodeJS.WritableStream & { writableNeedDrain?: boolean };
  proc?: AgentProcess;
  watch?: AgentWatch;
  /** Input bytes accepted while the destination was full, credited on its 'drain'. */
  owedCredit: number;
  drainArmed: boolean;
}

const errorJson = (err: unknown): string => {
  const e = err as { code?: string; message?: string; details?: unknown };
  return JSON.stringify({
    error: { code: e?.code ?? 'ERR_INTERNAL', message: e?.message ?? String(err), details: e?.details },
  });
};

export class GuestOps {
  private readonly ops = new Map<number, Op>();
  /** Called when the number of running operations changes (the VM is busy while > 0). */
  onActivity: (active: number) => void = () => {};

  constructor(
    private readonly agent: AgentClient,
    private readonly sink: Sink,
    private readonly log: Logger,
  ) {}

  get active(): number {
    return this.ops.size;
  }

  exec(id: number, req: ExecRequest): void {
    const proc = this.agent.run(req.cmd, {
      env: req.env as Record<string, string>,
      cwd: req.cwd,
      timeoutMs: req.timeoutMs,
      stdin: req.stdin ? 'pipe' : 'closed',
      pty: req.pty,
    });
    const op = this.open(id, { unacked: 0, sources: [proc.stdout, proc.stderr], paused: false, proc });
    if (proc.stdin) op.input = proc.stdin;
    this.pump(id, op, proc.stdout, OUT_STDOUT);
    this.pump(id, op, proc.stderr, OUT_STDERR);
    proc.pid.then(
      (pid) => this.sink.tell({ type: 'started', id, info: JSON.stringify({ pid }) }),
      () => {},
    );
    const drained = Promise.all([ended(proc.stdout), ended(proc.stderr)]);
    proc.result.then(
      async (result) => {
        await drained; // every output byte is sent before the result
        this.finish(id, JSON.stringify(result));
      },
      (err) => this.finish(id, errorJson(err)),
    );
  }

  put(id: number, path: string, mode: number, size: number): void {
    const content = new PassThrough({ highWaterMark: 256 * 1024 });
    this.open(id, { unacked: 0, sources: [], paused: false, input: content });
    this.agent.putFile(path, content, { mode, size }).then(
      (r) => this.finish(id, JSON.stringify(r)),
      (err) => {
        content.destroy();
        this.finish(id, errorJson(err));
      },
    );
  }

  get(id: number, path: string): void {
    const op = this.open(id, { unacked: 0, sources: [], paused: false });
    this.agent.getFile(path).then(
      (file) => {
        op.sources.push(file.stream);
        this.sink.tell({
          type: 'started',
          id,
          info: JSON.stringify({ size: file.size, mode: file.mode, mtimeMs: file.mtimeMs }),
        });
        this.pump(id, op, file.stream, OUT_FILE);
        ended(file.stream).then(
          () => this.finish(id, JSON.stringify({ size: file.size })),
          (err) => this.finish(id, errorJson(err)),
        );
      },
      (err) => this.finish(id, errorJson(err)),
    );
  }

  /** Watches a directory; events go to the sink as OUT_WATCH records. */
  watch(id: number, path: string, recursive: boolean): void {
    const op = this.open(id, { unacked: 0, sources: [], paused: false });
    this.agent.watch(path, { recursive }).then(
      (w) => {
        if (!this.ops.has(id)) {
          void w.close(); // ended (the VM is going away) while arming
          return;
        }
        op.watch = w;
        op.sources.push(w);
        this.sink.tell({ type: 'started', id, info: JSON.stringify({ directories: w.directories }) });
        let burst: WatchRecord[] = [];
        const flush = (): void => {
          const data = encodeWatchEvents(burst);
          burst = [];
          op.unacked += data.length;
          this.sink.tell({ type: 'out', id, channel: OUT_WATCH, data });
          if (op.unacked >= STREAM_WINDOW && !op.paused) {
            op.paused = true;
            w.pause();
          }
        };
        const add = (r: WatchRecord): void => {
          if (burst.length === 0) process.nextTick(flush);
          burst.push(r);
        };
        w.on('event', add);
        w.on('overflow', () => add({ type: 'overflow' }));
        w.ended.then(
          (reason) => process.nextTick(() => this.finish(id, JSON.stringify({ reason }))),
          (err) => process.nextTick(() => this.finish(id, errorJson(err))),
        );
      },
      (err) => this.finish(id, errorJson(err)),
    );
  }

  /** Input bytes (a ring view: copied before it is kept). */
  input(id: number, data: Uint8Array, end: boolean): void {
    const op = this.ops.get(id);
    const sink = op?.input;
    if (!sink) return; // the operation ended (or never took input): nothing to deliver to
    const n = data.byteLength;
    if (n > 0) {
      const more = sink.write(Buffer.from(data));
      // Credit returns once the agent side accepted the bytes.
      if (more && op.owedCredit === 0) this.sink.tell({ type: 'credit', id, bytes: n });
      else {
        op.owedCredit += n;
        if (!op.drainArmed) {
          op.drainArmed = true;
          sink.once('drain', () => {
            op.drainArmed = false;
            const owed = op.owedCredit;
            op.owedCredit = 0;
            this.sink.tell({ type: 'credit', id, bytes: owed });
          });
        }
      }
    }
    if (end) sink.end();
  }

  ack(id: number, bytes: number): void {
    const op = this.ops.get(id);
    if (!op) return;
    op.unacked -= bytes;
    if (op.paused && op.unacked < STREAM_WINDOW) {
      op.paused = false;
      for (const s of op.sources) s.resume();
    }
  }

  /** Signals a command's process group; a number the agent client refuses is logged, the command left alone. */
  signal(id: number, signal: number): void {
    try {
      this.ops.get(id)?.proc?.signal(signal);
    } catch (err) {
      this.log.warn({ event: 'vm.bad_signal', id, signal, err }, 'signal refused');
    }
  }

  /** A new terminal size for a pty command; a refused one is logged, the command left alone. */
  resize(id: number, cols: number, rows: number): void {
    try {
      this.ops.get(id)?.proc?.resize(cols, rows);
    } catch (err) {
      this.log.warn({ event: 'vm.bad_resize', id, cols, rows, err }, 'resize refused');
    }
  }

  /** Kills a command; closes a watch; abandons a file read or write (the agent frees its slot). */
  cancel(id: number): void {
    const op = this.ops.get(id);
    if (!op) return;
    op.proc?.cancel();
    if (op.watch) void op.watch.close();
    if (!op.proc && !op.watch) {
      for (const s of op.sources) (s as unknown as Readable).destroy?.();
      (op.input as PassThrough | undefined)?.destroy(new Error('the write was abandoned'));
    }
  }

  /** Ends operation `id` with `err` (it could not start: a request the agent client refused). */
  fail(id: number, err: unknown): void {
    if (this.ops.has(id)) this.finish(id, errorJson(err));
    else this.sink.tell({ type: 'done', id, result: errorJson(err) });
  }

  /** The VM is going away: every operation ends with this error. */
  abortAll(err: unknown): void {
    for (const [id, op] of [...this.ops]) {
      if (op.watch) void op.watch.close();
      this.finish(id, errorJson(err));
    }
  }

  private open(id: number, fields: Omit<Op, 'owedCredit' | 'drainArmed'>): Op {
    const op: Op = { ...fields, owedCredit: 0, drainArmed: false };
    this.ops.set(id, op);
    this.onActivity(this.ops.size);
    return op;
  }

  private finish(id: number, result: string): void {
    if (!this.ops.delete(id)) return;
    this.sink.tell({ type: 'done', id, result });
    this.onActivity(this.ops.size);
  }

  /** Forwards a source's chunks as `out` messages, pausing on a full window or a full ring. */
  private pump(id: number, op: Op, source: Readable, channel: number): void {
    source.on('data', (chunk: Buffer) => {
      op.unacked += chunk.length;
      const accepted = this.sink.tell({ type: 'out', id, channel, data: chunk });
      if (op.unacked >= STREAM_WINDOW && !op.paused) {
        op.paused = true;
        for (const s of op.sources) s.pause();
      }
      if (!accepted && !op.paused) {
        source.pause();
        void this.sink.writable().then(() => {
          if (!op.paused) source.resume();
        });
      }
    });
    source.on('error', (err) =>
      this.log.debug({ event: 'vm.op_stream_error', id, err }, 'operation stream error'),
    );
  }
}

function ended(stream: Readable): Promise<void> {
  if (stream.readableEnded) return Promise.resolve();
  return new Promise((resolve, reject) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', reject);
  });
}
