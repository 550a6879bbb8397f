/**
 * What the runtime knows about a sandbox beyond its machine: the key clients
 * name it by, its labels, its lifetime, the processes that outlive their
 * clients, and the secret of its in-sandbox API. Made by the Runtime at
 * create, read by the Sandbox, the daemon and the remote client's server side.
 */
import type { Lifetime } from './lifetime.js';
import type { ProcessTable } from './process-table.js';

export interface SandboxRecord {
  /** Unguessable, unique across runtime restarts: the E2B sandboxID. */
  readonly key: string;
  readonly image: string;
  readonly memoryMiB: number;
  readonly cpus: number;
  readonly metadata: Readonly<Record<string, string>>;
  /** Environment of every command (under the command's own); bound at create, or at a pool claim. */
  readonly env: Readonly<Record<string, string>>;
  /** Working directory of commands that name none: the image's (OCI WorkingDir, a spec's workdir). */
  readonly workdir?: string;
  readonly lifetime: Lifetime;
  /** Processes started through the daemon, which outlive their clients. */
  readonly processes: ProcessTable;
  /** Secret for the in-sandbox API on TCP (E2B envdAccessToken). */
  readonly accessToken: string;
  /** Set when the sandbox was claimed from a warm pool: which, whether a machine was idle (hit), and the create's ms. */
  readonly claim?: { readonly pool: string; readonly hit: boolean; readonly ms: number };
  /** What its deadline does: kill it, or pause it (then it is killed `pausedTimeoutMs` later). */
  readonly onTimeout: 'kill' | 'pause';
  /** The sandbox this one was forked from (its number). */
  readonly forkOf?: number;
  /** The snapshot this one was restored from. */
  readonly snapshot?: string;
}
