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
  /** No Debian cloud kernel (with its modules directory) on this host. */
  KERNEL_NOT_FOUND: 'ERR_KERNEL_NOT_FOUND',
} as const;

export class ImageError extends ActorvmError {}
