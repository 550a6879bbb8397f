/**
 * Dials a machine's agent socket until the agent's HELLO arrives — bounded by
 * the machine's life, not by a guess at how long a boot takes: when the
 * machine exits first, the dial fails at once (with its console tail); the
 * absolute timeout is only a backstop for a machine that hangs without dying.
 *
 * Attempts: a socket that is not there yet or refuses is retried after a
 * short, growing pause. On a virtio port (QEMU), the first attempt of a fresh
 * boot may wait as long as it takes: the RESET we send sits in the socket
 * until the guest opens its port, then the agent answers. Later dials (a VM
 * that already said HELLO once) use short attempts, because a host that died
 * inside a frame leaves the agent taking our RESET as payload; closing and
 * redialing makes the guest see a detach (see AgentClient.connectVirtioSerial).
 * A machine restored from a snapshot is such a later dial too — its agent
 * still holds the session of the machine it was saved from — so it starts
 * with short attempts that grow (its first HELLO normally takes tens of ms).
 */
import { connect, type Socket } from 'node:net';
import { AgentClient } from '../../../agent/client.js';
import { hasCode } from '../../../errors.js';
import { tailForMessage, VmError, VmErrorCode } from './errors.js';
import type { MachineExit } from './machine.js';

export interface DialOptions {
  /** Unix socket path of the agent. */
  path: string;
  /** Send RESET first (virtio-serial ports outlive host sessions). */
  reset: boolean;
  /** The machine's exit; the dial fails with `onExit(exit)` when it settles first. */
  exited: Promise<MachineExit>;
  /** Error for an exit during the dial (ERR_VM_EXITED with the console tail). */
  onExit: (exit: MachineExit) => Error;
  /** Absolute backstop. */
  timeoutMs: number;
  /** One handshake attempt's limit; default: all the time that is left. */
  attemptTimeoutMs?: number;
  /** Double the attempt limit after each failed attempt (a restored machine: short first tries, never too short). */
  growAttempts?: boolean;
  consoleTail: () => string;
  id: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function dialAgent(opts: DialOptions): Promise<AgentClient> {
  const deadline = Date.now() + opts.timeoutMs;
  let exit: MachineExit | undefined;
  let current: Socket | undefined;
  void opts.exited.then((e) => {
    exit = e;
    current?.destroy();
  });
  let pause = 20;
  let attemptMs = opts.attemptTimeoutMs;
  let attempts = 0;
  let lastError: unknown;
  while (exit === undefined && Date.now() < deadline) {
    const left = deadline - Date.now();
    const sock = connect(opts.path);
    current = sock;
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', reject);
        sock.once('close', () => reject(new Error('closed')));
      });
      const client = await AgentClient.connect(sock, {
        reset: opts.reset,
        handshakeTimeoutMs: Math.max(1, Math.min(attemptMs ?? left, left)),
      });
      attempts++;
      if (exit !== undefined) {
        client.close();
        break;
      }
      return client;
    } catch (err) {
      sock.destroy();
      lastError = err;
      attempts++;
      if (opts.growAttempts && attemptMs !== undefined) attemptMs *= 2;
      // A version mismatch will not fix itself.
      if (hasCode(err, 'ERR_AGENT_PROTOCOL')) throw err;
    }
    if (exit !== undefined) break;
    await Promise.race([sleep(Math.min(pause, Math.max(0, deadline - Date.now()))), opts.exited]);
    pause = Math.min(pause * 2, 500);
  }
  if (exit !== undefined) throw opts.onExit(exit);
  throw new VmError(
    VmErrorCode.BOOT_TIMEOUT,
    `no agent HELLO from machine ${opts.id} within ${opts.timeoutMs} ms ` +
      `after ${attempts} attempt(s) (last error: ${(lastError as Error | undefined)?.message ?? 'none'})${tailForMessage(opts.consoleTail())}`,
    { id: opts.id, timeoutMs: opts.timeoutMs, consoleTail: opts.consoleTail() },
  );
}
