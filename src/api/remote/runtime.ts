/**
 * The Runtime API over the daemon: what `actorctl` and `Runtime.connect` use
 * to drive an `actorctl serve` from another process.
 *
 *     const rt = await connectRuntime({ socket: '/run/actorvm.sock' });   // or { url, apiKey }
 *     const sbx = await rt.createSandbox({ metadata: { job: '7' } });
 *     const { stdout } = await sbx.exec('echo hello');
 *     await sbx.kill();
 *     rt.close();
 *
 * Theory of operation
 * ===================
 *
 * Two protocols, one address. The daemon (src/daemon/server.ts) answers
 * native REST under /v1 (sandboxes, lifetimes, forwards, logs, pause,
 * snapshots, forks, inspection)
 * and the in-sandbox API E2B's SDK speaks: Connect RPC `process.Process`
 * and `filesystem.Filesystem`, plus GET/POST /files, with the sandbox named
 * by the E2b-Sandbox-Id header. The client uses both over the same
 * keep-alive agent (endpoint.ts): REST with node:http, Connect with
 * connect-node's HTTP/1.1 transport in binary (rpc.ts). On the Unix socket
 * nothing authenticates (the socket's mode does); on TCP every request
 * carries the API key.
 *
 * Objects mirror the in-process ones, so code moves between the two:
 * RemoteSandbox ~ Sandbox (sandbox.ts), RemoteProcess ~ SandboxProcess
 * (process.ts), RemoteFiles ~ SandboxFiles (files.ts), RemoteWatcher ~
 * SandboxWatcher (watcher.ts). Arguments are checked here with the same
 * schemas as in-process (src/api/schemas.ts) before anything is sent, and
 * errors carry the same stable codes: the daemon's error bodies are rethrown
 * with their `error` code, Connect errors mapped back (errors.ts). Where the
 * daemon's API cannot do what the in-process one does (signals other than
 * TERM/KILL; image specs on create) the call fails with a typed error
 * rather than approximating.
 *
 * Lifetimes are the daemon's. A sandbox lives until killed or its deadline;
 * a command belongs to the daemon's process table and outlives the client
 * that started it, so a second process can `attach` to it by pid or tag.
 * `close()` ends this client's calls and streams (their promises reject
 * with ERR_REMOTE_CLOSED) and nothing else.
 *
 * Flow control is the socket's: every stream (command output, downloads,
 * watches) is read only as fast as its consumer reads, so a slow consumer
 * pauses the daemon's side, not memory here; uploads are sent as the source
 * yields them.
 *
 * No promise the client returns is left to reject unobserved: those a
 * caller may ignore (`pid`, `result`, `kill()`) are marked handled, as the
 * in-process API does.
 */
import { z } from 'zod';
import type { FlowRow } from '../../actors/net/network-service.js';
import type { PoolStatus } from '../../actors/pool/messages.js';
import type { ActorInfo } from '../../runtime/actor-cell.js';
import { defaultSocketPath } from '../../runtime/paths.js';
import type { RingStats } from '../../runtime/ring.js';
import type { SandboxOptions } from '../runtime.js';
import { check, checkOptions, LifetimeMs, Metadata, SandboxOptionsSchema, SnapshotId } from '../schemas.js';
import type { SnapshotSummary } from '../snapshots.js';
import { Endpoint } from './endpoint.js';
import { RemoteError, RemoteErrorCode } from './errors.js';
import { type RpcClients, rpcClients } from './rpc.js';
import { RemoteSandbox, type SandboxSummary } from './sandbox.js';

export type ConnectOptions = { socket?: string } | { url: string; apiKey: string };

/** What `GET /v1/pools` answers: every running pool, and the limits across pools (PoolService.limits). */
export interface PoolsInfo {
  pools: PoolStatus[];
  limits: {
    bootConcurrency: number;
    bootsActive: number;
    bootsQueued: number;
    memoryMiB: number;
    memoryInUseMiB: number;
  };
}

/** Sandbox options over the daemon: the in-process ones, with the image by name (build specs with `actorctl image build`). */
export type RemoteSandboxOptions = Omit<SandboxOptions, 'image'> & { image?: string };

