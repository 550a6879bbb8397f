/**
 * envd's `filesystem.Filesystem` service over a sandbox's files (the agent's
 * stat, list, mkdir, rename, remove and inotify watch).
 *
 *   Stat, ListDir (depth levels, at most MAX_LIST_ENTRIES), MakeDir
 *   (AlreadyExists when the path exists, which the SDK reports as `false`),
 *   Move, Remove (recursive; a missing path is not an error, like envd)
 *   WatchDir          a stream: start once the watch is armed, then events
 *   CreateWatcher /   the polling form: events accumulate in the daemon, at
 *   GetWatcherEvents  most MAX_WATCHER_EVENTS / MAX_WATCHER_BYTES per watcher (older
 *   / RemoveWatcher   ones are kept, newer dropped until the client collects); one
 *                     not polled for WATCHER_IDLE_MS is closed
 *
 * Relative paths resolve against the user's home (guest.ts).
 */
import { randomUUID } from 'node:crypto';
import { posix } from 'node:path';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect';
import { Code, ConnectError } from '@connectrpc/connect';
import type { SandboxWatcher, WatchEvent } from '../../../api/sandbox.js';
import { EventType, type Filesystem, FileType } from '../../../protocol/envd/index.js';
import { toConnectError } from '../../errors.js';
import type { Found } from '../../sandboxes.js';
import type { Daemon } from '../../server.js';
import { guestPath } from './guest.js';
import { SANDBOX_HEADER, sandboxFromHeader } from './sandbox-of.js';

/** Entries one ListDir answers at most. */
export const MAX_LIST_ENTRIES = 10_000;
/** Events a polling watcher keeps until GetWatcherEvents collects them. */
export const MAX_WATCHER_EVENTS = 4096;
/** Bytes of event names one watcher's queue holds at most (names run up to 4 KiB). */
export const MAX_WATCHER_BYTES = 1 << 20;
/** A polling watcher nobody asked for events this long is closed (it holds an agent watch). */
export const WATCHER_IDLE_MS = 10 * 60_000;

type EnvdEvent = { name: string; type: EventType };

/** A watcher's queue, bounded by count and by bytes; what does not fit is dropped. */
class EventBuffer {
  readonly items: EnvdEvent[] = [];
  private bytes = 0;

  push(e: EnvdEvent): void {
    if (this.items.length >= MAX_WATCHER_EVENTS || this.bytes + e.name.length > MAX_WATCHER_BYTES) return;
    this.items.push(e);
    this.bytes += e.name.length;
  }

  shift(): EnvdEvent | undefined {
    const e = this.items.shift();
    if (e) this.bytes -= e.name.length;
    return e;
  }

  drain(): EnvdEvent[] {
    this.bytes = 0;
    return this.items.splice(0);
  }
}

const fileType = (t: unknown): FileType =>
  t === 'file'
    ? FileType.FILE
    : t === 'directory'
      ? FileType.DIRECTORY
      : t === 'symlink'
        ? FileType.SYMLINK
        : FileType.UNSPECIFIED;

const eventType: Record<WatchEvent['type'], EventType> = {
  create: EventType.CREATE,
  write: EventType.WRITE,
  remove: EventType.REMOVE,
  rename: EventType.RENAME,
  chmod: EventType.CHMOD,
};

