/**
 * The network identity handoff of one restored machine (a fork's child, a
 * sandbox resumed from a snapshot), as orchestration:
 *
 *     prepare  — a fresh nonce and RNG seed; the guest network starts
 *                listening for the ack before anything is sent
 *     resume   — the vCPUs run again (the caller's machine.resume())
 *     deliver  — the identity over the agent channel (HANDOFF), then
 *                await the ack datagram through the child's own data path,
 *                bounded by `ackTimeoutMs`; without it, the fallback: the
 *                identity re-sent over the agent channel, asking for no ack,
 *                its RESULT taken as the answer
 *     close    — stop listening
 *
 * Ready means the ack arrived (`via: 'ack'`): the guest's new MAC and
 * address carried a datagram to the gateway. The agent's RESULT alone only
 * says the requests were made; it counts only as the fallback, and the
 * child records which path won and how long it took.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { AgentClient } from '../../agent/client.js';
import { ActorvmError } from '../../errors.js';
import {
  encodeHandoff,
  HANDOFF_ACK_PORT,
  HANDOFF_NONCE_BYTES,
  HANDOFF_SEED_BYTES,
  type HandoffIdentity,
} from '../../protocol/handoff.js';
import type { GuestNetwork } from '../net/guest-network.js';
import { VmErrorCode } from './backends/errors.js';

export interface HandoffOutcome {
  /** Which path made the child ready. */
  via: 'ack' | 'fallback';
  /** From sending the identity to the ack (or to the fallback's answer). */
  ms: number;
  /** How long the guest took to apply it (the agent's own measure). */
  applyUs?: number;
}

/** How long a child waits for its ack before the fallback (TCG guests take a few ms; this is the bound). */
export const DEFAULT_ACK_TIMEOUT_MS = 1_000;

function wallClockNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

export class Handoff {
  private nonce = new Uint8Array(0);
  private waiter: { acked: Promise<number>; cancel(): void } | undefined;

  constructor(
    private readonly net: GuestNetwork,
    private readonly identity: HandoffIdentity,
    private readonly log: Logger,
    private readonly sandbox: number,
    private readonly ackTimeoutMs = DEFAULT_ACK_TIMEOUT_MS,
  ) {}

  /** A fresh nonce; the guest network listens for its ack from now on. */
  prepare(): void {
    this.nonce = randomBytes(HANDOFF_NONCE_BYTES);
    this.waiter = this.net.awaitHandoffAck(this.nonce);
  }

  private payload(ackPort: number): Buffer {
    return encodeHandoff({
      identity: this.identity,
      nonce: this.nonce,
      seed: randomBytes(HANDOFF_SEED_BYTES),
      clockNs: wallClockNs(),
      ackPort,
    });
  }

  /**
   * Sends the identity and waits for the ack, else falls back. Rejects with
   * ERR_VM_HANDOFF when the guest refused the identity on both paths.
   */
  async deliver(agent: AgentClient): Promise<HandoffOutcome> {
    if (!this.waiter) throw new Error('Handoff.deliver before prepare');
    const t0 = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((r) => {
      timer = setTimeout(() => r('timeout'), this.ackTimeoutMs);
    });
    // The RESULT is kept for the record (and its error for the story), never raced against the ack.
    const applied = agent.handoff(this.payload(HANDOFF_ACK_PORT)).then(
      (r) => ({ ok: true as const, applyUs: r.applyUs }),
      (err: Error) => ({ ok: false as const, err }),
    );
    const first = await Promise.race([this.waiter.acked.then(() => 'ack' as const), timedOut]);
    clearTimeout(timer);
    if (first === 'ack') {
      const r = await Promise.race([applied, Promise.resolve(undefined)]);
      const outcome: HandoffOutcome = {
        via: 'ack',
        ms: performance.now() - t0,
        applyUs: r?.ok ? r.applyUs : undefined,
      };
      this.log.info(
        { event: 'vm.handoff_acked', sandbox: this.sandbox, ms: Math.round(outcome.ms * 10) / 10 },
        'handoff acknowledged through the data path',
      );
      return outcome;
    }
    const primary = await applied;
    this.log.warn(
      {
        event: 'vm.handoff_fallback',
        sandbox: this.sandbox,
        afterMs: this.ackTimeoutMs,
        primary: primary.ok ? 'applied' : primary.err.message,
      },
      'no handoff ack in time: re-sending the identity over the agent channel',
    );
    this.waiter.cancel();
    try {
      const r = await agent.handoff(this.payload(0));
      return { via: 'fallback', ms: performance.now() - t0, applyUs: r.applyUs };
    } catch (err) {
      throw new ActorvmError(
        VmErrorCode.HANDOFF,
        `the restored guest did not take its new identity: ${(err as Error).message}`,
        { sandbox: this.sandbox },
      );
    }
  }

  close(): void {
    this.waiter?.cancel();
    this.waiter = undefined;
  }
}
