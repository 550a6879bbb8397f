/**
 * Errors of the image builder and store. Every one is an `ActorvmError` with a
 * stable code; callers (the CLI's --json output, the Runtime API) switch on it.
 */
import { ActorvmError } from '../errors.js';

export const ImageErrorCode = {
  /** The spec is malformed (bad name, relative path, both `source` and `content`, …). */
  SPEC: 'ERR_IMAGE_SPEC',
  /** A build step failed: a missing binary or library, a compressed module, an I/O error. */
  BUILD: 'ERR_IMAGE_BUILD',
  /** No image with that name or id in the store. */
  NOT_FOUND: 'ERR_IMAGE_NOT_FOUND',
  /** An id prefix matched more than one image. */
  AMBIGUOUS: 'ERR_IMAGE_AMBIGUOUS',
  /** A Debian package cannot be resolved, downloaded or unpacked (unknown name, apt failed). */
  PACKAGES: 'ERR_IMAGE_PACKAGES',
  /** An OCI or docker-save source is malformed or unsupported (no manifest, bad JSON, unknown media type, a path escaping the root). */
  IMPORT: 'ERR_IMAGE_IMPORT',
  /** A blob's SHA-256 does not match its digest (or a docker layer its diff_id): the import is refused and nothing is stored. */
  DIGEST: 'ERR_IMAGE_DIGEST',
  /** No Debian cloud kernel (with its modules directory) on this host. */
  KERNEL_NOT_FOUND: 'ERR_KERNEL_NOT_FOUND',
} as const;

export class ImageError extends ActorvmError {}

/**
 * `err` as an ActorvmError: itself when it already is one (its code is the
 * precise one), else an ImageError with `code` whose message says `what`
 * failed — so a host I/O error surfaces with a stable code, not as a bare Error.
 */
export function asImageError(err: unknown, code: string, what: string): ActorvmError {
  if (err instanceof ActorvmError) return err;
  return new ImageError(code, `${what}: ${(err as Error).message}`, undefined, { cause: err });
}
