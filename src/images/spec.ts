/**
 * What an image is made of. A spec is data (JSON-safe), so it can come from
 * the CLI, the Runtime API or a file, and its canonical form is hashed into
 * the image id.
 *
 * Every image has the same base underneath: busybox, the guest agent as
 * /init, the virtio kernel modules and a minimal /etc. A spec adds Debian
 * packages (with their dependency closure, debian/), host executables (with
 * the shared libraries they load), files, environment and a working
 * directory. Images imported from OCI or docker-save sources (importer.ts)
 * have no spec beyond their name.
 */
import { posix } from 'node:path';
import { z } from 'zod';
import { ImageError, ImageErrorCode } from './errors.js';

/** One file placed into the image. Exactly one of `source` and `content`. */
export interface ImageFileSpec {
  /** Absolute path inside the image. */
  path: string;
  /** Host path to copy: a file (its mode is kept unless `mode` is given) or a directory tree. */
  source?: string;
  /** Literal UTF-8 content. */
  content?: string;
  /** Permission bits; default: the source's, or 0o644 for `content`. */
  mode?: number;
}

export interface ImageSpec {
  /** Image name, the handle users pass around: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`. */
  name: string;
  /**
   * Host executables, copied with the shared libraries they load (and the ELF
   * interpreter), each at the same absolute path as on the host. A symlink is
   * kept as a symlink next to its copied target.
   */
  binaries?: string[];
  files?: ImageFileSpec[];
  /**
   * Debian packages to install, with their whole dependency closure as if into
   * an empty system (no recommends), from the archives the host's apt uses.
   */
  packages?: string[];
  /** Environment of the agent, hence the default of every command it runs. */
  env?: Record<string, string>;
  /** Default working directory of commands (absolute; created in the image). */
  workdir?: string;
}

/** The name of the default image (the base alone). */
export const BASE_IMAGE_NAME = 'base';

/** The spec of the default image. */
export function baseImageSpec(): ImageSpec {
  return { name: BASE_IMAGE_NAME };
}

/** Paths the base owns: replacing them would leave a sandbox without its agent or mounts. */
const RESERVED = ['/init', '/sbin/actorvm-agent', '/proc', '/sys', '/dev', '/run', '/tmp', '/lib/modules'];

const imagePath = z
  .string()
  .min(2)
  .max(4096)
  .refine((p) => p.startsWith('/'), 'must be absolute')
  .refine((p) => !p.includes('\0'), 'must not contain NUL')
  .refine(
    (p) => posix.normalize(p) === p && !p.endsWith('/'),
    'must be normalized (no //, ./, ../, trailing /)',
  )
  .refine(
    (p) => !RESERVED.some((r) => p === r || p.startsWith(`${r}/`)),
    `must not be one of, or under, ${RESERVED.join(' ')}`,
  );

const fileSchema = z
  .object({
    path: imagePath,
    source: z.string().min(1).optional(),
    content: z.string().optional(),
    mode: z.number().int().min(0).max(0o7777).optional(),
  })
  .strict()
  .refine(
    (f) => (f.source === undefined) !== (f.content === undefined),
    'give exactly one of source, content',
  );

const envKey = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a shell identifier');
// Values travel on the kernel command line (QEMU) and in argv (namespaces):
// no NUL, no newline, no double quote (the kernel's quoting has no escapes).
const envValue = z.string().refine((v) => !/[\0\n"]/.test(v), 'must not contain NUL, newline or "');

export const imageSpecSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}'),
    binaries: z
      .array(
        z
          .string()
          .min(2)
          .refine((p) => p.startsWith('/'), 'must be an absolute host path'),
      )
      .optional(),
    packages: z
      .array(
        z
          .string()
          .regex(/^[a-z0-9][a-z0-9+.-]{0,127}$/, 'must be a Debian package name (lowercase, [a-z0-9+.-])'),
      )
      .max(512)
      .optional(),
    files: z.array(fileSchema).optional(),
    env: z.record(envKey, envValue).optional(),
    workdir: imagePath.optional(),
  })
  .strict();

/** Validates a spec (from JSON, the CLI, …); throws ERR_IMAGE_SPEC with every problem listed. */
export function parseImageSpec(input: unknown): ImageSpec {
  const r = imageSpecSchema.safeParse(input);
  if (!r.success) {
    throw new ImageError(ImageErrorCode.SPEC, `invalid image spec: ${z.prettifyError(r.error)}`, {
      issues: r.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
    });
  }
  const spec = r.data as ImageSpec;
  if (
    spec.name === BASE_IMAGE_NAME &&
    (spec.binaries?.length ||
      spec.files?.length ||
      spec.packages?.length ||
      spec.workdir ||
      Object.keys(spec.env ?? {}).length)
  ) {
    // 'base' always means the default image (ImageStore.ensure('base') rebuilds exactly that).
    throw new ImageError(
      ImageErrorCode.SPEC,
      `the name ${BASE_IMAGE_NAME} is reserved for the default image: choose another`,
    );
  }
  const paths = new Set<string>();
  for (const f of spec.files ?? []) {
    if (paths.has(f.path)) throw new ImageError(ImageErrorCode.SPEC, `file ${f.path} is listed twice`);
    paths.add(f.path);
  }
  return spec;
}

/**
 * The canonical form that is hashed: keys in a fixed order, binaries sorted and
 * deduplicated, files sorted by path, env sorted by key. Two specs that build
 * the same image canonicalize to the same string.
 */
export function canonicalSpec(spec: ImageSpec): string {
  const files = [...(spec.files ?? [])]
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
    .map((f) => ({
      path: f.path,
      source: f.source ?? null,
      content: f.content ?? null,
      mode: f.mode ?? null,
    }));
  const env = Object.keys(spec.env ?? {})
    .sort()
    .map((k) => [k, spec.env![k]]);
  // Fields added later appear only when set, so older specs keep their ids.
  return JSON.stringify({
    name: spec.name,
    binaries: [...new Set(spec.binaries ?? [])].sort(),
    files,
    env,
    ...(spec.packages?.length ? { packages: [...new Set(spec.packages)].sort() } : {}),
    ...(spec.workdir ? { workdir: spec.workdir } : {}),
  });
}
