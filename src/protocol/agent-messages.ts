/**
 * Guest-agent protocol, layer 3: typed messages.
 *
 * `HostMessage` is everything the host sends, `AgentMessage` everything the agent
 * sends, each a discriminated union on `type`. Hot frames (DATA, WINDOW, SIGNAL,
 * STARTED, EXIT, FILE_INFO, RESIZE) have fixed binary layouts; requests and
 * replies with optional or repeated fields are TLV (agent-tlv.ts). Bulk data is
 * never encoded: DATA payloads are the bytes themselves, except a watch's,
 * which are packed event records (decodeWatchEvents).
 */
import { Channel, encodeHeader, FLAG_END, type Frame, FrameType, FramingError } from './agent-frame.js';
import { readTlv, TlvWriter, tlvStr, tlvU8, tlvU32, tlvU64 } from './agent-tlv.js';

/* ---- TLV tags (mirrors guest/agent/proto.h) ---- */

const HelloTag = {
  VERSION: 1,
  AGENT: 2,
  CAP: 3,
  MAX_CONCURRENT: 4,
  WINDOW: 5,
  MAX_FRAME: 6,
  MAX_CHUNK: 7,
  MILESTONE: 8,
  PID: 9,
  INIT: 10,
} as const;
const ErrorTag = { CODE: 1, ERRNO: 2, MESSAGE: 3 } as const;
const RunTag = {
  ARGV: 1,
  SHELL: 2,
  LOGIN: 3,
  ENV: 4,
  CWD: 5,
  STDIN: 6,
  TIMEOUT_MS: 7,
  CLEAR_ENV: 8,
  PTY: 9,
} as const;
const PathTag = { PATH: 1, MODE: 2, SIZE: 3, NOFOLLOW: 4, RECURSIVE: 5, TO: 6 } as const;
const ShutdownTag = { ACTION: 1 } as const;
const NetTag = { IFNAME: 1, MAC: 2, ADDR: 3, GATEWAY: 4, DNS: 5, HOSTNAME: 6, MTU: 7 } as const;
const StatTag = { TYPE: 1, MODE: 2, SIZE: 3, MTIME_NS: 4, UID: 5, GID: 6, LINK: 7 } as const;
const ListTag = { ENTRY: 1 } as const;
const PutResultTag = { SIZE: 1 } as const;
const WatchResultTag = { REASON: 1 } as const;

const EXIT_TIMED_OUT = 0x01;
const EXIT_CANCELLED = 0x02;
const EXIT_CORE = 0x04;

/* ---- payload types ---- */

export interface AgentHello {
  protocolVersion: number;
  agentVersion: string;
  capabilities: string[];
  maxConcurrent: number;
  /** Initial agent→host credit per channel, in bytes. */
  window: number;
  maxFrame: number;
  maxChunk: number;
  /** Boot milestones in ms since kernel boot (CLOCK_BOOTTIME), e.g. `agent_start`, `ready`. */
  milestones: Record<string, number>;
  pid: number;
  init: boolean;
}

/** The agent's ERROR payload: a stable `code` (an errno name such as `ENOENT`, or a protocol code). */
export interface RemoteErrorInfo {
  code: string;
  errno?: number;
  message: string;
}

export interface RunRequest {
  /** Executed directly (PATH lookup) — exactly one of argv or shell. */
  argv?: string[];
  /** Run through `/bin/sh -c`, or `$SHELL -lc` when `login`. */
  shell?: string;
  login?: boolean;
  /** Overrides on top of the agent's environment; `null` unsets. */
  env?: Record<string, string | null>;
  clearEnv?: boolean;
  cwd?: string;
  stdin?: 'pipe' | 'closed';
  /** Agent-side timeout: SIGKILL to the whole process group. */
  timeoutMs?: number;
  /** Run on a pseudo-terminal of this size (stdin streamed, stdout the terminal, no stderr). */
  pty?: TerminalSize;
}

