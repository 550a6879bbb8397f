/**
 * Templates shipped with actorvm: image specs in guest/images/*.json, built
 * the first time a sandbox asks for one by name (`createSandbox({ image:
 * 'python' })`, `actorctl run --image python`, an E2B `templateID`). A
 * template is an ordinary spec; its file is the documentation of what it
 * contains, and copying one is how a user makes their own.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ImageSpec, parseImageSpec } from './spec.js';

// Two levels up from src/images/ or dist/images/: the package root.
const TEMPLATES_DIR = fileURLToPath(new URL('../../guest/images/', import.meta.url));

let cache: Map<string, ImageSpec> | undefined;

function load(): Map<string, ImageSpec> {
  if (cache) return cache;
  cache = new Map();
  let files: string[] = [];
  try {
    files = readdirSync(TEMPLATES_DIR).filter((f) => f.endsWith('.json'));
  } catch {
    return cache; // an installation without templates
  }
  for (const f of files.sort()) {
    const spec = parseImageSpec(JSON.parse(readFileSync(join(TEMPLATES_DIR, f), 'utf8')));
    cache.set(spec.name, spec);
  }
  return cache;
}

/** The shipped template of that name, if any. */
export function shippedTemplate(name: string): ImageSpec | undefined {
  return load().get(name);
}

/** Every shipped template's spec. */
export function shippedTemplates(): ImageSpec[] {
  return [...load().values()];
}
