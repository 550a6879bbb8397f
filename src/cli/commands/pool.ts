/**
 * `actorctl pool …`: the warm pools of a running daemon (see `serve --warm`).
 *
 *   pool status            one row per pool: what it holds now (idle, booting,
 *                          claimed, max), what it did since it started
 *                          (created, claims, hits, misses, evicted, failed),
 *                          who waits, and claim latency (p50/p99 ms); then the
 *                          limits across pools. --json: `{pools, limits}`.
 *   pool run -- CMD        a sandbox claimed from the daemon's pool of
 *                          --image (the daemon starts that pool if none
 *                          runs), CMD run in it with its output streamed, the
 *                          sandbox killed afterwards whatever happens (so the
 *                          pool refills); exits with CMD's status.
 *
 * Both talk to the daemon like `actorctl vm …` (--socket, or --url with
 * ACTORVM_API_KEY).
 */
import type { Command } from 'commander';
import type { PoolStatus } from '../../actors/pool/messages.js';
import type { PoolsInfo, RemoteSandbox } from '../../api/remote/index.js';
import type { BackendChoice } from '../../api/runtime.js';
import { type GlobalOptions, withClient } from '../context.js';
import { collect, intFlag, pairs, terminalFlags } from '../flags.js';
import { printJson, printTable } from '../output.js';
import { attachTerminal, commandOf, exitStatus, type TerminalFlags, terminalSize } from './sandbox.js';

/** Signals that end `pool run` early: the sandbox is killed first. */
const ENDING_SIGNALS = { SIGTERM: 15, SIGHUP: 1 } as const;
/** The statuses a signal-ended run exits with (128 + the signal's number). */
const SIGNAL_NUMBERS = { ...ENDING_SIGNALS, SIGINT: 2 } as const;
/** How long a `pool run` sandbox outlives its command's --timeout, should actorctl itself be killed. */
const SANDBOX_GRACE_MS = 60_000;

const ms = (v: number | null): string => (v === null ? '-' : v < 10 ? v.toFixed(1) : String(Math.round(v)));

function printPools(info: PoolsInfo): void {
  printTable(
    [
      'POOL',
      'STATE',
      'IDLE',
      'BOOTING',
      'CLAIMED',
      'MAX',
      'CREATED',
      'CLAIMS',
      'HITS',
      'MISSES',
      'EVICTED',
      'FAILED',
      'WAITERS',
      'CLAIM p50 ms',
      'CLAIM p99 ms',
    ],
    info.pools.map((p: PoolStatus) => [
      p.pool,
      p.state,
      p.idle,
      p.booting,
      p.claimed,
      p.max,
      p.created,
      p.claims,
      p.hits,
      p.misses,
      p.evicted,
      p.failed,
      p.waiters,
      ms(p.claimP50Ms),
      ms(p.claimP99Ms),
    ]),
  );
  const l = info.limits;
  process.stdout.write(
    `boots: ${l.bootsActive} running, ${l.bootsQueued} queued (at most ${l.bootConcurrency} at once); ` +
      `guest memory: ${l.memoryInUseMiB} of ${l.memoryMiB} MiB\n`,
  );
}

interface PoolRunOptions extends GlobalOptions, TerminalFlags {
  image?: string;
  backend?: BackendChoice;
  memory?: string;
  cpus?: string;
  env?: string[];
  timeout?: string;
}

