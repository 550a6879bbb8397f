/**
 * The host process behind a machine (QEMU, or unshare for a namespace
 * sandbox), watched the same way by both backends: its stdout and stderr go
 * into the console ring — boot messages and setup errors are what a failure
 * report needs — and its end becomes a promise that never rejects (a spawn
 * error counts as an exit without code or signal).
 */
import type { ChildProcess } from 'node:child_process';
import type { ConsoleBuffer } from './console-buffer.js';
import type { MachineExit } from './machine.js';

export interface MachineProcess {
  /** Settles once, when the process has exited (or could not be spawned). */
  readonly exited: Promise<MachineExit>;
  /** Neither exited nor killed yet. */
  alive(): boolean;
  /** Whether the process exits within `ms`. */
  waitExit(ms: number): Promise<boolean>;
}

export function watchMachineProcess(child: ChildProcess, consoleBuf: ConsoleBuffer): MachineProcess {
  // A process killed while a pipe or socketpair to it holds unread bytes
  // resets that end (ECONNRESET). The exit is the story we report; without a
  // listener the stream's 'error' would take the whole host down.
  for (const stream of child.stdio) stream?.on('error', () => {});
  child.stdout?.on('data', (d: Buffer) => consoleBuf.write(d));
  child.stderr?.on('data', (d: Buffer) => consoleBuf.write(d));
  const exited = new Promise<MachineExit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  return {
    exited,
    alive: () => child.exitCode === null && child.signalCode === null,
    waitExit: (ms) =>
      Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]),
  };
}
