/**
 * Shared fixtures for the agent suites: the real agent binary on a Unix socket
 * in a temporary directory, raw frame connections for protocol-level tests, and
 * /proc observation helpers.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import {
  AgentClient,
  agentBinaryPath,
  type LocalAgent,
  type LocalAgentOptions,
  startLocalAgent,
} from '../../src/agent/index.js';
import { type Frame, FrameDecoder } from '../../src/protocol/agent-frame.js';

if (!existsSync(agentBinaryPath())) {
  throw new Error(`agent binary missing at ${agentBinaryPath()}: run \`npm run build:agent\``);
}

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** A temporary directory removed after the test. */
export function tempDir(prefix = 'actorvm-agent-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface AgentFixture {
  agent: LocalAgent;
  client: AgentClient;
  /** A scratch directory for files the test creates through the agent. */
  dir: string;
}

/** Starts the real agent and connects a client; both are torn down after the test. */
export async function startAgent(opts: LocalAgentOptions = {}): Promise<AgentFixture> {
  const agent = await startLocalAgent(opts);
  cleanups.push(() => agent.stop());
  const client = await agent.connect();
  cleanups.push(() => client.close());
  return { agent, client, dir: tempDir() };
}

/** Another client connection to the same agent, closed after the test. */
export async function connectAgain(agent: LocalAgent): Promise<AgentClient> {
  const c = await agent.connect();
  cleanups.push(() => c.close());
  return c;
}

export { waitFor } from '../support/wait.js';

/** Pids (host view) whose process group is `pgid`, zombies included. */
export function processesInGroup(pgid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // Fields after the parenthesised command: state ppid pgrp ...
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[2]) === pgid) out.push(Number(name));
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

export function processExists(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

/** A raw protocol connection: write bytes, read frames one at a time. */
export class RawConnection {
  readonly socket: Socket;
  readonly #decoder = new FrameDecoder(Number.MAX_SAFE_INTEGER);
  readonly #frames: Frame[] = [];
  #waiter: (() => void) | undefined;
  #ended = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.#frames.push(...this.#decoder.push(d));
      this.#waiter?.();
    });
    const onEnd = (): void => {
      this.#ended = true;
      this.#waiter?.();
    };
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.on('error', onEnd);
  }

  static async open(path: string): Promise<RawConnection> {
    const s = connect(path);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    const rc = new RawConnection(s);
    cleanups.push(() => {
      s.destroy();
    });
    return rc;
  }

  write(...bufs: Buffer[]): void {
    for (const b of bufs) this.socket.write(b);
  }

  /** The next frame, or null once the agent closed the connection. */
  async next(): Promise<Frame | null> {
    while (this.#frames.length === 0) {
      if (this.#ended) return null;
      await new Promise<void>((r) => {
        this.#waiter = r;
      });
      this.#waiter = undefined;
    }
    return this.#frames.shift()!;
  }

  /** The next frame on `stream`, skipping others. */
  async nextOn(stream: number): Promise<Frame | null> {
    for (;;) {
      const f = await this.next();
      if (f === null || f.stream === stream) return f;
    }
  }

  /** Resolves when the agent has closed the connection. */
  async closedByPeer(): Promise<void> {
    while ((await this.next()) !== null) {
      // drain
    }
  }
}

export { AgentClient };