export function registerPoolCommands(program: Command): void {
  const pool = program
    .command('pool')
    .description('warm pools of a running daemon (see actorctl serve --warm)');

  pool
    .command('status')
    .description(
      'per pool: idle, booting, claimed, max, created, claims, hits, misses, evicted, failed, waiters, claim p50/p99',
    )
    .action(async (_o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions>();
      const info = await withClient(opts, (rt) => rt.pools());
      if (opts.json) printJson(info);
      else printPools(info);
    });

  terminalFlags(
    pool
      .command('run')
      .description(
        "run one command in a sandbox claimed from the daemon's pool (started if none runs); the sandbox is killed afterwards; exits with its code",
      )
      .option('--image <name>', 'image of the pool (default: base)')
      .option('--backend <kind>', "qemu | namespace | auto (default: the daemon's)")
      .option('--memory <MiB>', 'guest memory (part of the pool key; default 256)')
      .option('--cpus <n>', 'guest CPUs (part of the pool key; default 1)')
      .option('--env <key=value>', 'environment variable of the command (repeatable)', collect)
      .option('--timeout <ms>', 'kill the command after this long'),
  )
    .argument('<cmd...>', 'command (after --); one argument runs through /bin/sh -c')
    .action(async (cmd: string[], _o, c: Command) => {
      const opts = c.optsWithGlobals<PoolRunOptions>();
      const timeoutMs = intFlag('timeout', opts.timeout, 1, 86_400_000);
      const memoryMiB = intFlag('memory', opts.memory, 1, 1 << 30);
      const cpus = intFlag('cpus', opts.cpus, 1, 4096);
      const env = pairs('env', opts.env);
      const pty = opts.tty ? terminalSize(opts) : undefined;
      // From here on a SIGTERM or SIGHUP must not leave the sandbox behind: noted now,
      // acted on once the sandbox exists (a create under way cannot be called back).
      let ended: keyof typeof SIGNAL_NUMBERS | undefined;
      let sbx: RemoteSandbox | undefined;
      let released: Promise<void> | undefined;
      const release = () => {
        released ??= sbx ? sbx.kill().catch(() => {}) : undefined;
        return released;
      };
      const onSignal = (sig: keyof typeof SIGNAL_NUMBERS) => {
        ended ??= sig;
        void release();
      };
      for (const sig of Object.keys(ENDING_SIGNALS) as (keyof typeof ENDING_SIGNALS)[])
        process.on(sig, onSignal);
      try {
        const out = await withClient(opts, async (rt) => {
          // ^C while the claim is under way ends the run too (later, the terminal session owns ^C).
          const onInterrupt = () => onSignal('SIGINT');
          process.once('SIGINT', onInterrupt);
          sbx = await rt
            .createSandbox({
              image: opts.image,
              backend: opts.backend,
              memoryMiB,
              cpus,
              pool: 'always',
              // A backstop should actorctl be killed outright: the daemon ends the sandbox then.
              timeoutMs: timeoutMs === undefined ? undefined : timeoutMs + SANDBOX_GRACE_MS,
            })
            .finally(() => process.off('SIGINT', onInterrupt));
          try {
            if (ended) return undefined;
            const p = sbx.spawn(commandOf(cmd), {
              timeoutMs,
              env,
              stdin: opts.interactive ? 'pipe' : 'closed',
              ...(pty ? { pty } : {}),
            });
            return await attachTerminal(p, {
              pty: pty !== undefined,
              input: Boolean(opts.interactive),
              collect: opts.json,
            });
          } catch (err) {
            // The command's stream ends with an error when a signal killed its sandbox.
            if (ended) return undefined;
            throw err;
          } finally {
            await release();
          }
        });
        // Ended by a signal: its status, whatever the command reported as the sandbox went.
        if (ended || !out) {
          process.exitCode = 128 + SIGNAL_NUMBERS[ended ?? 'SIGTERM'];
          return;
        }
        if (opts.json) {
          printJson({
            sandbox: sbx!.id,
            sandboxId: sbx!.key,
            image: sbx!.image,
            backend: sbx!.backend,
            ...out.result,
            stdout: out.stdout,
            stderr: out.stderr,
          });
        }
        process.exitCode = exitStatus(out.result);
      } finally {
        for (const sig of Object.keys(ENDING_SIGNALS) as (keyof typeof ENDING_SIGNALS)[])
          process.off(sig, onSignal);
      }
    });
}
