/** Public API of the guest-agent client. */

export type {
  AgentDirEntry,
  AgentHello,
  AgentStat,
  FileInfo,
  FileKind,
  NetConfig,
  ShutdownAction,
  TerminalSize,
  WatchEndReason,
  WatchEventType,
} from '../protocol/agent-messages.js';
export {
  AgentClient,
  type CallOptions,
  type ConnectOptions,
  type ExecOptions,
  type ExecResult,
  type GetFileResult,
  type PutFileOptions,
  type RunCommand,
  type RunOptions,
  type VirtioSerialConnectOptions,
} from './client.js';
export {
  AgentCancelledError,
  AgentClosedError,
  AgentError,
  AgentErrorCode,
  AgentNotDirectoryError,
  AgentNotRegularFileError,
  AgentProtocolError,
  AgentRemoteError,
  AgentSizeMismatchError,
  AgentTimeoutError,
  AgentWatchLimitError,
} from './errors.js';
export { agentBinaryPath, type LocalAgent, type LocalAgentOptions, startLocalAgent } from './local.js';
export { AgentProcess, type RunResult } from './process.js';
export { AgentWatch, type AgentWatchEvents, type WatchEvent } from './watch.js';
