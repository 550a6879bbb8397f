/**
 * `image import`: an OCI image (layout directory, OCI archive) or a `docker
 * save` tarball becomes an image in the store, as usable as a built one.
 *
 * oci/ applies the layers (digests verified, whiteouts, owners) into a fresh
 * rootfs, on an image worker: gunzip, hashing and thousands of small file
 * operations stay off the caller's event loop (a stream, stdin, is spooled
 * to a file first, since streams do not cross threads). This file lays the
 * base over the result in `inject` mode (base-tree.ts: the
 * agent as /init and the modules forced in, busybox only where the image has
 * no tool of that name, the network's /etc files replaced), records the
 * config's Env, WorkingDir and Entrypoint/Cmd (recorded, never run: a
 * sandbox's PID 1 is the agent), and commits the directory like any build
 * (image-dir.ts). A failure at any point removes the temporary directory,
 * so a bad digest leaves nothing in the store.
 *
 * The id hashes the image's digest with the base (agent, busybox, kernel)
 * and the name, so importing the same image again is a cache hit only after
 * the work is done once more — the digest of an archive is known only after
 * reading it — and a new agent gives a new id.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { MessageChannel } from 'node:worker_threads';
import type { Piscina } from 'piscina';
import type { Logger } from '../runtime/logger.js';
import {
  agentPlan,
  type BaseOptions,
  baseFiles,
  baseIdentity,
  DEFAULT_ENV,
  listApplets,
  resolveBaseInputs,
  toolsPlan,
} from './base-tree.js';
import { asImageError, ImageError, ImageErrorCode } from './errors.js';
import { FileHashCache } from './hash-cache.js';
import { commitImage, IMAGE_BUILDER_VERSION, makeImageTmp } from './image-dir.js';
import { initEnvProblem, initEnvWord } from './init-env.js';
import { type BuiltImage, ensureLayout, imageLayout, readImage, writeName } from './layout.js';
import { replayLog } from './log-record.js';
import { DEFAULT_MAX_BYTES, type OciImageConfig } from './oci/index.js';
import { createImagePool, runImageTask } from './pool.js';
import { BASE_IMAGE_NAME, parseImageSpec } from './spec.js';

export interface ImportProgress {
  phase: 'read' | 'layers' | 'base' | 'boot';
  done: number;
  total: number;
}

export interface ImportOptions extends BaseOptions {
  home?: string;
  pool?: Piscina;
  log?: Logger;
  /** For a source holding several images: which (ref name annotation, or a docker RepoTag). */
  ref?: string;
  /** Bound on bytes read and unpacked (default: oci/'s, 8 GiB). */
  maxBytes?: number;
  onProgress?: (p: ImportProgress) => void;
}

/**
 * An image's env reaches the agent on the kernel command line (QEMU: at most
 * 30 variables in about 2 KiB, no quotes) and in argv (namespaces); what
 * cannot travel there is left out, and logged, rather than failing every boot.
 */
const MAX_IMPORTED_ENV = 24;
const MAX_IMPORTED_ENV_BYTES = 1200;

/** Copies a stream (stdin) to `file`, refusing more than `maxBytes`. */
async function spool(
  src: NodeJS.ReadableStream,
  file: string,
  maxBytes = DEFAULT_MAX_BYTES,
): Promise<string> {
  let seen = 0;
  const bound = new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > maxBytes) {
        done(
          new ImageError(ImageErrorCode.IMPORT, `the source stream exceeds ${maxBytes} bytes`, { maxBytes }),
        );
      } else done(null, chunk);
    },
  });
  await pipeline(src, bound, createWriteStream(file, { mode: 0o600 }));
  return file;
}

/** importOci on an image worker, its progress relayed, its log lines written here, its error rethrown. */
async function importOnWorker(
  pool: Piscina,
  src: string,
  rootfs: string,
  scratch: string,
  opts: ImportOptions,
): Promise<OciImageConfig> {
  const { port1, port2 } = new MessageChannel();
  port1.on('message', (p: ImportProgress) => opts.onProgress?.(p));
  try {
    const r = await runImageTask(
      pool,
      { op: 'importOci', src, rootfs, scratch, ref: opts.ref, maxBytes: opts.maxBytes, progress: port2 },
      [port2],
    );
    replayLog(opts.log, r.log);
    if (!r.ok) throw new ImageError(r.code, r.message, r.details);
    return r.config;
  } finally {
    port1.close();
  }
}

/**
 * Imports `src` (a path, or a stream such as stdin) as image `name`. Throws
 * ERR_IMAGE_SPEC (bad name), ERR_IMAGE_IMPORT, ERR_IMAGE_DIGEST or
 * ERR_IMAGE_BUILD; nothing is stored on failure.
 */