const ConnectOptionsSchema = z.union([
  z.object({ socket: z.string().min(1).max(4096).optional() }).strict(),
  z
    .object({
      url: z
        .string()
        .url()
        .refine((u) => /^https?:\/\//.test(u), 'an http:// or https:// URL'),
      apiKey: z.string().min(1).max(512),
    })
    .strict(),
]);

const RemoteSandboxOptionsSchema = z
  .object({ ...SandboxOptionsSchema.shape, image: z.string().min(1).max(256) })
  .partial()
  .strict();

const SandboxRef = z.union([
  z.number().int().min(1),
  z
    .string()
    .min(1)
    .max(128)
    .regex(/^[A-Za-z0-9-]+$/, 'a sandbox number or key'),
]);

/** E2B's metadata filter (src/daemon/sandboxes.ts parseMetadataQuery): each part percent-encoded, then the form. */
function metadataQuery(m: Record<string, string>): string {
  const form = new URLSearchParams(
    Object.entries(m).map(([k, v]): [string, string] => [encodeURIComponent(k), encodeURIComponent(v)]),
  );
  return encodeURIComponent(form.toString());
}

export class RemoteRuntime {
  readonly rpc: RpcClients;

  private constructor(readonly endpoint: Endpoint) {
    this.rpc = rpcClients(endpoint);
  }

  /** See connectRuntime. */
  static async connect(opts: ConnectOptions = {}): Promise<RemoteRuntime> {
    const o = check(
      ConnectOptionsSchema,
      opts ?? {},
      RemoteErrorCode.BAD_OPTIONS,
      'connect options',
    ) as ConnectOptions;
    const address =
      'url' in o ? { url: o.url, apiKey: o.apiKey } : { socket: o.socket ?? defaultSocketPath() };
    const rt = new RemoteRuntime(new Endpoint(address));
    try {
      // Proves the daemon is there and, on TCP, that the key is right.
      await rt.endpoint.json('GET', '/v1/sandboxes?metadata=');
    } catch (err) {
      rt.close();
      throw err;
    }
    return rt;
  }

  /** Where the daemon is (socket path or URL). */
  get address(): string {
    return this.endpoint.where;
  }

  private link() {
    return {
      endpoint: this.endpoint,
      rpc: this.rpc,
      setTimeout: (id: number, ms: number | undefined) => this.setTimeout(id, ms),
    };
  }

  /**
   * Creates a sandbox and resolves once it is ready. Options are checked
   * here first (ERR_SANDBOX_BAD_OPTIONS), then by the daemon (ERR_NET_*,
   * ERR_IMAGE_NOT_FOUND, ERR_SANDBOX_BOOT_FAILED, …).
   */
  async createSandbox(opts: RemoteSandboxOptions = {}): Promise<RemoteSandbox> {
    if (typeof (opts as { image?: unknown })?.image === 'object' && opts.image !== null) {
      throw new RemoteError(
        'ERR_SANDBOX_BAD_OPTIONS',
        'over the daemon an image is named, not specified: build it with `actorctl image build` first',
      );
    }
    const body = checkOptions(RemoteSandboxOptionsSchema, opts);
    const s = await this.endpoint.json<SandboxSummary>('POST', '/v1/sandboxes', body);
    return new RemoteSandbox(this.link(), s);
  }

  /** Live sandboxes, optionally those whose metadata has every given key and value. */
  async sandboxes(filter: { metadata?: Record<string, string> } = {}): Promise<RemoteSandbox[]> {
    const f = checkOptions(z.object({ metadata: Metadata }).partial().strict(), filter, 'filter');
    const q =
      f.metadata && Object.keys(f.metadata).length > 0 ? `?metadata=${metadataQuery(f.metadata)}` : '';
    const list = await this.endpoint.json<SandboxSummary[]>('GET', `/v1/sandboxes${q}`);
    return list.map((s) => new RemoteSandbox(this.link(), s));
  }

  /** A live sandbox by its number or key. Throws ERR_NO_SUCH_SANDBOX. */
  async sandbox(idOrKey: number | string): Promise<RemoteSandbox> {
    const ref = checkOptions(SandboxRef, idOrKey, 'sandbox');
    const s = await this.endpoint.json<SandboxSummary>(
      'GET',
      `/v1/sandboxes/${encodeURIComponent(String(ref))}`,
    );
    return new RemoteSandbox(this.link(), s);
  }

  /** Moves a sandbox's deadline to `ms` from now (undefined: none). Throws ERR_NO_SUCH_SANDBOX, ERR_SANDBOX_BAD_OPTIONS. */
  async setTimeout(idOrKey: number | string, ms: number | undefined): Promise<Date | undefined> {
    const ref = checkOptions(SandboxRef, idOrKey, 'sandbox');
    if (ms !== undefined) checkOptions(LifetimeMs, ms, 'timeoutMs');
    const r = await this.endpoint.json<{ endAt: string | null }>(
      'POST',
      `/v1/sandboxes/${encodeURIComponent(String(ref))}/timeout`,
      { timeoutMs: ms ?? null },
    );
    return r.endAt ? new Date(r.endAt) : undefined;
  }

  /** Snapshots under the daemon's home, oldest first. */
  snapshots(): Promise<SnapshotSummary[]> {
    return this.endpoint.json('GET', '/v1/snapshots');
  }

  /** Removes a snapshot. Throws ERR_SNAPSHOT_NOT_FOUND, ERR_SNAPSHOT_IN_USE, ERR_SANDBOX_BAD_OPTIONS. */
  async removeSnapshot(id: string): Promise<void> {
    const ref = checkOptions(SnapshotId, id, 'snapshot');
    await this.endpoint.json<void>('DELETE', `/v1/snapshots/${encodeURIComponent(ref)}`);
  }

  // ---- inspection (actorctl) ----

  actors(): Promise<ActorInfo[]> {
    return this.endpoint.json('GET', '/v1/actors');
  }

  /** One actor's state snapshot by id or name. Throws ERR_NO_SUCH_ACTOR. */
  inspect(id: number | string): Promise<Record<string, unknown>> {
    const ref = checkOptions(
      z.union([z.number().int().nonnegative(), z.string().min(1).max(256)]),
      id,
      'actor',
    );
    return this.endpoint.json('GET', `/v1/actors/${encodeURIComponent(String(ref))}`);
  }

  rings(): Promise<RingStats[]> {
    return this.endpoint.json('GET', '/v1/rings');
  }

  stats(): Promise<Record<string, unknown>> {
    return this.endpoint.json('GET', '/v1/stats');
  }

  /** NAT flows, of one sandbox (by number) or all. */
  flows(sandbox?: number): Promise<FlowRow[]> {
    if (sandbox !== undefined) checkOptions(z.number().int().nonnegative(), sandbox, 'sandbox');
    return this.endpoint.json('GET', `/v1/flows${sandbox === undefined ? '' : `?sandbox=${sandbox}`}`);
  }

  netStats(): Promise<Record<string, unknown>[]> {
    return this.endpoint.json('GET', '/v1/net/stats');
  }

  /** The daemon's warm pools and the limits across them (`actorctl pool status`). */
  pools(): Promise<PoolsInfo> {
    return this.endpoint.json('GET', '/v1/pools');
  }

  /** Images in the daemon's store. */
  images(): Promise<Record<string, unknown>[]> {
    return this.endpoint.json('GET', '/v1/images');
  }

  /** Ends this client's calls and streams (sandboxes and their commands live on). Idempotent. */
  close(): void {
    this.endpoint.close();
  }
}

/**
 * Connects to a daemon: `{ socket }` (default: the control socket,
 * ACTORVM_SOCKET or $ACTORVM_HOME/run/actorvm.sock) or `{ url, apiKey }` for
 * one listening on TCP. Rejects with ERR_REMOTE_UNREACHABLE when nothing
 * answers, ERR_DAEMON_UNAUTHORIZED for a wrong key, ERR_REMOTE_BAD_OPTIONS.
 */
export function connectRuntime(opts: ConnectOptions = {}): Promise<RemoteRuntime> {
  return RemoteRuntime.connect(opts);
}
