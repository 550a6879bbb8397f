/**
 * A `docker save` tree → the plan of one image in it. manifest.json lists
 * images as {Config, RepoTags, Layers}, paths relative to the tree: the
 * classic layout has `<hex>.json` configs and `<id>/layer.tar` layers,
 * docker ≥ 25 points into `blobs/sha256/` (and also writes an OCI layout,
 * which is preferred when present — see source.ts).
 *
 * There are no manifest digests here. The config is named by its own
 * SHA-256 (the image id), which is checked, and is the image's digest; each
 * layer is checked against the config's rootfs.diff_ids as it is applied.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { ImageError, ImageErrorCode } from '../errors.js';
import { isFile, parseDigest, readSmallFile } from './digest.js';
import { checkPlatform, type ImagePlan } from './image-plan.js';
import { refMatches } from './refs.js';
import { configSchema, dockerManifestSchema, parseDocument } from './schema.js';
import { entryParts } from './tar.js';

const importError = (msg: string): ImageError => new ImageError(ImageErrorCode.IMPORT, msg);

/** `p` (from manifest.json) under `dir`; it must stay inside. */
function inside(dir: string, p: string, what: string): string {
  const parts = p.startsWith('/') || p.split('/').includes('..') ? undefined : entryParts(p);
  if (!parts?.length)
    throw importError(`manifest.json: ${what} ${JSON.stringify(p)} is not a path inside the archive`);
  return join(dir, ...parts);
}

/** A config file named by a SHA-256 (`<hex>.json`, `blobs/sha256/<hex>`) must have it. */
const NAMED_BY_HASH = /(?:^|\/)([a-f0-9]{64})(?:\.json)?$/;

export async function readDockerPlan(dir: string, ref: string | undefined): Promise<ImagePlan> {
  const entries = parseDocument(
    dockerManifestSchema,
    await readSmallFile(join(dir, 'manifest.json'), 'manifest.json'),
    'manifest.json',
  );
  const tags = (e: (typeof entries)[number]) => e.RepoTags ?? [];
  const matching = ref === undefined ? entries : entries.filter((e) => refMatches(ref, tags(e)));
  if (!matching.length) {
    const all = entries.flatMap(tags);
    throw importError(
      `no image tagged ${ref} in manifest.json${all.length ? `; it has ${all.join(', ')}` : ''}`,
    );
  }
  const unique = [...new Map(matching.map((e) => [e.Config, e])).values()];
  if (unique.length > 1) {
    throw importError(
      `manifest.json holds ${unique.length} images; pass a ref to pick one: ${unique.map((e) => tags(e).join(' = ') || e.Config).join(', ')}`,
    );
  }
  const image = unique[0];
  const cfgBytes = await readSmallFile(inside(dir, image.Config, 'Config'), `config ${image.Config}`);
  const hex = createHash('sha256').update(cfgBytes).digest('hex');
  const named = NAMED_BY_HASH.exec(image.Config);
  if (named && named[1] !== hex) {
    throw new ImageError(
      ImageErrorCode.DIGEST,
      `config ${image.Config}: content has digest sha256:${hex}, expected sha256:${named[1]}`,
      { expected: `sha256:${named[1]}`, actual: `sha256:${hex}` },
    );
  }
  const digest = `sha256:${hex}`;
  const config = parseDocument(configSchema, cfgBytes, `config ${image.Config}`);
  checkPlatform(config, `image ${digest}`);
  const n = image.Layers.length;
  if (config.rootfs.diff_ids.length !== n) {
    throw importError(`config ${image.Config}: ${config.rootfs.diff_ids.length} diff_ids for ${n} layers`);
  }
  const layers = image.Layers.map((p, i) => ({
    label: `layer ${i + 1}/${n} (${p})`,
    path: inside(dir, p, 'layer'),
    compression: 'detect' as const,
    diffId: parseDigest(config.rootfs.diff_ids[i]),
  }));
  for (const l of layers)
    if (!(await isFile(l.path))) throw importError(`${l.label}: file missing from the archive`);
  return { format: 'docker', digest, config, layers };
}
