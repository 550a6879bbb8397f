/**
 * How a machine ends, the same for both backends but for how they ask for a
 * clean power-off, what they kill and what they free.
 *
 * stop(): log; while the process lives and there is a grace period, let the
 * backend ask for a power-off; kill what is still alive; wait for the exit;
 * free the machine's resources; log. It runs once: every later or concurrent
 * call gets the same promise. The exit itself is logged whenever it comes,
 * marked expected when stop() asked for it.
 */
import type { Logger } from '../../../runtime/logger.js';
import { DEFAULT_GRACE_MS } from './machine.js';
import type { MachineProcess } from './machine-process.js';

export interface StopSteps {
  id: string;
  /** The pid the logs report. */
  pid: number;
  log: Logger;
  /** What the log messages call it: 'machine' or 'sandbox'. */
  noun: string;
  process: MachineProcess;
  /** Asks for a clean power-off, waiting up to `graceMs`. Only called while the process lives and graceMs > 0. */
  powerOff(graceMs: number): Promise<void>;
  /** Kills what is left (SIGKILL); called only while the process lives. */
  kill(): void;
  /** Frees everything the machine held; the process has exited. */
  cleanup(): Promise<void>;
}

/** Logs the machine's exit from now on; returns its stop(). */
export function stopSequence(steps: StopSteps): (opts?: { graceMs?: number }) => Promise<void> {
  const { id, pid, log, noun, process: proc } = steps;
  let stopping = false;
  let stopped: Promise<void> | undefined;
  void proc.exited.then((exit) =>
    log.info(
      { event: 'vm.exited', id, pid, code: exit.code, signal: exit.signal, expected: stopping },
      `${noun} ${id} exited`,
    ),
  );
  return (opts = {}) => {
    stopped ??= (async () => {
      stopping = true;
      const graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
      log.info({ event: 'vm.stopping', id, graceMs }, `stopping ${noun} ${id}`);
      if (proc.alive() && graceMs > 0) await steps.powerOff(graceMs);
      if (proc.alive()) steps.kill();
      await proc.exited;
      await steps.cleanup();
      log.info({ event: 'vm.stopped', id }, `${noun} ${id} stopped`);
    })();
    return stopped;
  };
}
