/**
 * `importOci`: an OCI image or a `docker save` tarball, wherever it comes
 * from, applied layer by layer into an empty rootfs directory.
 *
 *   source.ts      path or stream → a directory (archives extracted to scratch)
 *   oci-layout.ts  index.json → manifest → config and layers, by digest
 *   docker-save.ts manifest.json → config and layers, by diff_id
 *   layer.ts       each layer, in order, streamed into the rootfs (rootfs.ts
 *                  keeps every write inside it)
 *
 * What comes back is the part of the config a sandbox uses (env, working
 * directory, entrypoint/cmd, user) and the digest that identifies the
 * content. Failing leaves the rootfs and scratch half-written, for the
 * caller to delete; nothing is ever written anywhere else.
 */
import { posix } from 'node:path';
import type { Logger } from '../../runtime/logger.js';
import { asImageError, ImageErrorCode } from '../errors.js';
import { Budget } from './budget.js';
import { readDockerPlan } from './docker-save.js';
import type { ImagePlan } from './image-plan.js';
import { type ApplyStats, applyLayer, Background } from './layer.js';
import { readOciPlan } from './oci-layout.js';
import { RootFs } from './rootfs.js';
import { openSource } from './source.js';

export interface OciImportOptions {
  /** Scratch directory (exists, empty, on the same filesystem as rootfs) for an archive's extracted blobs; caller deletes it. */
  scratch: string;
  /** Bound on total bytes read from an archive/stdin and on total uncompressed layer bytes (default 8 GiB each) → ERR_IMAGE_IMPORT when exceeded. */
  maxBytes?: number;
  /** For an index with several images: the ref name (org.opencontainers.image.ref.name annotation, or docker RepoTags) to pick; default the single linux/amd64 one. */
  ref?: string;
  /** 'read': bytes of an archive (total 0 when unknown: a stream); 'layers': layers applied. */
  onProgress?: (p: { phase: 'read' | 'layers'; done: number; total: number }) => void;
  log?: Logger;
}

export interface OciImageConfig {
  /** 'sha256:…' of the manifest (OCI) or of the config (docker save without OCI blobs): identifies the image content. */
  digest: string;
  format: 'oci' | 'docker';
  /** From config.config.Env ("K=V"; later duplicates win). */
  env: Record<string, string>;
  /** config.config.WorkingDir (absolute). */
  workdir?: string;
  entrypoint?: string[];
  cmd?: string[];
  user?: string;
  layers: number;
  /** Counts of things skipped on purpose (device nodes, xattrs), for the log. */
  skipped: { devices: number; xattrs: number };
}

export const DEFAULT_MAX_BYTES = 8 * 1024 ** 3;

function configFacts(plan: ImagePlan, stats: ApplyStats): OciImageConfig {
  const c = plan.config.config ?? {};
  const env: Record<string, string> = {};
  for (const kv of c.Env ?? []) {
    const i = kv.indexOf('=');
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const list = (l: string[] | null | undefined) => (l?.length ? l : undefined);
  // Docker resolves a relative WORKDIR against the previous one before storing it; anything else is from the root.
  const wd = c.WorkingDir ? posix.normalize(`/${c.WorkingDir}`).replace(/(.)\/$/, '$1') : undefined;
  return {
    digest: plan.digest,
    format: plan.format,
    env,
    ...(wd ? { workdir: wd } : {}),
    ...(list(c.Entrypoint) ? { entrypoint: c.Entrypoint! } : {}),
    ...(list(c.Cmd) ? { cmd: c.Cmd! } : {}),
    ...(c.User ? { user: c.User } : {}),
    layers: plan.layers.length,
    skipped: { devices: stats.devices, xattrs: stats.xattrs },
  };
}

/**
 * Applies every layer of the image at `src` (an OCI layout directory, an OCI
 * archive or docker-save tarball, maybe gzip'd, or a stream of one) into
 * `rootfs`. Throws ERR_IMAGE_IMPORT (malformed or unsupported source, limit
 * exceeded), ERR_IMAGE_DIGEST (content not matching its digest) or
 * ERR_IMAGE_BUILD (host I/O).
 */
export async function importOci(
  src: string | NodeJS.ReadableStream,
  rootfs: string,
  opts: OciImportOptions,
): Promise<OciImageConfig> {
  const log = opts.log;
  const started = performance.now();
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  const source = typeof src === 'string' ? src : '-';
  try {
    const root = await RootFs.open(rootfs);
    const { dir, kind } = await openSource(src, {
      scratch: opts.scratch,
      maxBytes,
      onProgress: opts.onProgress,
      log,
    });
    const plan = kind === 'oci' ? await readOciPlan(dir, opts.ref) : await readDockerPlan(dir, opts.ref);
    log?.debug(
      {
        event: 'image.oci_resolved',
        source,
        format: plan.format,
        digest: plan.digest,
        layers: plan.layers.length,
      },
      `image ${plan.digest}: ${plan.layers.length} layers`,
    );
    const chown = process.geteuid?.() === 0;
    const stats: ApplyStats = { devices: 0, xattrs: 0, idsMapped: 0, entries: 0 };
    const ctx = {
      budget: new Budget(maxBytes, 'uncompressed layer bytes'),
      stats,
      chown,
      background: new Background(),
    };
    const total = plan.layers.length;
    opts.onProgress?.({ phase: 'layers', done: 0, total });
    for (const [i, layer] of plan.layers.entries()) {
      const t = performance.now();
      const before = ctx.budget.used;
      await applyLayer(root, layer, ctx);
      log?.debug(
        {
          event: 'image.oci_layer_applied',
          layer: i + 1,
          digest: layer.blob ? `${layer.blob.digest.algorithm}:${layer.blob.digest.hex}` : undefined,
          bytes: ctx.budget.used - before,
          ms: Math.round(performance.now() - t),
        },
        `${layer.label} applied`,
      );
      opts.onProgress?.({ phase: 'layers', done: i + 1, total });
    }
    const out = configFacts(plan, stats);
    log?.info(
      {
        event: 'image.oci_applied',
        source,
        format: out.format,
        digest: out.digest,
        layers: out.layers,
        entries: stats.entries,
        bytes: ctx.budget.used,
        skipped: out.skipped,
        idsMapped: stats.idsMapped,
        ...(chown ? {} : { ownersKept: true }),
        ms: Math.round(performance.now() - started),
      },
      `image ${out.digest} unpacked: ${out.layers} layers, ${stats.entries} entries` +
        (out.skipped.devices ? `, ${out.skipped.devices} device nodes skipped` : '') +
        (out.skipped.xattrs ? `, ${out.skipped.xattrs} xattrs skipped` : '') +
        (stats.idsMapped ? `, ${stats.idsMapped} owners ≥ 65536 mapped to nobody` : '') +
        (chown ? '' : ' (not root: owners not set)'),
    );
    return out;
  } catch (err) {
    const e = asImageError(err, ImageErrorCode.IMPORT, `import of ${source}`);
    log?.error({ event: 'image.oci_import_failed', source, code: e.code, err: e.message }, e.message);
    throw e;
  }
}
