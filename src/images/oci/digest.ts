/**
 * Content addressing. An OCI image is a tree of digests: index.json names
 * manifests by digest, a manifest names its config and layers; a blob is
 * stored under blobs/<algorithm>/<hex>. Every blob this importer reads is
 * hashed as it streams past and compared with the digest (and the size) its
 * parent promised, so a truncated download or a swapped file is an
 * ERR_IMAGE_DIGEST, never a quietly different image.
 *
 * Verification happens while the bytes are consumed, not in a pass before:
 * layers are read once. A layer found corrupt at its end has already been
 * partly applied, which is fine — a failed import's rootfs is thrown away.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { ImageError, ImageErrorCode } from '../errors.js';

export type DigestAlgorithm = 'sha256' | 'sha512';

export interface Digest {
  algorithm: DigestAlgorithm;
  hex: string;
}

const ENCODED: Record<DigestAlgorithm, RegExp> = {
  sha256: /^[a-f0-9]{64}$/,
  sha512: /^[a-f0-9]{128}$/,
};

/** The registered algorithms the spec lets an image use, in their canonical (lower-case hex) form. */
export const DIGEST_PATTERN = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

export function parseDigest(s: string): Digest {
  const i = s.indexOf(':');
  const algorithm = s.slice(0, i) as DigestAlgorithm;
  const hex = s.slice(i + 1);
  if (i < 0 || !(algorithm in ENCODED) || !ENCODED[algorithm].test(hex)) {
    throw new ImageError(ImageErrorCode.IMPORT, `unsupported or malformed digest ${JSON.stringify(s)}`);
  }
  return { algorithm, hex };
}

export const formatDigest = (d: Digest): string => `${d.algorithm}:${d.hex}`;

/** Where a layout keeps a blob. Safe to join: the hex was validated. */
export function blobPath(layoutDir: string, d: Digest): string {
  return join(layoutDir, 'blobs', d.algorithm, d.hex);
}

function mismatch(what: string, expected: string, actual: string): ImageError {
  return new ImageError(
    ImageErrorCode.DIGEST,
    `${what}: content has digest ${actual}, expected ${expected}`,
    { expected, actual },
  );
}

function sizeMismatch(what: string, expected: number, actual: string): ImageError {
  return new ImageError(ImageErrorCode.DIGEST, `${what}: ${actual} bytes, expected ${expected}`, {
    expectedSize: expected,
  });
}

/**
 * A pass-through stream that fails (ERR_IMAGE_DIGEST) when what went through
 * does not have digest `expected`, or not exactly `size` bytes. A blob longer
 * than promised fails as soon as it is, not at its end.
 */
export class DigestVerifier extends Transform {
  private readonly hash: Hash;
  private bytes = 0;

  constructor(
    private readonly expected: Digest,
    private readonly what: string,
    private readonly size?: number,
  ) {
    super();
    this.hash = createHash(expected.algorithm);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.size !== undefined && this.bytes > this.size) {
      cb(sizeMismatch(this.what, this.size, `more than ${this.size}`));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.size !== undefined && this.bytes !== this.size) {
      cb(sizeMismatch(this.what, this.size, String(this.bytes)));
      return;
    }
    const actual = this.hash.digest('hex');
    if (actual !== this.expected.hex) {
      cb(mismatch(this.what, formatDigest(this.expected), `${this.expected.algorithm}:${actual}`));
      return;
    }
    cb();
  }
}

/** The digest of a file's content, in `algorithm`. */
export async function hashFile(path: string, algorithm: DigestAlgorithm): Promise<string> {
  const h = createHash(algorithm);
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return `${algorithm}:${h.digest('hex')}`;
}

/** Documents (manifests, indexes, configs) are read whole; no sane one is this large. */
export const MAX_DOCUMENT_BYTES = 16 * 1024 * 1024;

/** Reads a small file whole, refusing one over `limit` bytes. ENOENT → ERR_IMAGE_IMPORT naming `what`. */
export async function readSmallFile(path: string, what: string, limit = MAX_DOCUMENT_BYTES): Promise<Buffer> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ImageError(
      ImageErrorCode.IMPORT,
      code === 'ENOENT' ? `${what} is missing` : `${what}: ${(err as Error).message}`,
      undefined,
      { cause: err },
    );
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new ImageError(ImageErrorCode.IMPORT, `${what} is not a regular file`);
    if (st.size > limit) {
      throw new ImageError(ImageErrorCode.IMPORT, `${what} is ${st.size} bytes, more than ${limit}`);
    }
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

export interface BlobRef {
  digest: Digest;
  size?: number;
}

/** A blob of a layout, read whole (documents only) and verified against its descriptor. */
export async function readBlob(layoutDir: string, ref: BlobRef, what: string): Promise<Buffer> {
  const label = `${what} ${formatDigest(ref.digest)}`;
  if (ref.size !== undefined && ref.size > MAX_DOCUMENT_BYTES) {
    throw new ImageError(
      ImageErrorCode.IMPORT,
      `${label} is ${ref.size} bytes, more than ${MAX_DOCUMENT_BYTES}`,
    );
  }
  const buf = await readSmallFile(blobPath(layoutDir, ref.digest), `blob of ${label}`);
  if (ref.size !== undefined && buf.length !== ref.size)
    throw sizeMismatch(label, ref.size, String(buf.length));
  const actual = createHash(ref.digest.algorithm).update(buf).digest('hex');
  if (actual !== ref.digest.hex)
    throw mismatch(label, formatDigest(ref.digest), `${ref.digest.algorithm}:${actual}`);
  return buf;
}

/** True when `path` is an existing regular file (following symlinks: a layout may link its blobs). */
export async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