/** A terminal's size in character cells (each 1..65535 on the wire). */
export interface TerminalSize {
  cols: number;
  rows: number;
}

export interface ExitStatus {
  /** Exit code when the command exited, else null. */
  exitCode: number | null;
  /** Linux signal number when it was killed by a signal, else null. */
  signal: number | null;
  timedOut: boolean;
  cancelled: boolean;
  coreDumped: boolean;
}

export interface FileInfo {
  size: number;
  /** Full st_mode (type and permission bits). */
  mode: number;
  mtimeMs: number;
}

export type FileKind = 'unknown' | 'file' | 'directory' | 'symlink' | 'fifo' | 'socket' | 'char' | 'block';
const FILE_KINDS: FileKind[] = ['unknown', 'file', 'directory', 'symlink', 'fifo', 'socket', 'char', 'block'];

export interface AgentStat {
  type: FileKind;
  /** Permission bits (07777). */
  mode: number;
  size: number;
  mtimeMs: number;
  uid: number;
  gid: number;
  /** Symlink target, when `noFollow` was asked and the path is a symlink. */
  linkTarget?: string;
}

export interface AgentDirEntry {
  name: string;
  type: FileKind;
  mode: number;
  size: number;
  mtimeMs: number;
}

export interface NetConfig {
  /** Interface to configure; default `eth0`. */
  iface?: string;
  mac?: string;
  /** IPv4 address with prefix, e.g. `10.0.2.15/24`. */
  address?: string;
  gateway?: string;
  /** Written to /etc/resolv.conf (IPv4 or IPv6 literals, at most 4). */
  dns?: string[];
  hostname?: string;
  mtu?: number;
}

export type ShutdownAction = 'poweroff' | 'reboot';

/** What happened to a path under a watched directory. */
export type WatchEventType = 'create' | 'write' | 'remove' | 'rename' | 'chmod';
const WATCH_KINDS: (WatchEventType | 'overflow')[] = [
  'overflow',
  'create',
  'write',
  'remove',
  'rename',
  'chmod',
];
const WATCH_RECORD_HEADER = 4;
const WATCH_F_DIR = 0x01;

/** One record of a watch stream: an event, or the marker of a gap (events dropped). */
export type WatchRecord =
  | {
      type: WatchEventType;
      /** Path relative to the watched directory; '' is the directory itself. */
      name: string;
      isDir: boolean;
    }
  | { type: 'overflow' };

/** Why a watch stream ended: the host closed it, or its directory was deleted or moved away. */
export type WatchEndReason = 'closed' | 'deleted' | 'moved';
const WATCH_END: WatchEndReason[] = ['closed', 'deleted', 'moved'];

/* ---- host → agent ---- */

export type HostMessage =
  /** Starts a new session on this byte stream (stream 0); `nonce` is RESET_NONCE_BYTES long. */
  | { type: 'reset'; stream: 0; nonce: Uint8Array }
  | { type: 'run'; stream: number; request: RunRequest }
  | { type: 'put_file'; stream: number; path: string; size: number; mode?: number }
  | { type: 'get_file'; stream: number; path: string }
  | { type: 'stat'; stream: number; path: string; noFollow?: boolean }
  | { type: 'list'; stream: number; path: string }
  | { type: 'mkdir'; stream: number; path: string; mode?: number }
  | { type: 'remove'; stream: number; path: string; recursive?: boolean }
  | { type: 'rename'; stream: number; path: string; to: string }
  | { type: 'watch'; stream: number; path: string; recursive?: boolean }
  | { type: 'ping'; stream: number; payload?: Uint8Array }
  | { type: 'shutdown'; stream: number; action?: ShutdownAction }
  | { type: 'net_config'; stream: number; config: NetConfig }
  /** `payload`: encoded by src/protocol/handoff.ts. */
  | { type: 'handoff'; stream: number; payload: Buffer }
  | { type: 'data'; stream: number; data: Uint8Array; end?: boolean }
  | { type: 'window'; stream: number; channel: number; increment: number }
  | { type: 'signal'; stream: number; signal: number }
  | { type: 'cancel'; stream: number }
  | { type: 'resize'; stream: number; cols: number; rows: number };

