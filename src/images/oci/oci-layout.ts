/**
 * An OCI image layout (a directory with oci-layout, index.json and
 * blobs/<alg>/<hex>) → the plan of one image in it.
 *
 * index.json is the only unverified document: it is the entry point, named
 * by nobody. From there every step is by digest — a nested image index (a
 * multi-platform image), a manifest, its config, its layers — and each blob
 * is verified as it is read. Choosing among several entries: `ref` first
 * (see refs.ts), then the platform: the one linux/amd64 entry, or the only
 * entry that declares no platform (single-image layouts rarely do; the
 * config's own os/architecture is checked instead). Attestation manifests
 * (buildx's provenance, "unknown/unknown") are never images.
 */
import { join } from 'node:path';
import { ImageError, ImageErrorCode } from '../errors.js';
import { blobPath, type Digest, isFile, parseDigest, readBlob, readSmallFile } from './digest.js';
import { checkPlatform, type ImagePlan, type LayerSource, PLATFORM } from './image-plan.js';
import {
  CONFIG_TYPES,
  INDEX_TYPES,
  layerCompression,
  MANIFEST_TYPES,
  OCI_INDEX,
  OCI_MANIFEST,
} from './media-types.js';
import { descriptorRefs, refMatches } from './refs.js';
import {
  configSchema,
  type Descriptor,
  type ImageManifest,
  indexSchema,
  manifestSchema,
  ociLayoutSchema,
  parseDocument,
  parseJson,
  validate,
} from './schema.js';

/** Index → index → manifest is the deepest anyone nests; a few more levels are tolerated, loops are not. */
const MAX_INDEX_DEPTH = 4;

const importError = (msg: string): ImageError => new ImageError(ImageErrorCode.IMPORT, msg);

const isAttestation = (d: Descriptor): boolean =>
  d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest' || d.platform?.os === 'unknown';

const isAmd64 = (d: Descriptor): boolean =>
  d.platform?.os === PLATFORM.os && d.platform.architecture === PLATFORM.architecture;

function describe(d: Descriptor): string {
  const refs = descriptorRefs(d);
  const plat = d.platform ? `${d.platform.os}/${d.platform.architecture}` : 'no platform';
  return `${refs.length ? refs.join(' = ') : d.digest} (${plat})`;
}

/** The entry of `descs` to use. `top`: the entries are distinct images (index.json), not platforms of one. */
function pick(descs: readonly Descriptor[], where: string, top: boolean): Descriptor {
  // The same image listed under two tags is one image.
  const unique = [...new Map(descs.map((d) => [d.digest, d])).values()];
  const usable = unique.filter((d) => !isAttestation(d));
  if (!usable.length) throw importError(`${where} lists no image`);
  const amd64 = usable.filter(isAmd64);
  if (amd64.length === 1 || (amd64.length > 1 && !top)) return amd64[0];
  const bare = usable.filter((d) => !d.platform);
  if (amd64.length === 0 && bare.length === 1) return bare[0];
  if (amd64.length > 1 || bare.length > 1) {
    throw importError(
      `${where} holds ${usable.length} images; pass a ref to pick one: ${usable.map(describe).join(', ')}`,
    );
  }
  throw importError(
    `${where} has no ${PLATFORM.os}/${PLATFORM.architecture} image: ${usable.map(describe).join(', ')}`,
  );
}

function declaredType(d: Descriptor, json: unknown, what: string): string {
  const doc = (json ?? {}) as { mediaType?: unknown; manifests?: unknown; config?: unknown };
  const inner = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  if (d.mediaType && inner && d.mediaType !== inner) {
    throw importError(`${what}: its descriptor says ${d.mediaType} but the document says ${inner}`);
  }
  // OCI lets a manifest omit its mediaType; its shape tells.
  return (
    d.mediaType ??
    inner ??
    (Array.isArray(doc.manifests) ? OCI_INDEX : doc.config !== undefined ? OCI_MANIFEST : 'unknown')
  );
}

