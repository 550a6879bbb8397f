/**
 * envd's `process.Process` service over a sandbox's process table.
 *
 *   Start        spawn (argv = cmd + args; env; cwd, default the user's home;
 *                optional PTY; stdin open unless the client says no), adopt
 *                into the table, stream: start{pid}, data…, end
 *   Connect      reattach by pid or tag: start{pid}, then output from now, end
 *   List         running processes with their config and tag
 *   SendInput    bytes to stdin (or the PTY), awaited under the input window
 *   StreamInput  the same as a client stream (HTTP/2 clients)
 *   CloseStdin   EOF on stdin
 *   SendSignal   SIGTERM / SIGKILL to the process group
 *   Update       PTY resize
 *
 * A client that goes away stops following; its process runs on (the table
 * owns it). Every error leaves as a Connect error with a code mapped from
 * actorvm's stable codes (errors.ts).
 */
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect';
import { Code, ConnectError } from '@connectrpc/connect';
import type { ProcessResult } from '../../../api/process.js';
import type { ManagedProcess, ProcessOutcome } from '../../../api/process-table.js';
import {
  type Process,
  type ProcessInput,
  type ProcessSelector,
  Signal,
} from '../../../protocol/envd/index.js';
import { toConnectError } from '../../errors.js';
import type { Found } from '../../sandboxes.js';
import type { Daemon } from '../../server.js';
import { basicUser } from './filesystem-service.js';
import { type Followed, follow } from './follow.js';
import { guestPath } from './guest.js';
import { SANDBOX_HEADER, sandboxFromHeader } from './sandbox-of.js';

/**
 * E2B's SDK runs every command as `/bin/bash -l -c CMD` (and PTYs as
 * `/bin/bash -i -l`). Images without bash (the busybox base) run them with
 * /bin/sh, which takes the same flags; looked up once per sandbox.
 */
const hasBash = new WeakMap<object, Promise<boolean>>();
async function executable(f: Found, cmd: string): Promise<string> {
  if (cmd !== '/bin/bash') return cmd;
  let known = hasBash.get(f.record);
  if (!known) {
    known = f.sandbox.files.stat('/bin/bash').then(
      () => true,
      () => false,
    );
    hasBash.set(f.record, known);
  }
  return (await known) ? cmd : '/bin/sh';
}

