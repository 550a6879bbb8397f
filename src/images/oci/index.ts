/**
 * OCI / docker-save image import: see import.ts. Only this is public; the
 * rest of oci/ is its parts.
 */
export { DEFAULT_MAX_BYTES, importOci, type OciImageConfig, type OciImportOptions } from './import.js';