async function chooseManifest(
  dir: string,
  descs: readonly Descriptor[],
  where: string,
  depth: number,
): Promise<{ digest: string; manifest: ImageManifest }> {
  if (depth > MAX_INDEX_DEPTH) throw importError(`${where}: image indexes nested too deeply`);
  const d = pick(descs, where, depth === 0);
  const what = `manifest ${d.digest}`;
  const json = parseJson(
    await readBlob(dir, { digest: parseDigest(d.digest), size: d.size }, 'manifest'),
    what,
  );
  const type = declaredType(d, json, what);
  if (INDEX_TYPES.includes(type)) {
    const index = validate(indexSchema, json, `image index ${d.digest}`);
    return chooseManifest(dir, index.manifests, `image index ${d.digest}`, depth + 1);
  }
  if (MANIFEST_TYPES.includes(type))
    return { digest: d.digest, manifest: validate(manifestSchema, json, what) };
  throw importError(`${what}: unsupported media type ${type}`);
}

function layerSource(dir: string, d: Descriptor, i: number, n: number, diffId: Digest): LayerSource {
  const label = `layer ${i + 1}/${n} (${d.digest})`;
  if (!d.mediaType) throw importError(`${label}: no mediaType`);
  const compression = layerCompression(d.mediaType);
  if (!compression) {
    throw importError(
      `${label}: unsupported layer media type ${d.mediaType}${d.mediaType.includes('encrypted') ? ' (encrypted layers are not supported)' : ''}`,
    );
  }
  const digest = parseDigest(d.digest);
  return { label, path: blobPath(dir, digest), blob: { digest, size: d.size }, compression, diffId };
}

/** The plan of the image that `ref` (or the platform) picks in the layout at `dir`. */
export async function readOciPlan(dir: string, ref: string | undefined): Promise<ImagePlan> {
  const layoutFile = join(dir, 'oci-layout');
  if (await isFile(layoutFile))
    parseDocument(ociLayoutSchema, await readSmallFile(layoutFile, 'oci-layout'), 'oci-layout');
  const index = parseDocument(
    indexSchema,
    await readSmallFile(join(dir, 'index.json'), 'index.json'),
    'index.json',
  );
  let top = index.manifests;
  if (ref !== undefined) {
    top = top.filter((d) => refMatches(ref, descriptorRefs(d)));
    if (!top.length) {
      const names = index.manifests.flatMap(descriptorRefs);
      throw importError(
        `no image named ${ref} in index.json${names.length ? `; it has ${names.join(', ')}` : ' (its images have no names)'}`,
      );
    }
  }
  const { digest, manifest } = await chooseManifest(dir, top, 'index.json', 0);
  const cfg = manifest.config;
  if (cfg.mediaType && !CONFIG_TYPES.includes(cfg.mediaType)) {
    throw importError(`manifest ${digest}: config of type ${cfg.mediaType} is not a container image config`);
  }
  const what = `config ${cfg.digest}`;
  const config = parseDocument(
    configSchema,
    await readBlob(dir, { digest: parseDigest(cfg.digest), size: cfg.size }, 'config'),
    what,
  );
  checkPlatform(config, `image ${digest}`);
  const n = manifest.layers.length;
  if (config.rootfs.diff_ids.length !== n) {
    throw importError(`${what}: ${config.rootfs.diff_ids.length} diff_ids for the manifest's ${n} layers`);
  }
  const layers = manifest.layers.map((d, i) =>
    layerSource(dir, d, i, n, parseDigest(config.rootfs.diff_ids[i])),
  );
  for (const [i, l] of layers.entries()) {
    if (await isFile(l.path)) continue;
    const urls = manifest.layers[i].urls ?? [];
    throw importError(
      `${l.label}: blob missing from the layout${urls.length ? ` (a non-distributable layer, published at ${urls[0]}; fetching is not supported)` : ''}`,
    );
  }
  return { format: 'oci', digest, config, layers };
}