export function encodeRunRequest(r: RunRequest): Buffer {
  const w = new TlvWriter();
  if ((r.argv === undefined) === (r.shell === undefined)) {
    throw new TypeError('run: give exactly one of argv or shell');
  }
  if (r.argv) {
    if (r.argv.length === 0) throw new TypeError('run: argv must not be empty');
    for (const a of r.argv) w.str(RunTag.ARGV, a);
  }
  if (r.shell !== undefined) w.str(RunTag.SHELL, r.shell);
  if (r.login) w.u8(RunTag.LOGIN, 1);
  for (const [k, v] of Object.entries(r.env ?? {})) {
    if (k === '' || k.includes('='))
      throw new TypeError(`run: bad environment variable name ${JSON.stringify(k)}`);
    w.str(RunTag.ENV, v === null ? k : `${k}=${v}`);
  }
  if (r.clearEnv) w.u8(RunTag.CLEAR_ENV, 1);
  if (r.cwd !== undefined) w.str(RunTag.CWD, r.cwd);
  if (r.stdin === 'pipe') w.u8(RunTag.STDIN, 1);
  if (r.timeoutMs !== undefined && r.timeoutMs > 0) {
    w.u32(RunTag.TIMEOUT_MS, Math.min(Math.ceil(r.timeoutMs), 0xffffffff));
  }
  if (r.pty) w.bytes(RunTag.PTY, encodeTerminalSize(r.pty));
  return w.finish();
}

/** u16 columns, u16 rows: RUN's pty field and the RESIZE payload. */
export function encodeTerminalSize(size: TerminalSize): Buffer {
  const { cols, rows } = size;
  const ok = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= 0xffff;
  if (!ok(cols) || !ok(rows)) throw new TypeError(`bad terminal size ${cols}x${rows}`);
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16BE(cols, 0);
  b.writeUInt16BE(rows, 2);
  return b;
}

function encodePath(path: string, extra?: (w: TlvWriter) => void): Buffer {
  const w = new TlvWriter().str(PathTag.PATH, path);
  extra?.(w);
  return w.finish();
}

export function encodeNetConfig(c: NetConfig): Buffer {
  const w = new TlvWriter();
  if (c.iface !== undefined) w.str(NetTag.IFNAME, c.iface);
  if (c.mac !== undefined) w.str(NetTag.MAC, c.mac);
  if (c.address !== undefined) w.str(NetTag.ADDR, c.address);
  if (c.gateway !== undefined) w.str(NetTag.GATEWAY, c.gateway);
  if (c.dns?.length) w.str(NetTag.DNS, c.dns.join(','));
  if (c.hostname !== undefined) w.str(NetTag.HOSTNAME, c.hostname);
  if (c.mtu !== undefined) w.u32(NetTag.MTU, c.mtu);
  return w.finish();
}

function frame(type: number, stream: number, payload: Uint8Array, flags = 0, channel = 0): Buffer[] {
  const head = encodeHeader(type, stream, payload.length, flags, channel);
  return payload.length
    ? [head, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)]
    : [head];
}

const u32 = (v: number): Buffer => {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
};

