/** The remote client: the Runtime API over an `actorctl serve` daemon (theory in runtime.ts). */
export { RemoteError, RemoteErrorCode } from './errors.js';
export { RemoteFiles } from './files.js';
export { RemoteProcess } from './process.js';
export {
  type ConnectOptions,
  connectRuntime,
  type PoolsInfo,
  RemoteRuntime,
  type RemoteSandboxOptions,
} from './runtime.js';
export {
  type RemoteExecOptions,
  type RemoteForkOptions,
  type RemoteForkResult,
  type RemoteProcessInfo,
  RemoteSandbox,
  type RemoteSpawnOptions,
  type SandboxSummary,
} from './sandbox.js';
export { type RemoteWatchEvent, RemoteWatcher } from './watcher.js';