export async function importImage(
  name: string,
  src: string | NodeJS.ReadableStream,
  opts: ImportOptions = {},
): Promise<BuiltImage> {
  const spec = parseImageSpec({ name });
  if (name === BASE_IMAGE_NAME) {
    throw new ImageError(
      ImageErrorCode.SPEC,
      `the name ${BASE_IMAGE_NAME} is reserved for the default image`,
    );
  }
  const layout = imageLayout(opts.home);
  const log = opts.log;
  const started = performance.now();
  let ownPool: Piscina | undefined;
  const pool = opts.pool ?? (ownPool = createImagePool());
  const cache = new FileHashCache(layout.hashCache);
  try {
    await ensureLayout(layout);
    const base = resolveBaseInputs(opts);
    const files = baseFiles(base);
    const hashes = await cache.hashFiles(files, () => pool);
    const sha = new Map(files.map((p, i) => [p, hashes[i]]));
    const { tmp, rootfs } = await makeImageTmp(layout, `import-${name}`);
    let image: BuiltImage;
    try {
      const scratch = join(tmp, 'scratch');
      await mkdir(scratch);
      log?.info({ event: 'image.import_started', image: name }, `importing image ${name}`);
      const path = typeof src === 'string' ? src : await spool(src, join(tmp, 'source.tar'), opts.maxBytes);
      const cfg = await importOnWorker(pool, path, rootfs, scratch, opts);
      await rm(scratch, { recursive: true, force: true });
      if (typeof src !== 'string') await rm(path, { force: true });
      opts.onProgress?.({ phase: 'base', done: 0, total: 1 });
      await runImageTask(pool, {
        op: 'populate',
        root: rootfs,
        entries: [
          ...toolsPlan(base, await listApplets(base.busybox), 'inject'),
          ...agentPlan(base, 'inject'),
          ...(cfg.workdir ? [{ type: 'dir' as const, path: cfg.workdir, mode: 0o755, ifAbsent: true }] : []),
        ],
      });
      const env = { ...DEFAULT_ENV };
      const dropped: string[] = [];
      let kept = 0;
      let bytes = 0;
      for (const [k, v] of Object.entries(cfg.env)) {
        bytes += Buffer.byteLength(initEnvWord(k, v)) + 1;
        if (!initEnvProblem(k, v) && kept < MAX_IMPORTED_ENV && bytes <= MAX_IMPORTED_ENV_BYTES) {
          env[k] = v;
          kept++;
        } else dropped.push(k);
      }
      if (dropped.length) {
        log?.warn(
          { event: 'image.env_dropped', image: name, keys: dropped },
          `image ${name}: environment variables that cannot reach a guest's init were left out: ${dropped.join(', ')}`,
        );
      }
      const id = createHash('sha256')
        .update(
          JSON.stringify({
            builder: IMAGE_BUILDER_VERSION,
            imported: cfg.digest,
            name,
            base: baseIdentity(base, (p) => sha.get(p)),
          }),
        )
        .digest('hex')
        .slice(0, 16);
      const existing = await readImage(layout, id);
      if (existing) {
        await rm(tmp, { recursive: true, force: true });
        await writeName(layout, name, id);
        return { ...existing, fromCache: true };
      }
      opts.onProgress?.({ phase: 'boot', done: 0, total: 1 });
      const defaultCommand = [...(cfg.entrypoint ?? []), ...(cfg.cmd ?? [])];
      image = await commitImage(
        layout,
        tmp,
        {
          name,
          id,
          env,
          spec,
          ...(cfg.workdir ? { workdir: cfg.workdir } : {}),
          ...(defaultCommand.length ? { defaultCommand } : {}),
          imported: {
            format: cfg.format,
            digest: cfg.digest,
            source: typeof src === 'string' ? src : '-',
            ...(cfg.user ? { user: cfg.user } : {}),
          },
        },
        base,
        sha.get(base.kernel.path)!,
        pool,
      );
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
    await writeName(layout, name, image.id);
    log?.info(
      {
        event: 'image.imported',
        image: name,
        id: image.id,
        digest: image.imported?.digest,
        sizeBytes: image.sizeBytes,
        ms: Math.round(performance.now() - started),
      },
      `image ${name} imported (${image.id})`,
    );
    return { ...image, fromCache: false };
  } catch (err) {
    const e = asImageError(err, ImageErrorCode.IMPORT, `import of ${name}`);
    log?.error({ event: 'image.import_failed', image: name, code: e.code, err: e.message }, e.message);
    throw e;
  } finally {
    await cache.save().catch(() => {});
    if (ownPool) await ownPool.destroy();
  }
}
