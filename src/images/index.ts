/** Images: specs, the content-addressed builder and the local store. */
export {
  BUILD_STEPS,
  type BuildOptions,
  type BuildProgress,
  type BuildStep,
  buildImage,
  IMAGE_BUILDER_VERSION,
} from './builder.js';
export { ImageError, ImageErrorCode } from './errors.js';
export { findKernel, GUEST_MODULES, type KernelInfo, resolveModules } from './kernel.js';
export type { BuiltImage, KernelFormat } from './layout.js';
export { createImagePool, imageWorkerFilename } from './pool.js';
export {
  BASE_IMAGE_NAME,
  baseImageSpec,
  type ImageFileSpec,
  type ImageSpec,
  parseImageSpec,
} from './spec.js';
export { type ImageListEntry, ImageStore, type ImageStoreOptions } from './store.js';
