/**
 * What a source resolves to before any layer is touched: which image (its
 * identifying digest), its parsed config, and where each layer's bytes are
 * with what they must hash to. oci-layout.ts and docker-save.ts produce it;
 * layer.ts consumes it. Everything that can be checked without reading a
 * layer — documents, media types, platform, missing blobs, layer counts —
 * is checked while making it, so a bad source fails before the rootfs is
 * written to.
 */
import { ImageError, ImageErrorCode } from '../errors.js';
import type { BlobRef, Digest } from './digest.js';
import type { Compression } from './media-types.js';
import type { ImageConfigDocument } from './schema.js';

export interface LayerSource {
  /** "layer 2/3 (sha256:…)", for messages. */
  label: string;
  /** The file holding the layer's bytes. */
  path: string;
  /** What the bytes as stored must be (OCI: the manifest's descriptor). Docker-save has none. */
  blob?: BlobRef;
  /** 'detect': by magic bytes (docker-save's layer files have no media type). */
  compression: Compression | 'detect';
  /** What the uncompressed tar must hash to: the config's rootfs.diff_ids entry. */
  diffId: Digest;
}

export interface ImagePlan {
  format: 'oci' | 'docker';
  /** The manifest's digest (OCI) or the config's (docker-save). */
  digest: string;
  config: ImageConfigDocument;
  layers: LayerSource[];
}

/** The only platform a sandbox runs. */
export const PLATFORM = { os: 'linux', architecture: 'amd64' } as const;

/** Refuses a config that declares another platform (an arm64 image would not run, and fail late). */
export function checkPlatform(config: ImageConfigDocument, what: string): void {
  const os = config.os ?? PLATFORM.os;
  const arch = config.architecture ?? PLATFORM.architecture;
  if (os !== PLATFORM.os || arch !== PLATFORM.architecture) {
    throw new ImageError(
      ImageErrorCode.IMPORT,
      `${what} is for ${os}/${arch}; only ${PLATFORM.os}/${PLATFORM.architecture} images can run here`,
    );
  }
}
