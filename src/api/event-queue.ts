/**
 * The async-iterator side of a watcher (in-process and remote): events wait
 * here until the iterator takes them; the producer learns how many are left
 * after each take (`onTaken`), which is where it resumes a paused source.
 * Listeners of the watcher's 'event' do not go through it.
 */
export class EventQueue<T> {
  readonly items: T[] = [];
  private wake: (() => void) | undefined;
  private over = false;
  private failure: Error | undefined;

  constructor(private readonly onTaken: (left: number) => void) {}

  push(item: T): void {
    this.items.push(item);
    this.notify();
  }

  /** No more items; the iterator ends after the queued ones, throwing `failure` if given. */
  end(failure?: Error): void {
    this.over = true;
    this.failure = failure;
    this.notify();
  }

  /** An iterator over the queue; `close` runs when the consumer stops early. */
  iterator(close: () => Promise<void>): AsyncIterator<T> {
    return {
      next: async (): Promise<IteratorResult<T>> => {
        for (;;) {
          if (this.items.length > 0) {
            const value = this.items.shift() as T;
            this.onTaken(this.items.length);
            return { value, done: false };
          }
          if (this.over) {
            if (this.failure) throw this.failure;
            return { value: undefined, done: true };
          }
          await new Promise<void>((r) => {
            this.wake = r;
          });
        }
      },
      return: async (): Promise<IteratorResult<T>> => {
        await close();
        return { value: undefined, done: true };
      },
    };
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}
