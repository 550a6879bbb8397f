/**
 * A directory watch behind the daemon (envd's WatchDir stream), with the
 * in-process SandboxWatcher's shape: 'event' {type, name}, 'error' (only
 * when listened to; `ended` rejects too), 'end' (reason), close(), and an
 * async iterator. The daemon sends neither `isDir` nor why a watch ended, so
 * events lack the former and the reason is always 'closed'.
 *
 * Events are pulled from the stream as they are emitted; an async iterator
 * that falls behind stops pulling (after ITERATOR_BACKLOG events), which
 * leaves the rest to the daemon's and the agent's bounded queues.
 */

import { EventEmitter } from 'node:events';
import type { WatchEndReason, WatchEventType } from '../../protocol/agent-messages.js';
import { EventType } from '../../protocol/envd/index.js';
import { deferred } from '../deferred.js';
import { EventQueue } from '../event-queue.js';
import { fromConnect, RemoteError, RemoteErrorCode } from './errors.js';

/** A change under a watched directory: `name` is relative to it. */
export interface RemoteWatchEvent {
  type: WatchEventType;
  name: string;
}

export interface RemoteWatcherEvents {
  event: [RemoteWatchEvent];
  error: [Error];
  end: [WatchEndReason];
}

/** Events an async iterator may hold before the stream stops being read. */
const ITERATOR_BACKLOG = 4096;

const TYPES: Partial<Record<EventType, WatchEventType>> = {
  [EventType.CREATE]: 'create',
  [EventType.WRITE]: 'write',
  [EventType.REMOVE]: 'remove',
  [EventType.RENAME]: 'rename',
  [EventType.CHMOD]: 'chmod',
};

export interface WatchDirMessage {
  event:
    | { case: 'start'; value: unknown }
    | { case: 'filesystem'; value: { name: string; type: EventType } }
    | { case: 'keepalive'; value: unknown }
    | { case: undefined; value?: undefined };
}

export class RemoteWatcher
  extends EventEmitter<RemoteWatcherEvents>
  implements AsyncIterable<RemoteWatchEvent>
{
  private readonly armedAt = deferred<void>();
  private readonly endedAt = deferred<WatchEndReason>();
  /** Resolves once the daemon armed the watch; rejects when it could not be set up. */
  readonly armed: Promise<void> = this.armedAt.promise;
  /** Resolves with why the watch ended; rejects with the error that ended it. */
  readonly ended: Promise<WatchEndReason> = this.endedAt.promise;
  private over = false;
  private failure: Error | undefined;
  private queue: EventQueue<RemoteWatchEvent> | undefined;
  private resumePump: (() => void) | undefined;

  constructor(
    events: AsyncIterable<WatchDirMessage>,
    private readonly abort: AbortController,
    where: string,
  ) {
    super();
    void this.pump(events, where);
  }

  /** Ends the watch; resolves once it ended. Idempotent. */
  close(): Promise<void> {
    if (!this.over) {
      this.abort.abort();
      this.unpause();
    }
    return this.ended.then(
      () => {},
      () => {},
    );
  }

  [Symbol.asyncIterator](): AsyncIterator<RemoteWatchEvent> {
    // The pump pauses above ITERATOR_BACKLOG queued events and resumes once the iterator took half.
    this.queue ??= new EventQueue((left) => {
      if (left <= ITERATOR_BACKLOG / 2) this.unpause();
    });
    return this.queue.iterator(() => this.close());
  }

  private async pump(events: AsyncIterable<WatchDirMessage>, where: string): Promise<void> {
    try {
      for await (const msg of events) {
        const ev = msg.event;
        if (ev.case === 'start') this.armedAt.resolve();
        else if (ev.case === 'filesystem') {
          const type = TYPES[ev.value.type];
          if (!type) continue;
          const e: RemoteWatchEvent = { type, name: ev.value.name };
          this.emit('event', e);
          this.queue?.push(e);
          if (this.queue && this.queue.items.length > ITERATOR_BACKLOG) {
            await new Promise<void>((r) => {
              this.resumePump = r;
            });
          }
        }
      }
    } catch (err) {
      if (!this.abort.signal.aborted) this.failure = fromConnect(err, 'files', where, true);
    }
    this.over = true;
    this.queue?.end(this.failure);
    if (this.failure) {
      this.armedAt.reject(this.failure);
      this.endedAt.reject(this.failure);
      if (this.listenerCount('error') > 0) this.emit('error', this.failure);
    } else {
      this.armedAt.reject(new RemoteError(RemoteErrorCode.CLOSED, 'the watch ended before it was armed'));
      this.endedAt.resolve('closed');
    }
    this.emit('end', 'closed');
  }

  private unpause(): void {
    const r = this.resumePump;
    this.resumePump = undefined;
    r?.();
  }
}