/** `-rw-r--r--` from a type and permission bits. */
function permissions(type: unknown, mode: number): string {
  const t = type === 'directory' ? 'd' : type === 'symlink' ? 'l' : '-';
  let s = t;
  for (let shift = 6; shift >= 0; shift -= 3) {
    const bits = (mode >> shift) & 7;
    s += (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (bits & 1 ? 'x' : '-');
  }
  return s;
}

const owner = (id: unknown): string => (id === 0 || id === undefined ? 'root' : String(id));

function entryOf(path: string, st: Record<string, unknown>) {
  const mode = Number(st.mode ?? 0);
  return {
    name: posix.basename(path) || '/',
    type: fileType(st.type),
    path,
    size: BigInt(Math.trunc(Number(st.size ?? 0))),
    mode,
    permissions: permissions(st.type, mode),
    owner: owner(st.uid),
    group: owner(st.gid),
    // Whole milliseconds: a fractional one does not serialize as RFC 3339.
    modifiedTime: timestampFromMs(Math.floor(Number(st.mtimeMs ?? 0))),
    symlinkTarget: typeof st.linkTarget === 'string' ? st.linkTarget : undefined,
  };
}

interface PollingWatcher {
  sandboxKey: string;
  watcher: SandboxWatcher;
  events: EventBuffer;
  failed?: ConnectError;
  lastPoll: number;
}

export function filesystemService(d: Daemon): ServiceImpl<typeof Filesystem> {
  const watchers = new Map<string, PollingWatcher>();
  /** Closes polling watchers nobody polled for WATCHER_IDLE_MS (checked on every watcher call, no timer). */
  const sweep = (now = Date.now()): void => {
    for (const [id, w] of watchers) {
      if (now - w.lastPoll < WATCHER_IDLE_MS) continue;
      watchers.delete(id);
      void w.watcher.close().catch(() => {});
    }
  };
  const found = (ctx: HandlerContext): Found => {
    try {
      return sandboxFromHeader(d, ctx.requestHeader.get(SANDBOX_HEADER));
    } catch (err) {
      throw toConnectError(err);
    }
  };
  const userOf = (ctx: HandlerContext): string | undefined =>
    basicUser(ctx.requestHeader.get('authorization'));
  /** Runs `fn`, turning every error into a Connect error. */
  const guarded = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw toConnectError(err);
    }
  };
  const stat = async (f: Found, path: string) => entryOf(path, await f.sandbox.files.stat(path));

  return {
    stat: (req, ctx) =>
      guarded(async () => {
        const f = found(ctx);
        return { entry: await stat(f, guestPath(req.path, userOf(ctx))) };
      }),

    makeDir: (req, ctx) =>
      guarded(async () => {
        const f = found(ctx);
        const path = guestPath(req.path, userOf(ctx));
        if (await f.sandbox.files.exists(path)) {
          throw new ConnectError(`${path} already exists`, Code.AlreadyExists);
        }
        await f.sandbox.files.mkdir(path);
        return { entry: await stat(f, path) };
      }),

    move: (req, ctx) =>
      guarded(async () => {
        const f = found(ctx);
        const from = guestPath(req.source, userOf(ctx));
        const to = guestPath(req.destination, userOf(ctx));
        await f.sandbox.files.rename(from, to);
        return { entry: await stat(f, to) };
      }),

    listDir: (req, ctx) =>
      guarded(async () => {
        const f = found(ctx);
        const root = guestPath(req.path, userOf(ctx));
        const depth = Math.max(1, req.depth || 1);
        const entries: ReturnType<typeof entryOf>[] = [];
        const rootStat = await f.sandbox.files.stat(root);
        if (rootStat.type !== 'directory')
          throw new ConnectError(`${root} is not a directory`, Code.InvalidArgument);
        const walk = async (dir: string, level: number): Promise<void> => {
          for (const e of await f.sandbox.files.list(dir)) {
            if (entries.length >= MAX_LIST_ENTRIES) return;
            const path = posix.join(dir, String(e.name));
            entries.push(entryOf(path, e));
            if (e.type === 'directory' && level < depth) await walk(path, level + 1);
          }
        };
        await walk(root, 1);
        return { entries };
      }),

    remove: (req, ctx) =>
      guarded(async () => {
        const f = found(ctx);
        const path = guestPath(req.path, userOf(ctx));
        try {
          await f.sandbox.files.remove(path, { recursive: true });
        } catch (err) {
          if ((err as { details?: { errnoName?: string } }).details?.errnoName !== 'ENOENT') throw err;
        }
        return {};
      }),

    async *watchDir(req, ctx) {
      const f = found(ctx);
      const path = guestPath(req.path, userOf(ctx));
      const watcher = await guarded(() => f.sandbox.files.watch(path, { recursive: req.recursive }));
      const queue = new EventBuffer();
      let ended: Error | null | undefined;
      let wake: (() => void) | undefined;
      const notify = () => {
        const w = wake;
        wake = undefined;
        w?.();
      };
      watcher.on('event', (e: WatchEvent) => {
        // The agent bounds what it sends; this queue only holds what the socket has not taken yet.
        queue.push({ name: e.name, type: eventType[e.type] });
        notify();
      });
      watcher.on('error', (err: Error) => {
        ended = err;
        notify();
      });
      watcher.on('end', () => {
        ended ??= null;
        notify();
      });
      ctx.signal.addEventListener('abort', notify, { once: true });
      try {
        yield { event: { case: 'start', value: {} } };
        for (;;) {
          const e = queue.shift();
          if (e) {
            yield { event: { case: 'filesystem', value: e } };
            continue;
          }
          if (ended) throw toConnectError(ended);
          if (ended === null || ctx.signal.aborted) return;
          await new Promise<void>((r) => {
            wake = r;
          });
        }
      } finally {
        void watcher.close().catch(() => {});
      }
    },

    createWatcher: (req, ctx) =>
      guarded(async () => {
        const f = found(ctx);
        sweep();
        const key = f.record.key;
        const path = guestPath(req.path, userOf(ctx));
        // The agent caps a sandbox's watches (streaming and polling alike): past it this is
        // ERR_AGENT_WATCH_LIMIT, resource_exhausted.
        const watcher = await f.sandbox.files.watch(path, { recursive: req.recursive });
        const id = randomUUID();
        const entry: PollingWatcher = {
          sandboxKey: key,
          watcher,
          events: new EventBuffer(),
          lastPoll: Date.now(),
        };
        watcher.on('event', (e: WatchEvent) => {
          entry.events.push({ name: e.name, type: eventType[e.type] });
        });
        watcher.on('error', (err: Error) => {
          entry.failed = toConnectError(err);
        });
        // A watcher whose sandbox or directory went away is answered once more, then forgotten.
        watcher.on('end', () => {
          entry.failed ??= new ConnectError('the watched directory or its sandbox is gone', Code.NotFound);
          if (!d.runtime.sandbox(entry.sandboxKey)) watchers.delete(id);
        });
        watchers.set(id, entry);
        return { watcherId: id };
      }),

    getWatcherEvents: (req, ctx) =>
      guarded(async () => {
        const f = found(ctx);
        sweep();
        const w = watchers.get(req.watcherId);
        if (!w || w.sandboxKey !== f.record.key)
          throw new ConnectError(`no watcher ${req.watcherId}`, Code.NotFound);
        w.lastPoll = Date.now();
        const events = w.events.drain();
        if (events.length === 0 && w.failed) {
          watchers.delete(req.watcherId);
          throw w.failed;
        }
        return { events };
      }),

    removeWatcher: (req, ctx) =>
      guarded(async () => {
        const f = found(ctx);
        const w = watchers.get(req.watcherId);
        if (!w || w.sandboxKey !== f.record.key)
          throw new ConnectError(`no watcher ${req.watcherId}`, Code.NotFound);
        watchers.delete(req.watcherId);
        await w.watcher.close();
        return {};
      }),
  };
}

/** The user name in `Authorization: Basic base64(user:)`, as E2B's SDK sends it. */
export function basicUser(header: string | null): string | undefined {
  if (!header?.startsWith('Basic ')) return undefined;
  const text = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const user = text.split(':')[0];
  return user || undefined;
}
