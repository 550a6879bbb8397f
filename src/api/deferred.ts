/** A promise and its resolvers (Node 20 has no Promise.withResolvers), already marked handled. */
import { handled } from './schemas.js';

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(err: Error): void;
}

/** Awaiting `promise` still sees a rejection; leaving it alone never becomes an unhandled one. */
export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = handled(
    new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    }),
  );
  return { promise, resolve, reject };
}
