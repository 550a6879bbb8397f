/**
 * Messages of a VM actor, and of the sink on the main thread that receives
 * what a VM actor streams back.
 *
 * Guest operations (exec, put, get, watch) are identified by an id the main
 * thread assigns. Bulk data moves as bytes in both directions with a credit window
 * each way, so a slow consumer on either side bounds the other's memory:
 *
 *   main → VM   `input` chunks (stdin, file content); the VM actor returns
 *               `credit` as the agent takes them.
 *   VM → main   `out` chunks (stdout/stderr, file content, watch event
 *               records); the main thread returns `ack` as its reader
 *               consumes them.
 *
 * Control replies and results are JSON strings (control plane).
 */
import { bool, bytes, f64, type Infer, str, struct, u8, u16, u32, union } from '../../protocol/codec.js';
import { guestLinkVariants } from '../net/messages.js';

/** Unacknowledged bytes allowed in flight per operation and direction. */
export const STREAM_WINDOW = 1 << 20;

export const OUT_STDOUT = 1;
export const OUT_STDERR = 2;
export const OUT_FILE = 3;
/** Packed watch event records (src/protocol/agent-messages.ts, encodeWatchEvents). */
export const OUT_WATCH = 4;

/**
 * What a VM actor tells its observer (the pool that owns an idle machine) at
 * every lifecycle change. An observer's own union must start with these
 * variants, so this codec's tags are valid there (as with guestLinkVariants).
 */
export const machineStateVariants = {
  machine_state: struct({ sandbox: u32, state: str }),
};
export const MachineStateMessages = union(machineStateVariants);

export const VmMessages = union({
  // Must stay first: shards send frames with the guest-link codec.
  ...guestLinkVariants,
  /** Replies (JSON VmInfo) once the agent's handshake arrived; fails if the VM could not boot. */
  ready: struct({}),
  /** Replies JSON VmInfo now. */
  info: struct({}),
  /** Starts a command. `request` is JSON ExecRequest. Output streams to the sink. */
  exec: struct({ id: u32, request: str }),
  /** Bytes for an operation's input (stdin of an exec, content of a put); `end` closes it. */
  input: struct({ id: u32, data: bytes, end: bool }),
  /** A Linux signal number (the API checked it) for the command's process group. */
  signal: struct({ id: u32, signal: u8 }),
  cancel: struct({ id: u32 }),
  /** Starts writing a file of `size` bytes; content comes as `input`. */
  put: struct({ id: u32, path: str, mode: u32, size: f64 }),
  /** Starts reading a file; content streams to the sink as `out`. */
  get: struct({ id: u32, path: str }),
  /** The main thread consumed `bytes` of an operation's output. */
  ack: struct({ id: u32, bytes: u32 }),
  /** stat | list | mkdir; replies JSON. */
  fs: struct({ op: str, path: str, mode: u32 }),
  /** Replies the last `bytes` of the console. */
  logs: struct({ bytes: u32 }),
  /** A new terminal size for an exec started with a pty (the API checked it). */
  resize: struct({ id: u32, cols: u16, rows: u16 }),
  /**
   * Starts watching a directory; `started` (JSON {directories}) once armed,
   * events stream to the sink as `out` on OUT_WATCH, `cancel` ends it, `done`
   * (JSON {reason}) says why it ended.
   */
  watch: struct({ id: u32, path: str, recursive: bool }),
  /** unlink / rmdir / the whole tree; replies '{}'. */
  remove: struct({ path: str, recursive: bool }),
  /** rename(2); replies '{}'. */
  rename: struct({ from: str, to: str }),
  /** Applies a new identity in the guest (today its hostname, via the agent's net_config); replies '{}'. */
  rebind: struct({ hostname: str }),
  /** Stops telling the observer (a claimed machine is no longer its pool's). */
  unobserve: struct({}),
  /** Stops the guest (state `paused`); replies JSON {ms}. Operations are refused until `resume`. */
  pause: struct({}),
  /** Continues a paused guest; replies JSON {ms}. */
  resume: struct({}),
  /**
   * Writes a snapshot into `dir` (existing, empty); replies JSON {kind,
   * pauseMs, …}. The guest continues afterwards unless `stayPaused`.
   */
  snapshot: struct({ dir: str, stayPaused: bool }),
});

export const SinkMessages = union({
  /** Output bytes of an operation (channel: OUT_STDOUT, OUT_STDERR, OUT_FILE). */
  out: struct({ id: u32, channel: u8, data: bytes }),
  /** An operation started (JSON: exec pid, or the file's size and mode). */
  started: struct({ id: u32, info: str }),
  /** The VM actor took `bytes` of the operation's input. */
  credit: struct({ id: u32, bytes: u32 }),
  /** An operation ended: JSON result, or {"error": {code, message}}. */
  done: struct({ id: u32, result: str }),
  /** A VM's lifecycle changed (booting, ready, busy, stopping, stopped, failed). */
  state: struct({ sandbox: u32, state: str, detail: str }),
});

export interface ExecRequest {
  cmd: { argv: string[] } | { shell: string; login?: boolean };
  env?: Record<string, string | null>;
  cwd?: string;
  timeoutMs?: number;
  stdin: boolean;
  /** Run on a pseudo-terminal of this size (stdin is then always piped). */
  pty?: { cols: number; rows: number };
}

export type VmState = 'booting' | 'ready' | 'busy' | 'paused' | 'stopping' | 'stopped' | 'failed';

export interface VmInfo {
  sandbox: number;
  state: VmState;
  backend: string;
  accel?: string;
  pid?: number;
  bootMs?: number;
  agentVersion?: string;
  milestones?: Record<string, number>;
  error?: { code: string; message: string };
  /** Made from a snapshot: of its memory (QEMU) or of its filesystem (namespace). */
  restored?: 'memory' | 'filesystem';
  /** How a memory-restored machine took on its identity. */
  handoff?: { via: 'ack' | 'fallback'; ms: number; applyUs?: number };
}

export type VmMessage = Infer<typeof VmMessages>;
export type SinkMessage = Infer<typeof SinkMessages>;
