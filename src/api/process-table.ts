/**
 * The processes of one sandbox that outlive whoever started them.
 *
 * A command started through the daemon (an E2B `commands.run`, a background
 * process, a PTY) must keep running when the HTTP client that started it goes
 * away, be listed with its pid, command and tag, and be reattachable: a later
 * client sees its output from the moment it attaches and always learns how it
 * ended. So the table, not the client, owns the SandboxProcess:
 *
 * - The table reads stdout/stderr itself and fans every chunk out to the
 *   current subscribers. With no subscriber the bytes are dropped (nobody
 *   asked to keep them; E2B behaves the same), so a detached process never
 *   blocks on a full pipe and never costs memory.
 * - A slow subscriber takes a *hold*: while any hold is out the table stops
 *   reading, which pauses the command through the credit windows below (the
 *   agent stops reading its pipe). Holds are released when the subscriber's
 *   socket drains or closes, so a vanished client cannot freeze a process.
 * - An ended process stays in the table as an outcome (the last
 *   MAX_ENDED_KEPT of them), so a client that reattaches after the exit gets
 *   the end event instead of "no such process".
 */
import { EventEmitter } from 'node:events';
import { ActorvmError } from '../errors.js';
import type { Logger } from '../runtime/logger.js';
import type { ProcessResult, SandboxProcess } from './process.js';

/** Ended processes remembered per sandbox for late reattach. */
export const MAX_ENDED_KEPT = 64;
/** Running processes one sandbox may have in its table. */
export const MAX_MANAGED_PROCESSES = 1024;

export const ProcessTableErrorCode = {
  /** No process with that pid or tag in this sandbox. */
  NOT_FOUND: 'ERR_PROCESS_NOT_FOUND',
  /** MAX_MANAGED_PROCESSES are running already. */
  TOO_MANY: 'ERR_PROCESS_TOO_MANY',
} as const;

export class ProcessTableError extends ActorvmError {}

/** What a process was started as (E2B's ProcessConfig). */
export interface ProcessConfig {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string;
}

export type OutputKind = 'stdout' | 'stderr' | 'pty';

/** How a managed process ended: a result, or the typed error that stopped it from running. */
export type ProcessOutcome =
  | { ok: true; result: ProcessResult }
  | { ok: false; error: { code: string; message: string } };

/**
 * One process in the table. Events: 'data' (kind, chunk), 'end' (outcome).
 * Listeners attach and detach freely; 'end' fires once, after every chunk.
 */
export class ManagedProcess extends EventEmitter {
  outcome: ProcessOutcome | undefined;
  private holds = 0;

  constructor(
    readonly pid: number,
    readonly tag: string | undefined,
    readonly config: ProcessConfig,
    readonly pty: boolean,
    readonly proc: SandboxProcess,
  ) {
    super();
    // Subscribers come and go; none of them may turn into an unhandled 'error'.
    this.setMaxListeners(0);
  }

  get running(): boolean {
    return this.outcome === undefined;
  }

  /** Stops reading the command's output until the returned function is called (once). */
  hold(): () => void {
    if (this.holds++ === 0) {
      this.proc.stdout.pause();
      this.proc.stderr.pause();
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.holds === 0) {
        this.proc.stdout.resume();
        this.proc.stderr.resume();
      }
    };
  }
}

/** The table of one sandbox. */
export class ProcessTable {
  private readonly running = new Map<number, ManagedProcess>();
  private readonly ended: ManagedProcess[] = [];
  /** Adoptions waiting for their pid: they count against the cap already. */
  private starting = 0;

  /** `log` gets process.started / process.ended events (bound to the sandbox by the caller). */
  constructor(private readonly log?: Logger) {}

  /**
   * Adopts a started process: resolves once it has a pid (or rejects with why
   * it could not start). From then on the table reads its output.
   */
  async adopt(
    proc: SandboxProcess,
    config: ProcessConfig,
    opts: { tag?: string; pty?: boolean } = {},
  ): Promise<ManagedProcess> {
    if (this.running.size + this.starting >= MAX_MANAGED_PROCESSES) {
      proc.cancel();
      throw new ProcessTableError(
        ProcessTableErrorCode.TOO_MANY,
        `a sandbox runs at most ${MAX_MANAGED_PROCESSES} managed processes`,
      );
    }
    this.starting++;
    let pid: number;
    try {
      pid = await proc.pid;
    } finally {
      this.starting--;
    }
    const mp = new ManagedProcess(pid, opts.tag, config, opts.pty ?? false, proc);
    this.running.set(pid, mp);
    this.log?.info(
      { event: 'process.started', pid, tag: opts.tag, cmd: config.cmd, pty: mp.pty },
      'process started',
    );
    const stdoutKind: OutputKind = mp.pty ? 'pty' : 'stdout';
    proc.stdout.on('data', (d: Buffer) => mp.emit('data', stdoutKind, d));
    proc.stderr.on('data', (d: Buffer) => mp.emit('data', 'stderr', d));
    const streamsEnded = Promise.all([
      new Promise((r) => proc.stdout.once('end', r)),
      new Promise((r) => proc.stderr.once('end', r)),
    ]);
    proc.result.then(
      async (result) => {
        await streamsEnded;
        this.finish(mp, { ok: true, result });
      },
      (err: { code?: string; message?: string }) =>
        this.finish(mp, {
          ok: false,
          error: { code: err.code ?? 'ERR_INTERNAL', message: err.message ?? String(err) },
        }),
    );
    return mp;
  }

  /** Running processes, oldest first. */
  list(): ManagedProcess[] {
    return [...this.running.values()];
  }

  /** A running or recently ended process by pid or tag. Throws ERR_PROCESS_NOT_FOUND. */
  find(selector: { pid?: number; tag?: string }): ManagedProcess {
    const match = (p: ManagedProcess) =>
      selector.pid !== undefined
        ? p.pid === selector.pid
        : selector.tag !== undefined && p.tag === selector.tag;
    const found = [...this.running.values()].find(match) ?? [...this.ended].reverse().find(match);
    if (!found) {
      const what = selector.pid !== undefined ? `pid ${selector.pid}` : `tag '${selector.tag}'`;
      throw new ProcessTableError(ProcessTableErrorCode.NOT_FOUND, `no process with ${what}`, selector);
    }
    return found;
  }

  /** The sandbox is gone: every subscriber learns it from its process's end. */
  close(): void {
    for (const mp of this.running.values()) mp.proc.cancel();
  }

  private finish(mp: ManagedProcess, outcome: ProcessOutcome): void {
    mp.outcome = outcome;
    // The guest may have reused the pid for a newer process by now.
    if (this.running.get(mp.pid) === mp) this.running.delete(mp.pid);
    this.log?.info(
      {
        event: 'process.ended',
        pid: mp.pid,
        tag: mp.tag,
        ...(outcome.ok ? outcome.result : { error: outcome.error }),
      },
      'process ended',
    );
    this.ended.push(mp);
    if (this.ended.length > MAX_ENDED_KEPT) this.ended.shift();
    mp.emit('end', outcome);
    mp.removeAllListeners('data');
  }
}
