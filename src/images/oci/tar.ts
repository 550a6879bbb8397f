/**
 * Reading a tar as a sequence of entries, one at a time, with tar-stream.
 * The bytes are produced by a pipeline (file → digest check → decompressor →
 * …) that runs concurrently with the consumer applying entries; each entry's
 * data is streamed to its destination, so memory stays bounded by a few
 * chunks whatever the layer's size (tar-stream itself caps long-name and PAX
 * headers at 4 MiB).
 *
 * When something fails, the interesting error is reported, not the echo it
 * causes elsewhere: a digest mismatch beats the truncated tar it produced,
 * and a consumer's error beats the "premature close" its bailing out causes
 * upstream.
 */
import type { FileHandle } from 'node:fs/promises';
import { type Extract, type Header, extract as tarExtract } from 'tar-stream';
import { ImageError, ImageErrorCode } from '../errors.js';

/** One entry: its header, and a stream of its data (which must be consumed before the next). */
export type Entry = Extract extends AsyncIterable<infer S> ? S : never;
export type TarHeader = Header;

/**
 * An entry's name as path components relative to the root, or undefined when
 * `..` would climb above it. Leading `/` and `./` are dropped (layer tars say
 * `./etc`, `etc` and `/etc` alike); `a/../b` is `b`.
 */
export function entryParts(name: string): string[] | undefined {
  const out: string[] = [];
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') {
      if (!out.length) return undefined;
      out.pop();
      continue;
    }
    out.push(p);
  }
  return out;
}

/** Reads and discards an entry's data (the extractor waits until it is consumed). */
export async function drain(entry: Entry): Promise<void> {
  for await (const _ of entry) {
    // discarded
  }
}

/** Streams an entry's data into `fh`; returns the bytes written. */
export async function writeEntryData(entry: Entry, fh: FileHandle): Promise<number> {
  let n = 0;
  for await (const chunk of entry as AsyncIterable<Buffer>) {
    let off = 0;
    while (off < chunk.length) off += (await fh.write(chunk, off)).bytesWritten;
    n += chunk.length;
  }
  return n;
}

/**
 * Feeds a tar extractor with `feed` (which returns the pipeline writing into
 * it) and calls `onEntry` for every entry, in order, awaiting each. Resolves
 * when the whole input was consumed and every check in the pipeline passed.
 */
export async function consumeTar(
  feed: (sink: NodeJS.WritableStream) => Promise<void>,
  onEntry: (entry: Entry) => Promise<void>,
): Promise<void> {
  const ex = tarExtract();
  // tar-stream's streams are streamx ones, which node's pipeline drives like its own.
  const fed = feed(ex as unknown as NodeJS.WritableStream).then(
    () => undefined,
    (err: unknown) => err,
  );
  let consumerErr: unknown;
  try {
    for await (const entry of ex) await onEntry(entry);
  } catch (err) {
    consumerErr = err ?? new Error('tar consumer failed');
    // Stops the feeding pipeline (and any decompressor process) at once.
    ex.destroy();
  }
  const feedErr = await fed;
  if (feedErr === undefined && consumerErr === undefined) return;
  // The consumer sees the pipeline's failure too, as an echo ("stream was destroyed"), and the
  // pipeline sees the consumer's as a premature close: report the cause.
  if (feedErr instanceof ImageError && feedErr.code === ImageErrorCode.DIGEST) throw feedErr;
  if (consumerErr instanceof ImageError) throw consumerErr;
  if (feedErr instanceof ImageError) throw feedErr;
  if (typeof (consumerErr as NodeJS.ErrnoException | undefined)?.syscall === 'string') throw consumerErr;
  if (feedErr && (feedErr as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE') throw feedErr;
  throw consumerErr ?? feedErr;
}