/** Encodes one host message as the buffers of one frame (header, then payload uncopied). */
export function encodeHostMessage(m: HostMessage): Buffer[] {
  switch (m.type) {
    case 'reset':
      return frame(FrameType.RESET, 0, m.nonce);
    case 'run':
      return frame(FrameType.RUN, m.stream, encodeRunRequest(m.request));
    case 'put_file':
      return frame(
        FrameType.PUT_FILE,
        m.stream,
        encodePath(m.path, (w) => {
          w.u64(PathTag.SIZE, m.size);
          if (m.mode !== undefined) w.u32(PathTag.MODE, m.mode);
        }),
      );
    case 'get_file':
      return frame(FrameType.GET_FILE, m.stream, encodePath(m.path));
    case 'stat':
      return frame(
        FrameType.STAT,
        m.stream,
        encodePath(m.path, (w) => {
          if (m.noFollow) w.u8(PathTag.NOFOLLOW, 1);
        }),
      );
    case 'list':
      return frame(FrameType.LIST, m.stream, encodePath(m.path));
    case 'mkdir':
      return frame(
        FrameType.MKDIR,
        m.stream,
        encodePath(m.path, (w) => {
          if (m.mode !== undefined) w.u32(PathTag.MODE, m.mode);
        }),
      );
    case 'remove':
      return frame(
        FrameType.REMOVE,
        m.stream,
        encodePath(m.path, (w) => {
          if (m.recursive) w.u8(PathTag.RECURSIVE, 1);
        }),
      );
    case 'rename':
      return frame(
        FrameType.RENAME,
        m.stream,
        encodePath(m.path, (w) => w.str(PathTag.TO, m.to)),
      );
    case 'watch':
      return frame(
        FrameType.WATCH,
        m.stream,
        encodePath(m.path, (w) => {
          if (m.recursive) w.u8(PathTag.RECURSIVE, 1);
        }),
      );
    case 'ping':
      return frame(FrameType.PING, m.stream, m.payload ?? Buffer.alloc(0));
    case 'shutdown':
      return frame(
        FrameType.SHUTDOWN,
        m.stream,
        new TlvWriter().u8(ShutdownTag.ACTION, m.action === 'reboot' ? 1 : 0).finish(),
      );
    case 'net_config':
      return frame(FrameType.NET_CONFIG, m.stream, encodeNetConfig(m.config));
    case 'handoff':
      return frame(FrameType.HANDOFF, m.stream, m.payload);
    case 'data':
      return frame(FrameType.DATA, m.stream, m.data, m.end ? FLAG_END : 0, Channel.IN);
    case 'window':
      return frame(FrameType.WINDOW, m.stream, u32(m.increment), 0, m.channel);
    case 'signal':
      return frame(FrameType.SIGNAL, m.stream, u32(m.signal));
    case 'cancel':
      return frame(FrameType.CANCEL, m.stream, Buffer.alloc(0));
    case 'resize':
      return frame(FrameType.RESIZE, m.stream, encodeTerminalSize(m));
  }
}

/* ---- agent → host ---- */

export type AgentMessage =
  | { type: 'hello'; stream: number; hello: AgentHello }
  | { type: 'error'; stream: number; error: RemoteErrorInfo }
  | { type: 'data'; stream: number; channel: number; end: boolean; data: Buffer }
  | { type: 'window'; stream: number; channel: number; increment: number }
  /** A run started (`pid`); for a watch, it is armed and `pid` is the number of directories watched. */
  | { type: 'started'; stream: number; pid: number }
  | { type: 'exit'; stream: number; exit: ExitStatus }
  | { type: 'file_info'; stream: number; info: FileInfo }
  /** Success; the payload's meaning depends on the request (see decodeStat, decodeList, …). */
  | { type: 'result'; stream: number; payload: Buffer }
  | { type: 'unknown'; stream: number; frameType: number; payload: Buffer };

function need(cond: boolean, what: string): void {
  if (!cond) throw new FramingError(`malformed ${what} payload`);
}

