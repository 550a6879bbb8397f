/**
 * The JSON documents of an image, as zod schemas: index.json and image
 * indexes, manifests, the image config, oci-layout, and docker-save's
 * manifest.json. Only the fields the importer reads are checked; the rest
 * are stripped, so a newer writer's extra fields do not break an import.
 * Docker writes `null` where OCI omits a field, hence the `nullish()`s.
 */
import { z } from 'zod';
import { ImageError, ImageErrorCode } from '../errors.js';
import { DIGEST_PATTERN } from './digest.js';

const digest = z.string().regex(DIGEST_PATTERN, 'must be sha256:<64 hex> or sha512:<128 hex>');

const platform = z.object({
  architecture: z.string(),
  os: z.string(),
  variant: z.string().optional(),
});

export const descriptorSchema = z.object({
  mediaType: z.string().optional(),
  digest,
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).nullish(),
  annotations: z.record(z.string(), z.string()).nullish(),
  platform: platform.nullish(),
});
export type Descriptor = z.infer<typeof descriptorSchema>;

export const indexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(descriptorSchema),
});
export type ImageIndex = z.infer<typeof indexSchema>;

export const manifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: descriptorSchema,
  layers: z.array(descriptorSchema),
});
export type ImageManifest = z.infer<typeof manifestSchema>;

const stringList = z.array(z.string()).nullish();

export const configSchema = z.object({
  architecture: z.string().nullish(),
  os: z.string().nullish(),
  config: z
    .object({
      Env: stringList,
      WorkingDir: z.string().nullish(),
      Entrypoint: stringList,
      Cmd: stringList,
      User: z.string().nullish(),
    })
    .nullish(),
  rootfs: z.object({
    type: z.literal('layers'),
    diff_ids: z.array(digest),
  }),
});
export type ImageConfigDocument = z.infer<typeof configSchema>;

export const ociLayoutSchema = z.object({
  imageLayoutVersion: z.string().regex(/^1\./, 'must be 1.x'),
});

export const dockerManifestSchema = z
  .array(
    z.object({
      Config: z.string().min(1),
      RepoTags: z.array(z.string()).nullish(),
      Layers: z.array(z.string().min(1)),
    }),
  )
  .min(1, 'lists no image');
export type DockerManifest = z.infer<typeof dockerManifestSchema>;

/** Parses `bytes` as JSON; ERR_IMAGE_IMPORT naming `what` otherwise. */
export function parseJson(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new ImageError(ImageErrorCode.IMPORT, `${what} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Validates a parsed document; ERR_IMAGE_IMPORT naming `what` and every problem otherwise. */
export function validate<T extends z.ZodType>(schema: T, json: unknown, what: string): z.infer<T> {
  const r = schema.safeParse(json);
  if (!r.success) {
    throw new ImageError(ImageErrorCode.IMPORT, `${what} is malformed: ${z.prettifyError(r.error)}`);
  }
  return r.data;
}

export function parseDocument<T extends z.ZodType>(schema: T, bytes: Buffer, what: string): z.infer<T> {
  return validate(schema, parseJson(bytes, what), what);
}
