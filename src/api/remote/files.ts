/**
 * Files of a sandbox behind the daemon, with the in-process SandboxFiles'
 * methods and errors:
 *
 *   write / read / readStream   envd's POST and GET /files (raw octet-stream,
 *                               streamed both ways; never held whole unless
 *                               `read` asks)
 *   stat / list / mkdir /       filesystem.Filesystem (Stat, ListDir, MakeDir,
 *   rename / exists / remove    Move, Remove)
 *   watch                       filesystem.Filesystem/WatchDir (watcher.ts)
 *
 * Where the daemon's API differs from the in-process one the difference is
 * made up here: envd's Remove is always recursive and ignores a missing
 * path, so `remove` checks first (ENOENT, ENOTEMPTY as in-process); MakeDir
 * refuses an existing path, so `mkdir` (which is `mkdir -p`) accepts an
 * existing directory; `write` passes its mode as /files' `mode` parameter
 * (atomic with the content), while MakeDir takes none, so `mkdir` with a
 * mode runs chmod afterwards.
 */
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { FileType } from '../../protocol/envd/index.js';
import type { FileInfo } from '../sandbox.js';
import {
  checkOptions,
  checkPath,
  checkWriteArgs,
  MkdirOptionsSchema,
  RemoveOptionsSchema,
  WatchOptionsSchema,
} from '../schemas.js';
import type { Endpoint } from './endpoint.js';
import { readAll } from './endpoint.js';
import { fromConnect, fromTransport, RemoteError } from './errors.js';
import { callOptions, type RpcClients } from './rpc.js';
import { RemoteWatcher } from './watcher.js';

/** What RemoteFiles needs from its sandbox. */
export interface FilesHost {
  readonly endpoint: Endpoint;
  readonly rpc: RpcClients;
  readonly key: string;
  /** Throws ERR_SANDBOX_STOPPED once the sandbox was killed through this client. */
  live(): void;
  /** chmod in the guest. */
  chmod(path: string, mode: number): Promise<void>;
}

const typeName = (t: FileType): string =>
  t === FileType.FILE
    ? 'file'
    : t === FileType.DIRECTORY
      ? 'dir'
      : t === FileType.SYMLINK
        ? 'symlink'
        : 'other';

interface Entry {
  name: string;
  type: FileType;
  path: string;
  size: bigint;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modifiedTime?: Parameters<typeof timestampMs>[0];
  symlinkTarget?: string;
}

/** envd's EntryInfo as the in-process stat/list record. */
function recordOf(e: Entry | undefined): Record<string, unknown> {
  if (!e) return {};
  const r: Record<string, unknown> = {
    name: e.name,
    path: e.path,
    type: typeName(e.type),
    size: Number(e.size),
    mode: e.mode,
    permissions: e.permissions,
    owner: e.owner,
    group: e.group,
  };
  if (e.modifiedTime) r.mtimeMs = timestampMs(e.modifiedTime);
  if (e.symlinkTarget !== undefined) r.linkTarget = e.symlinkTarget;
  return r;
}

const agentError = (errnoName: string, message: string, path: string) =>
  new RemoteError('ERR_AGENT_REMOTE', message, { errnoName, path });

export class RemoteFiles {
  constructor(private readonly host: FilesHost) {}

  private rpc<T>(fn: () => Promise<T>): Promise<T> {
    return fn().catch((err) => {
      throw fromConnect(err, 'files', this.host.endpoint.where);
    });
  }

  private query(path: string): string {
    return `/files?path=${encodeURIComponent(path)}`;
  }

  private get headers(): Record<string, string> {
    return { 'e2b-sandbox-id': this.host.key };
  }

  /**
   * Writes a file (the daemon writes it atomically and creates missing
   * parents). A stream is sent as it is read; give `size` when known (else
   * the daemon spools it first).
   */
  async write(
    path: string,
    data: string | Uint8Array | Readable,
    opts: { mode?: number; size?: number } = {},
  ): Promise<void> {
    opts = checkWriteArgs(path, data, opts);
    this.host.live();
    const body = typeof data === 'string' ? Buffer.from(data) : data;
    const mode = opts.mode === undefined ? '' : `&mode=${opts.mode.toString(8)}`;
    const res = await this.host.endpoint.request('POST', `${this.query(path)}${mode}`, {
      body,
      length: body instanceof Uint8Array ? body.length : opts.size,
      headers: { ...this.headers, 'content-type': 'application/octet-stream' },
    });
    await readAll(res, 1024 * 1024).catch((err) => {
      throw fromTransport(err, this.host.endpoint.where, true);
    });
  }