export function decodeHello(payload: Buffer): AgentHello {
  const h: AgentHello = {
    protocolVersion: 0,
    agentVersion: '',
    capabilities: [],
    maxConcurrent: 0,
    window: 0,
    maxFrame: 0,
    maxChunk: 0,
    milestones: {},
    pid: 0,
    init: false,
  };
  for (const { tag, value } of readTlv(payload)) {
    switch (tag) {
      case HelloTag.VERSION:
        h.protocolVersion = tlvU32(value);
        break;
      case HelloTag.AGENT:
        h.agentVersion = tlvStr(value);
        break;
      case HelloTag.CAP:
        h.capabilities.push(tlvStr(value));
        break;
      case HelloTag.MAX_CONCURRENT:
        h.maxConcurrent = tlvU32(value);
        break;
      case HelloTag.WINDOW:
        h.window = tlvU32(value);
        break;
      case HelloTag.MAX_FRAME:
        h.maxFrame = tlvU32(value);
        break;
      case HelloTag.MAX_CHUNK:
        h.maxChunk = tlvU32(value);
        break;
      case HelloTag.MILESTONE:
        need(value.length >= 8, 'HELLO milestone');
        h.milestones[value.subarray(8).toString('utf8')] = Number(value.readBigUInt64BE(0)) / 1000;
        break;
      case HelloTag.PID:
        h.pid = tlvU32(value);
        break;
      case HelloTag.INIT:
        h.init = tlvU8(value) === 1;
        break;
    }
  }
  return h;
}

export function decodeRemoteError(payload: Buffer): RemoteErrorInfo {
  const e: RemoteErrorInfo = { code: 'UNKNOWN', message: '' };
  for (const { tag, value } of readTlv(payload)) {
    if (tag === ErrorTag.CODE) e.code = tlvStr(value);
    else if (tag === ErrorTag.ERRNO) e.errno = tlvU32(value);
    else if (tag === ErrorTag.MESSAGE) e.message = tlvStr(value);
  }
  return e;
}

export function decodeExit(payload: Buffer): ExitStatus {
  need(payload.length >= 8, 'EXIT');
  const code = payload.readUInt32BE(0);
  const sig = payload.readUInt8(4);
  const flags = payload.readUInt8(5);
  return {
    exitCode: code === 0xffffffff ? null : code,
    signal: sig === 0 ? null : sig,
    timedOut: (flags & EXIT_TIMED_OUT) !== 0,
    cancelled: (flags & EXIT_CANCELLED) !== 0,
    coreDumped: (flags & EXIT_CORE) !== 0,
  };
}

export function decodeFileInfo(payload: Buffer): FileInfo {
  need(payload.length >= 20, 'FILE_INFO');
  return {
    size: Number(payload.readBigUInt64BE(0)),
    mode: payload.readUInt32BE(8),
    mtimeMs: Number(payload.readBigUInt64BE(12)) / 1e6,
  };
}

export function decodeStat(payload: Buffer): AgentStat {
  const s: AgentStat = { type: 'unknown', mode: 0, size: 0, mtimeMs: 0, uid: 0, gid: 0 };
  for (const { tag, value } of readTlv(payload)) {
    switch (tag) {
      case StatTag.TYPE:
        s.type = FILE_KINDS[tlvU8(value)] ?? 'unknown';
        break;
      case StatTag.MODE:
        s.mode = tlvU32(value);
        break;
      case StatTag.SIZE:
        s.size = tlvU64(value);
        break;
      case StatTag.MTIME_NS:
        s.mtimeMs = tlvU64(value) / 1e6;
        break;
      case StatTag.UID:
        s.uid = tlvU32(value);
        break;
      case StatTag.GID:
        s.gid = tlvU32(value);
        break;
      case StatTag.LINK:
        s.linkTarget = tlvStr(value);
        break;
    }
  }
  return s;
}

export function decodeList(payload: Buffer): AgentDirEntry[] {
  const out: AgentDirEntry[] = [];
  for (const { tag, value } of readTlv(payload)) {
    if (tag !== ListTag.ENTRY) continue;
    need(value.length >= 21, 'LIST entry');
    out.push({
      type: FILE_KINDS[value.readUInt8(0)] ?? 'unknown',
      mode: value.readUInt32BE(1),
      size: Number(value.readBigUInt64BE(5)),
      mtimeMs: Number(value.readBigUInt64BE(13)) / 1e6,
      name: value.subarray(21).toString('utf8'),
    });
  }
  return out;
}