export function processService(d: Daemon): ServiceImpl<typeof Process> {
  const found = (ctx: HandlerContext): Found => {
    try {
      return sandboxFromHeader(d, ctx.requestHeader.get(SANDBOX_HEADER));
    } catch (err) {
      throw toConnectError(err);
    }
  };
  /** The selected process; `running` for calls that act on it (a finished one is then not found). */
  const select = (f: Found, sel: ProcessSelector | undefined, running = true): ManagedProcess => {
    let mp: ManagedProcess;
    try {
      const s = sel?.selector;
      if (s?.case === 'pid') mp = f.record.processes.find({ pid: s.value });
      else if (s?.case === 'tag') mp = f.record.processes.find({ tag: s.value });
      else throw new ConnectError('a process selector (pid or tag) is required', Code.InvalidArgument);
    } catch (err) {
      throw toConnectError(err);
    }
    if (running && !mp.running) throw new ConnectError(`process ${mp.pid} has ended`, Code.NotFound);
    return mp;
  };
  const write = async (mp: ManagedProcess, input: ProcessInput | undefined): Promise<void> => {
    const bytes = input?.input.value;
    if (!bytes) return;
    const stdin = mp.proc.stdin;
    if (!stdin || stdin.writableEnded || !mp.running) {
      throw new ConnectError(`process ${mp.pid} has no open stdin`, Code.FailedPrecondition);
    }
    await new Promise<void>((resolve, reject) =>
      stdin.write(bytes, (err) => (err ? reject(err) : resolve())),
    );
  };

  return {
    async *start(req, ctx) {
      const f = found(ctx);
      const cfg = req.process;
      if (!cfg || cfg.cmd === '') throw new ConnectError('process.cmd is required', Code.InvalidArgument);
      const size = req.pty?.size;
      const pty = size ? { cols: size.cols, rows: size.rows } : undefined;
      const withStdin = pty !== undefined || req.stdin !== false;
      let mp: ManagedProcess;
      try {
        const proc = f.sandbox.spawn([await executable(f, cfg.cmd), ...cfg.args], {
          env: cfg.envs,
          cwd: guestPath(cfg.cwd, basicUser(ctx.requestHeader.get('authorization'))),
          stdin: withStdin ? 'pipe' : 'closed',
          ...(pty ? { pty } : {}),
        });
        mp = await f.record.processes.adopt(
          proc,
          { cmd: cfg.cmd, args: cfg.args, envs: cfg.envs, cwd: cfg.cwd },
          { tag: req.tag, pty: pty !== undefined },
        );
      } catch (err) {
        throw toConnectError(err);
      }
      d.metrics.execs.inc({ route: 'envd' });
      yield { event: { event: { case: 'start', value: { pid: mp.pid } } } };
      for await (const ev of follow(mp, ctx.signal)) yield { event: eventOf(ev) };
    },

    async *connect(req, ctx) {
      // Reattaching to a process that just ended still gets its end: an exit is never lost.
      const mp = select(found(ctx), req.process, false);
      yield { event: { event: { case: 'start', value: { pid: mp.pid } } } };
      for await (const ev of follow(mp, ctx.signal)) yield { event: eventOf(ev) };
    },

    list(_req, ctx) {
      const f = found(ctx);
      return {
        processes: f.record.processes.list().map((p) => ({
          pid: p.pid,
          tag: p.tag,
          config: { cmd: p.config.cmd, args: p.config.args, envs: p.config.envs, cwd: p.config.cwd },
        })),
      };
    },

    async sendInput(req, ctx) {
      await write(select(found(ctx), req.process), req.input);
      return {};
    },

    async streamInput(reqs, ctx) {
      const f = found(ctx);
      let mp: ManagedProcess | undefined;
      for await (const r of reqs) {
        if (r.event.case === 'start') mp = select(f, r.event.value.process);
        else if (r.event.case === 'data') {
          if (!mp) throw new ConnectError('StreamInput must start with a start event', Code.InvalidArgument);
          await write(mp, r.event.value.input);
        }
      }
      return {};
    },

    closeStdin(req, ctx) {
      const mp = select(found(ctx), req.process);
      if (mp.pty) throw new ConnectError('a PTY has no stdin to close (send ^D)', Code.FailedPrecondition);
      mp.proc.stdin?.end();
      return {};
    },

    async sendSignal(req, ctx) {
      const mp = select(found(ctx), req.process);
      // envd's enum names SIGTERM and SIGKILL; its values are the signal numbers, and proto3
      // enums are open, so a client may send any other number (actorvm's remote client does).
      const num: number = req.signal;
      if (num === Signal.UNSPECIFIED) throw new ConnectError('a signal is required', Code.InvalidArgument);
      try {
        await mp.proc.signal(num);
      } catch (err) {
        throw toConnectError(err);
      }
      return {};
    },

    async update(req, ctx) {
      const mp = select(found(ctx), req.process);
      const size = req.pty?.size;
      if (size) {
        if (!mp.pty) throw new ConnectError(`process ${mp.pid} has no PTY`, Code.FailedPrecondition);
        try {
          await mp.proc.resize({ cols: size.cols, rows: size.rows });
        } catch (err) {
          throw toConnectError(err);
        }
      }
      return {};
    },
  };
}

/** A followed event as envd's ProcessEvent. */
function eventOf(ev: Followed) {
  if (ev.type === 'data') {
    return { event: { case: 'data' as const, value: { output: { case: ev.kind, value: ev.data } } } };
  }
  return { event: { case: 'end' as const, value: endOf(ev.outcome) } };
}

/** envd's end event: Go's exec status words, which the SDK shows in CommandExitError. */
function endOf(outcome: ProcessOutcome) {
  if (!outcome.ok) return { exitCode: -1, exited: false, status: 'error', error: outcome.error.message };
  const r: ProcessResult = outcome.result;
  if (r.exitCode !== null) {
    return {
      exitCode: r.exitCode,
      exited: true,
      status: `exit status ${r.exitCode}`,
      error: r.timedOut ? 'timed out' : undefined,
    };
  }
  const sig = (r.signal ?? 'SIGKILL').replace(/^SIG/, '').toLowerCase();
  return {
    exitCode: -1,
    exited: false,
    status: `signal: ${sig === 'kill' ? 'killed' : sig}`,
    error: undefined,
  };
}