  /** Opens a file for streaming: its size and mode, and its content as a Readable (read at the caller's pace). */
  async readStream(path: string): Promise<FileInfo & { stream: Readable }> {
    checkPath(path);
    this.host.live();
    // The download first: its refusal (missing, not a regular file) is the daemon's, as in-process.
    const res = await this.host.endpoint.request('GET', this.query(path), { headers: this.headers });
    let st: Record<string, unknown>;
    try {
      st = await this.stat(path);
    } catch (err) {
      res.destroy();
      throw err;
    }
    const len = Number(res.headers['content-length']);
    return {
      size: Number.isFinite(len) ? len : Number(st.size),
      mode: Number(st.mode),
      mtimeMs: st.mtimeMs as number | undefined,
      stream: res,
    };
  }

  /** Reads a whole file into memory. */
  async read(path: string): Promise<Buffer> {
    const { stream } = await this.readStream(path);
    try {
      return await readAll(stream as Parameters<typeof readAll>[0], Number.MAX_SAFE_INTEGER);
    } catch (err) {
      throw fromTransport(err, this.host.endpoint.where, true);
    }
  }

  async stat(path: string): Promise<Record<string, unknown>> {
    checkPath(path);
    this.host.live();
    const r = await this.rpc(() =>
      this.host.rpc.filesystem.stat({ path }, callOptions(this.host.endpoint, this.host.key)),
    );
    return recordOf(r.entry as Entry | undefined);
  }

  async list(path: string): Promise<Record<string, unknown>[]> {
    checkPath(path);
    this.host.live();
    const r = await this.rpc(() =>
      this.host.rpc.filesystem.listDir({ path, depth: 1 }, callOptions(this.host.endpoint, this.host.key)),
    );
    return r.entries.map((e) => recordOf(e as Entry));
  }

  /** `mkdir -p`. */
  async mkdir(path: string, opts: { mode?: number } = {}): Promise<void> {
    checkPath(path);
    opts = checkOptions(MkdirOptionsSchema, opts);
    this.host.live();
    try {
      await this.rpc(() =>
        this.host.rpc.filesystem.makeDir({ path }, callOptions(this.host.endpoint, this.host.key)),
      );
    } catch (err) {
      if ((err as RemoteError).details?.errnoName !== 'EEXIST') throw err;
      const st = await this.stat(path);
      if (st.type !== 'dir') throw agentError('EEXIST', `mkdir: ${path} exists and is not a directory`, path);
    }
    if (opts.mode !== undefined) await this.host.chmod(path, opts.mode);
  }

  /**
   * Removes a file, a symlink or an empty directory; with `recursive`, a
   * directory and everything in it. A missing path rejects with
   * ERR_AGENT_REMOTE (ENOENT), a non-empty directory without `recursive`
   * with ENOTEMPTY.
   */
  async remove(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    checkPath(path);
    opts = checkOptions(RemoveOptionsSchema, opts);
    this.host.live();
    let entry = await this.stat(path).catch((err: RemoteError) => {
      if (err.details?.errnoName === 'ENOENT') return undefined;
      throw err;
    });
    if (!entry) {
      // A dangling symlink does not stat, but is there to remove: look in its directory.
      const siblings = await this.list(posix.dirname(posix.resolve('/', path))).catch(() => []);
      entry = siblings.find((e) => e.name === posix.basename(path));
    }
    if (!entry) throw agentError('ENOENT', `remove: ${path}: No such file or directory`, path);
    if (entry.type === 'dir' && !opts.recursive && (await this.list(path)).length > 0) {
      throw agentError('ENOTEMPTY', `remove: ${path}: Directory not empty`, path);
    }
    await this.rpc(() =>
      this.host.rpc.filesystem.remove({ path }, callOptions(this.host.endpoint, this.host.key)),
    );
  }

  /** rename(2): `to` is replaced if it exists. */
  async rename(from: string, to: string): Promise<void> {
    checkPath(from);
    checkPath(to);
    this.host.live();
    await this.rpc(() =>
      this.host.rpc.filesystem.move(
        { source: from, destination: to },
        callOptions(this.host.endpoint, this.host.key),
      ),
    );
  }

  /** Whether `path` exists (symlinks followed); other failures reject. */
  async exists(path: string): Promise<boolean> {
    try {
      await this.stat(path);
      return true;
    } catch (err) {
      const e = err as RemoteError;
      if (e.code === 'ERR_AGENT_REMOTE' && e.details?.errnoName === 'ENOENT') return false;
      throw err;
    }
  }

  /**
   * Watches a directory (with `recursive`, the tree under it). Resolves once
   * the daemon armed the watch; rejects as the in-process watch does (a
   * missing path: ERR_AGENT_REMOTE ENOENT).
   */
  async watch(path: string, opts: { recursive?: boolean } = {}): Promise<RemoteWatcher> {
    checkPath(path);
    opts = checkOptions(WatchOptionsSchema, opts);
    this.host.live();
    const abort = new AbortController();
    const events = this.host.rpc.filesystem.watchDir(
      { path, recursive: opts.recursive ?? false },
      callOptions(this.host.endpoint, this.host.key, abort.signal),
    );
    const watcher = new RemoteWatcher(events, abort, this.host.endpoint.where);
    await watcher.armed;
    return watcher;
  }
}
