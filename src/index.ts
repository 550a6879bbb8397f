/**
 * actorvm's public API. Explicit named re-exports only: what is not listed
 * here is internal and may change.
 */

export type { NetworkOptions } from './actors/net/config.js';
// The guest agent's client (also usable on its own)
export { AgentClient } from './agent/client.js';
export { SandboxError } from './api/errors.js';
export type { ProcessResult } from './api/process.js';
export { SandboxProcess } from './api/process.js';
// The same API over a daemon (Runtime.connect)
export type {
  ConnectOptions,
  RemoteExecOptions,
  RemoteSandboxOptions,
  RemoteSpawnOptions,
  RemoteWatchEvent,
} from './api/remote/index.js';
export {
  RemoteError,
  RemoteErrorCode,
  RemoteFiles,
  RemoteProcess,
  RemoteRuntime,
  RemoteSandbox,
  RemoteWatcher,
} from './api/remote/index.js';
export type { BackendChoice, ForwardOption, RuntimeOptions, SandboxOptions } from './api/runtime.js';
// Sandboxes: the main API
export { Runtime } from './api/runtime.js';
export type {
  Command,
  ExecOptions,
  ExecResult,
  FileInfo,
  SpawnOptions as SandboxSpawnOptions,
} from './api/sandbox.js';
export { Sandbox, SandboxFiles } from './api/sandbox.js';
export { DaemonError, DaemonErrorCode } from './daemon/errors.js';
export { Daemon, type DaemonOptions } from './daemon/server.js';
export { ActorvmError, hasCode } from './errors.js';
export type { BuiltImage } from './images/layout.js';
export type { ImageFileSpec, ImageSpec } from './images/spec.js';
export { ImageStore } from './images/store.js';
export type { Codec, Infer } from './protocol/codec.js';
// Message codecs
export {
  array,
  bool,
  bytes,
  CodecError,
  empty,
  f64,
  i32,
  optional,
  str,
  struct,
  u8,
  u16,
  u32,
  union,
} from './protocol/codec.js';
export type {
  Actor,
  ActorAddress,
  ActorContext,
  ActorKind,
  ArgsOf,
  MessageOf,
  Placement,
  Reply,
  ReplyOf,
  StopReason,
  SupervisionPolicy,
} from './runtime/actor.js';
export { DEFAULT_SUPERVISION, defineActor } from './runtime/actor.js';
export type { ActorInfo } from './runtime/actor-cell.js';
export type { AskOptions } from './runtime/actor-ref.js';
export { ActorRef } from './runtime/actor-ref.js';
export type { ActorSystemOptions, Escalation, SpawnOptions } from './runtime/actor-system.js';
// Actor runtime
export { ActorSystem } from './runtime/actor-system.js';
export {
  ActorCrashedError,
  AskTimeoutError,
  DeadLetterError,
  RemoteActorError,
  SystemStoppedError,
  WorkerExitedError,
} from './runtime/errors.js';
export type { RingStats } from './runtime/ring.js';
export { RingClosedError, RingRecordTooLargeError } from './runtime/ring.js';