/**
 * A watch stream's DATA payload: records of u8 kind, u8 flags (bit 0: a
 * directory), u16 length, the path. The agent sends whole records only.
 */
export function decodeWatchEvents(payload: Buffer): WatchRecord[] {
  const out: WatchRecord[] = [];
  let off = 0;
  while (off < payload.length) {
    need(payload.length - off >= WATCH_RECORD_HEADER, 'watch event');
    const kind = payload.readUInt8(off);
    const flags = payload.readUInt8(off + 1);
    const len = payload.readUInt16BE(off + 2);
    need(payload.length - off - WATCH_RECORD_HEADER >= len, 'watch event');
    const type = WATCH_KINDS[kind];
    const name = payload.toString('utf8', off + WATCH_RECORD_HEADER, off + WATCH_RECORD_HEADER + len);
    off += WATCH_RECORD_HEADER + len;
    if (type === undefined) continue; // a kind from a newer agent
    out.push(type === 'overflow' ? { type } : { type, name, isDir: (flags & WATCH_F_DIR) !== 0 });
  }
  return out;
}

/** The inverse of decodeWatchEvents (tests, and relays that re-frame records). */
export function encodeWatchEvents(records: readonly WatchRecord[]): Buffer {
  const parts: Buffer[] = [];
  for (const r of records) {
    const name = r.type === 'overflow' ? Buffer.alloc(0) : Buffer.from(r.name, 'utf8');
    if (name.length > 0xffff) throw new TypeError('watch event path too long');
    const head = Buffer.allocUnsafe(WATCH_RECORD_HEADER);
    head.writeUInt8(WATCH_KINDS.indexOf(r.type), 0);
    head.writeUInt8(r.type !== 'overflow' && r.isDir ? WATCH_F_DIR : 0, 1);
    head.writeUInt16BE(name.length, 2);
    parts.push(head, name);
  }
  return Buffer.concat(parts);
}

/** A watch's RESULT: why it ended. */
export function decodeWatchEnd(payload: Buffer): WatchEndReason {
  let reason: WatchEndReason = 'closed';
  for (const { tag, value } of readTlv(payload)) {
    if (tag === WatchResultTag.REASON) reason = WATCH_END[tlvU8(value)] ?? 'closed';
  }
  return reason;
}

export function decodePutResult(payload: Buffer): { size: number } {
  let size = 0;
  for (const { tag, value } of readTlv(payload)) if (tag === PutResultTag.SIZE) size = tlvU64(value);
  return { size };
}

/** Decodes one agent frame; throws {@link FramingError} when a fixed layout is too short. */
export function decodeAgentFrame(f: Frame): AgentMessage {
  const stream = f.stream;
  switch (f.type) {
    case FrameType.HELLO:
      return { type: 'hello', stream, hello: decodeHello(f.payload) };
    case FrameType.ERROR:
      return { type: 'error', stream, error: decodeRemoteError(f.payload) };
    case FrameType.DATA:
      return { type: 'data', stream, channel: f.channel, end: (f.flags & FLAG_END) !== 0, data: f.payload };
    case FrameType.WINDOW:
      need(f.payload.length === 4, 'WINDOW');
      return { type: 'window', stream, channel: f.channel, increment: f.payload.readUInt32BE(0) };
    case FrameType.STARTED:
      need(f.payload.length >= 4, 'STARTED');
      return { type: 'started', stream, pid: f.payload.readUInt32BE(0) };
    case FrameType.EXIT:
      return { type: 'exit', stream, exit: decodeExit(f.payload) };
    case FrameType.FILE_INFO:
      return { type: 'file_info', stream, info: decodeFileInfo(f.payload) };
    case FrameType.RESULT:
      return { type: 'result', stream, payload: f.payload };
    default:
      return { type: 'unknown', stream, frameType: f.type, payload: f.payload };
  }
}
