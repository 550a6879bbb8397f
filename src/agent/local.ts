/**
 * Runs the real agent binary on this host, serving `--listen unix:PATH`: what the
 * conformance tests and the agent bench drive, and a way to try the agent
 * without a sandbox. Readiness is an event (`--ready-fd`), not a poll.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentClient, type ConnectOptions } from './client.js';
import { AgentError } from './errors.js';

/** Path of the agent built by `npm run build:agent` (override with ACTORVM_AGENT_BIN). */
export function agentBinaryPath(): string {
  return (
    process.env.ACTORVM_AGENT_BIN ??
    fileURLToPath(new URL('../../build/guest/actorvm-agent', import.meta.url))
  );
}

export interface LocalAgentOptions {
  /** Directory for the socket; default a fresh temporary directory, removed by stop(). */
  dir?: string;
  binary?: string;
  /** Extra agent flags. */
  args?: string[];
  /** Command prefix, e.g. `['unshare', '--pid', '--fork', '--kill-child']`. */
  wrapper?: string[];
  /** Extra socketpairs passed as fds 4, 5, … (`child.stdio[4]`, …), e.g. for `--tap-fd 4`. */
  extraFds?: number;
  /** Where the agent's stderr goes; default collected (see `stderrText()`). */
  stderr?: 'inherit' | 'ignore' | 'collect';
  readyTimeoutMs?: number;
}

export interface LocalAgent {
  readonly socketPath: string;
  readonly child: ChildProcess;
  /** Resolves when the spawned process (the wrapper, if any) exits. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  connect(opts?: ConnectOptions): Promise<AgentClient>;
  /** What the agent wrote to stderr so far (with `stderr: 'collect'`). */
  stderrText(): string;
  /** SIGTERM (then SIGKILL), wait for exit, remove the temporary directory. */
  stop(): Promise<void>;
}

export async function startLocalAgent(opts: LocalAgentOptions = {}): Promise<LocalAgent> {
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'actorvm-agent-'));
  const socketPath = join(dir, 'agent.sock');
  const binary = opts.binary ?? agentBinaryPath();
  const argv = [
    ...(opts.wrapper ?? []),
    binary,
    '--listen',
    `unix:${socketPath}`,
    '--ready-fd',
    '3',
    ...(opts.args ?? []),
  ];
  const stderrMode = opts.stderr ?? 'collect';
  const extra = Array.from({ length: opts.extraFds ?? 0 }, () => 'pipe' as const);
  const child = spawn(argv[0], argv.slice(1), {
    stdio: ['ignore', 'ignore', stderrMode === 'collect' ? 'pipe' : stderrMode, 'pipe', ...extra],
    // Its own process group, so stop() reaches the agent through wrappers such as
    // `unshare --fork`, which ignore SIGTERM while they wait for their child.
    detached: true,
  });
  const signalGroup = (sig: NodeJS.Signals): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, sig);
    } catch {
      // already gone
    }
  };
  // A killed agent may reset its pipes (ECONNRESET); its exit is what we report.
  for (const stream of child.stdio) stream?.on('error', () => {});
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const cleanup = (): void => {
    if (ownDir) rmSync(dir, { recursive: true, force: true });
  };

  const readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
  try {
    await new Promise<void>((resolve, reject) => {
      const ready = child.stdio[3] as NodeJS.ReadableStream;
      const timer = setTimeout(
        () => reject(new AgentError('ERR_AGENT_TIMEOUT', `agent not ready after ${readyTimeoutMs} ms`)),
        readyTimeoutMs,
      );
      ready.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new AgentError('ERR_AGENT_CLOSED', `cannot start ${argv[0]}: ${err.message}`));
      });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(
          new AgentError(
            'ERR_AGENT_CLOSED',
            `agent exited (${code ?? signal}) before ready: ${stderr.trim()}`,
          ),
        );
      });
    });
  } catch (err) {
    signalGroup('SIGKILL');
    await exited;
    cleanup();
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    socketPath,
    child,
    exited,
    connect: (copts) => AgentClient.connectUnix(socketPath, copts),
    stderrText: () => stderr,
    stop: () => {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          signalGroup('SIGTERM');
          const timer = setTimeout(() => signalGroup('SIGKILL'), 5000);
          await exited;
          clearTimeout(timer);
        }
        cleanup();
      })();
      return stopping;
    },
  };
}
