/**
 * A directory watch in the guest: the handle `AgentClient.watch()` resolves
 * with once the agent has armed it (every directory of the tree watched), so
 * a change made after that promise resolved is always reported.
 *
 * Events arrive as packed records in DATA frames on channel 1 under the
 * stream's credit. Credit goes back as records are emitted, in batches of a
 * quarter window; `pause()` withholds it, so a consumer that cannot keep up
 * stops the agent, whose bounded queue then drops events and reports the gap
 * once ('overflow') instead of growing.
 */
import { EventEmitter } from 'node:events';
import { Channel } from '../protocol/agent-frame.js';
import {
  type AgentMessage,
  decodeWatchEnd,
  decodeWatchEvents,
  type HostMessage,
  type WatchEndReason,
  type WatchEventType,
} from '../protocol/agent-messages.js';
import { type AgentError, AgentProtocolError, errorFromRemote } from './errors.js';
import type { StreamHandler, StreamLink } from './process.js';

/** A change under the watched directory. */
export interface WatchEvent {
  type: WatchEventType;
  /** Path relative to the watched directory ('' is the directory itself). */
  name: string;
  isDir: boolean;
}

export interface AgentWatchEvents {
  event: [WatchEvent];
  /** Events were dropped here (the consumer fell behind, or part of the tree could not be watched). */
  overflow: [];
  /** Emitted only when someone listens; `ended` rejects with it either way. */
  error: [AgentError];
  /** The last event: why the watch ended (also after an error: 'closed'). */
  end: [WatchEndReason];
}

const noop = (): void => {};

export class AgentWatch extends EventEmitter<AgentWatchEvents> implements StreamHandler {
  /** Directories the agent watches (known once armed). */
  directories = 0;
  /** Resolves once armed; rejects when the watch could not be set up. */
  readonly armed: Promise<AgentWatch>;
  /** Resolves with why the watch ended; rejects with the error that ended it. */
  readonly ended: Promise<WatchEndReason>;

  readonly #link: StreamLink;
  readonly #op: string;
  readonly #threshold: number;
  #owed = 0;
  #paused = false;
  #done = false;
  #resolveArmed!: (w: AgentWatch) => void;
  #rejectArmed!: (err: Error) => void;
  #resolveEnded!: (r: WatchEndReason) => void;
  #rejectEnded!: (err: Error) => void;

  /** @internal Created by AgentClient.watch(). */
  constructor(link: StreamLink, path: string) {
    super();
    this.#link = link;
    this.#op = `watch ${path}`;
    this.#threshold = Math.max(1, Math.floor(link.window / 4));
    this.armed = new Promise((resolve, reject) => {
      this.#resolveArmed = resolve;
      this.#rejectArmed = reject;
    });
    this.ended = new Promise((resolve, reject) => {
      this.#resolveEnded = resolve;
      this.#rejectEnded = reject;
    });
    this.armed.catch(noop);
    this.ended.catch(noop);
  }

  get streamId(): number {
    return this.#link.stream;
  }

  get done(): boolean {
    return this.#done;
  }

  /** Stops returning credit: the agent stops sending once the window is spent. */
  pause(): this {
    this.#paused = true;
    return this;
  }

  resume(): this {
    this.#paused = false;
    this.#settle();
    return this;
  }

  /** Ends the watch in the guest; resolves once it ended (with its reason). */
  close(): Promise<WatchEndReason> {
    if (!this.#done) this.#trySend({ type: 'cancel', stream: this.#link.stream });
    return this.ended.catch(() => 'closed' as const);
  }

  /** @internal */
  onMessage(m: AgentMessage): void {
    switch (m.type) {
      case 'started':
        this.directories = m.pid;
        this.#resolveArmed(this);
        return;
      case 'data': {
        if (m.channel !== Channel.OUT || m.data.length === 0) return;
        let records: ReturnType<typeof decodeWatchEvents>;
        try {
          records = decodeWatchEvents(m.data);
        } catch (err) {
          this.#trySend({ type: 'cancel', stream: this.#link.stream });
          this.#fail(new AgentProtocolError(`${this.#op}: ${(err as Error).message}`));
          return;
        }
        this.#owed += m.data.length;
        for (const r of records) {
          if (r.type === 'overflow') this.emit('overflow');
          else this.emit('event', r);
        }
        this.#settle();
        return;
      }
      case 'result': {
        let reason: WatchEndReason;
        try {
          reason = decodeWatchEnd(m.payload);
        } catch {
          reason = 'closed';
        }
        this.#finish();
        this.#resolveArmed(this); // ended before anyone awaited it armed: still a watch that was armed
        this.#resolveEnded(reason);
        this.emit('end', reason);
        return;
      }
      case 'error':
        this.#fail(errorFromRemote(m.error, this.#op));
        return;
    }
  }

  /** @internal */
  onClose(err: AgentError): void {
    this.#fail(err);
  }

  #fail(err: AgentError): void {
    if (this.#done) return;
    this.#finish();
    this.#rejectArmed(err);
    this.#rejectEnded(err);
    if (this.listenerCount('error') > 0) this.emit('error', err);
    this.emit('end', 'closed');
  }

  #finish(): void {
    this.#done = true;
    this.#link.release();
  }

  #settle(): void {
    if (this.#paused || this.#done || this.#owed < this.#threshold) return;
    const n = this.#owed;
    this.#owed = 0;
    this.#trySend({ type: 'window', stream: this.#link.stream, channel: Channel.OUT, increment: n });
  }

  #trySend(m: HostMessage): void {
    try {
      this.#link.send(m);
    } catch {
      // The connection is gone; onClose reports it.
    }
  }
}
