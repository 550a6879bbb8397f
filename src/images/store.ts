/**
 * The local image store: list, look up, build on demand, remove. Images are
 * plain files under $ACTORVM_HOME/images (layout.ts), so this needs no running
 * system and several processes may share one store.
 */
import { randomBytes } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Piscina } from 'piscina';
import type { Logger } from '../runtime/logger.js';
import { type BuildOptions, buildImage } from './builder.js';
import { ImageError, ImageErrorCode } from './errors.js';
import {
  type BuiltImage,
  ensureLayout,
  type ImageLayout,
  imageLayout,
  isImageId,
  listImageIds,
  readImage,
  readName,
  readNames,
  removeName,
} from './layout.js';
import { BASE_IMAGE_NAME, baseImageSpec, canonicalSpec, type ImageSpec } from './spec.js';
import { shippedTemplate } from './templates.js';

/** An image as listed: with the names that currently point at it. */
export interface ImageListEntry extends BuiltImage {
  /** Names pointing at this image (empty for an older build a name has moved away from). */
  names: string[];
}

export interface ImageStoreOptions {
  /** State directory; default ACTORVM_HOME or ~/.actorvm. */
  home?: string;
  /** Pool for builds (see BuildOptions.pool). */
  pool?: Piscina;
  log?: Logger;
}

export class ImageStore {
  readonly layout: ImageLayout;
  readonly #opts: ImageStoreOptions;

  constructor(opts: ImageStoreOptions = {}) {
    this.#opts = opts;
    this.layout = imageLayout(opts.home);
  }

  /** Every built image, newest first. */
  async list(): Promise<ImageListEntry[]> {
    const names = await readNames(this.layout);
    const out: ImageListEntry[] = [];
    for (const id of await listImageIds(this.layout)) {
      const img = await readImage(this.layout, id);
      if (!img) continue;
      out.push({ ...img, names: [...names].filter(([, v]) => v === id).map(([k]) => k) });
    }
    return out.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0));
  }

  /** The image a name points at, or with this id (or unique id prefix of 4+ digits); undefined if none. */
  async find(nameOrId: string): Promise<BuiltImage | undefined> {
    const byName = await readName(this.layout, nameOrId);
    if (byName) return readImage(this.layout, byName);
    if (isImageId(nameOrId)) return readImage(this.layout, nameOrId);
    if (/^[0-9a-f]{4,15}$/.test(nameOrId)) {
      const matches = (await listImageIds(this.layout)).filter((id) => id.startsWith(nameOrId));
      if (matches.length > 1) {
        throw new ImageError(
          ImageErrorCode.AMBIGUOUS,
          `image id prefix ${nameOrId} matches ${matches.length} images`,
          {
            matches,
          },
        );
      }
      if (matches.length === 1) return readImage(this.layout, matches[0]);
    }
    return undefined;
  }

  /** Like find(), but throws ERR_IMAGE_NOT_FOUND. */
  async get(nameOrId: string): Promise<BuiltImage> {
    const img = await this.find(nameOrId);
    if (!img) throw new ImageError(ImageErrorCode.NOT_FOUND, `no image ${nameOrId}`, { image: nameOrId });
    return img;
  }

  /**
   * The image for `spec`, built if missing (a cache hit otherwise). `'base'`
   * is the default image and a shipped template's name (templates.ts) its
   * spec, unless the store has a different image under that name (a user's
   * own `python` wins); any other bare name must already exist.
   */
  async ensure(
    spec: ImageSpec | string,
    opts: Pick<BuildOptions, 'onProgress' | 'force' | 'refresh'> = {},
  ): Promise<BuiltImage> {
    if (typeof spec === 'string') {
      if (spec === BASE_IMAGE_NAME) spec = baseImageSpec();
      else {
        const shipped = shippedTemplate(spec);
        if (!shipped) return this.get(spec);
        const existing = await this.find(spec);
        if (existing && (existing.imported || canonicalSpec(existing.spec) !== canonicalSpec(shipped))) {
          return existing;
        }
        spec = shipped;
      }
    }
    return buildImage(spec, { home: this.#opts.home, pool: this.#opts.pool, log: this.#opts.log, ...opts });
  }

  /**
   * Removes an image (by name or id) and every name pointing at it. A sandbox
   * still running from it keeps working only on the QEMU backend (QEMU has
   * read its files); do not remove images that namespace sandboxes use.
   */
  async remove(nameOrId: string): Promise<BuiltImage> {
    const img = await this.get(nameOrId);
    await ensureLayout(this.layout);
    for (const [name, id] of await readNames(this.layout)) {
      if (id === img.id) await removeName(this.layout, name);
    }
    // Rename first so the id disappears atomically, then delete at leisure.
    const trash = join(this.layout.tmp, `${img.id}.rm.${randomBytes(4).toString('hex')}`);
    try {
      await rename(img.dir, trash);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return img; // removed concurrently
    }
    await rm(trash, { recursive: true, force: true });
    this.#opts.log?.info(
      { event: 'image.removed', image: img.name, id: img.id },
      `image ${img.name} removed`,
    );
    return img;
  }
}
