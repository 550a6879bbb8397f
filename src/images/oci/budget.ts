/**
 * A byte budget. An image source is untrusted input and its size is known
 * only once read: an archive on stdin, or a layer that gunzips to terabytes,
 * must stop with ERR_IMAGE_IMPORT long before it fills the disk. A budget is
 * shared across every stream it meters (all layers of one import draw from
 * the same one).
 */
import { Transform, type TransformCallback } from 'node:stream';
import { ImageError, ImageErrorCode } from '../errors.js';

export class Budget {
  used = 0;

  constructor(
    readonly limit: number,
    /** What is being counted, for the message ("bytes read from the archive"). */
    readonly what: string,
  ) {}

  /** Counts `n` more bytes; throws ERR_IMAGE_IMPORT once the limit is passed. */
  take(n: number): void {
    this.used += n;
    if (this.used > this.limit) {
      throw new ImageError(
        ImageErrorCode.IMPORT,
        `${this.what} exceed the limit of ${this.limit} bytes (maxBytes)`,
        { limit: this.limit },
      );
    }
  }

  /** A pass-through stream that draws every byte it passes from this budget (`onBytes`: the total so far). */
  meter(onBytes?: (used: number) => void): Transform {
    return new Transform({
      transform: (chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) => {
        try {
          this.take(chunk.length);
          onBytes?.(this.used);
          cb(null, chunk);
        } catch (err) {
          cb(err as Error);
        }
      },
    });
  }
}
