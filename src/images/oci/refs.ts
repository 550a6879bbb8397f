/**
 * Picking an image by name when a source holds several. OCI layouts name
 * their images in annotations — org.opencontainers.image.ref.name (a tag,
 * or a whole reference) and containerd's io.containerd.image.name (what
 * docker ≥ 25 writes, fully qualified) — and docker-save lists RepoTags
 * ("alpine:3.20"). A ref matches a name when equal to it, or when both mean
 * the same reference once docker's defaults are filled in (docker.io,
 * library/, :latest), so `alpine` finds `docker.io/library/alpine:latest`.
 */
import type { Descriptor } from './schema.js';

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';

/** `ref` with docker's implied registry, namespace and tag made explicit. */
export function normalizeRef(ref: string): string {
  const at = ref.indexOf('@');
  const digest = at >= 0 ? ref.slice(at) : '';
  let name = at >= 0 ? ref.slice(0, at) : ref;
  let tag = '';
  const colon = name.lastIndexOf(':');
  if (colon > name.lastIndexOf('/')) {
    tag = name.slice(colon);
    name = name.slice(0, colon);
  } else if (!digest) tag = ':latest';
  const slash = name.indexOf('/');
  const host = name.slice(0, Math.max(0, slash));
  if (slash < 0) name = `docker.io/library/${name}`;
  else if (!host.includes('.') && !host.includes(':') && host !== 'localhost') name = `docker.io/${name}`;
  return name + tag + digest;
}

export function refMatches(ref: string, names: readonly string[]): boolean {
  const norm = normalizeRef(ref);
  return names.some((n) => n === ref || normalizeRef(n) === norm);
}

/** The names an index entry goes by. */
export function descriptorRefs(d: Descriptor): string[] {
  const a = d.annotations ?? {};
  return [a[REF_NAME_ANNOTATION], a[CONTAINERD_NAME_ANNOTATION]].filter((s): s is string => !!s);
}
