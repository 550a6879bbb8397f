/**
 * One schema per call of the public API, checked at the boundary before
 * anything is created or sent: a caller's mistake becomes a typed
 * `SandboxError` with a stable code (errors.ts) and `details.issues`, never a
 * crashed actor, a hung call or a half-made sandbox. The control socket and
 * the daemon validate with the same schemas.
 *
 * Bounds come from what the guest or the host can take: ports 1..65535,
 * memory up to the host's RAM, CPUs up to its cores, argv as Linux limits it
 * (128 KiB per argument, MAX_ARG_STRLEN), environment names as shells know
 * them.
 */
import os from 'node:os';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { NetworkOptionsSchema } from '../actors/net/config.js';
import { PoolConfigSchema, PoolSizingSchema } from '../actors/pool/pool-key.js';
import { signalNumber } from '../protocol/agent-signals.js';
import { SandboxError, SandboxErrorCode } from './errors.js';

const MiB = 1024 * 1024;
/** Linux's MAX_ARG_STRLEN: the longest single argument or environment string. */
export const MAX_ARG_BYTES = 128 * 1024;
/** What one command line (argv plus environment) may weigh in total. */
export const MAX_COMMAND_BYTES = 1024 * 1024;
/** Default cap of what a buffered exec keeps per stream (the rest still reaches callbacks). */
export const DEFAULT_MAX_OUTPUT_BYTES = 16 * MiB;
const DAY_MS = 86_400_000;

const noNul = (s: string): boolean => !s.includes('\0');
const argString = z
  .string()
  .refine(noNul, 'must not contain NUL')
  .refine((s) => Buffer.byteLength(s) <= MAX_ARG_BYTES, `longer than ${MAX_ARG_BYTES} bytes`);

export const Backend = z.enum(['qemu', 'namespace', 'auto']);
export const EnvName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'not an environment variable name');
export const Env = z
  .record(EnvName, argString)
  .refine((e) => Object.keys(e).length <= 256, 'more than 256 variables');
export const Hostname = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/, 'not a hostname');
export const Port = z.number().int().min(1).max(65535);
/** A host port to listen on: 0 means any free one. */
export const HostPort = z.number().int().min(0).max(65535);
export const Proto = z.enum(['tcp', 'udp']);
export const TimeoutMs = z.number().int().min(1).max(DAY_MS);
export const GuestPath = z.string().min(1).max(4096).refine(noNul, 'must not contain NUL');
export const FileMode = z.number().int().min(0).max(0o7777);
/** A terminal's size in character cells. */
export const PtySize = z
  .object({ cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) })
  .strict();

/** Host capacity, read once: what memoryMiB and cpus may ask for. */
const hostMiB = Math.floor(os.totalmem() / MiB);
const hostCpus = os.availableParallelism();

export const ForwardSchema = z
  .object({ guestPort: Port, hostPort: HostPort.optional(), proto: Proto.optional() })
  .strict();

/** A sandbox's lifetime: 1 s .. 30 days. */
export const LifetimeMs = z
  .number()
  .int()
  .min(1000)
  .max(30 * 24 * 3600 * 1000);
export const SnapshotId = z.string().regex(/^snap-[0-9a-f]{16}$/, 'not a snapshot id');
/** Labels on a sandbox (E2B metadata): at most 64, short keys, bounded values. */
export const Metadata = z
  .record(z.string().min(1).max(128).refine(noNul, 'must not contain NUL'), z.string().max(1024))
  .refine((m) => Object.keys(m).length <= 64, 'at most 64 metadata keys');

export const SandboxOptionsSchema = z
  .object({
    // A spec is validated by the image layer itself (ERR_IMAGE_SPEC).
    image: z.union([z.string().min(1).max(256), z.object({ name: z.string() }).passthrough()]),
    backend: Backend,
    memoryMiB: z.number().int().min(64).max(hostMiB),
    cpus: z.number().int().min(1).max(hostCpus),
    env: Env,
    hostname: Hostname,
    network: z
      .object({
        ...NetworkOptionsSchema.shape,
        forwards: z.array(z.union([Port, ForwardSchema])).max(64),
      })
      .partial()
      .strict(),
    bootTimeoutMs: TimeoutMs,
    /** Kill the sandbox this long after it is ready (extend with setTimeout). */
    timeoutMs: LifetimeMs,
    onTimeout: z.enum(['kill', 'pause']),
    metadata: Metadata,
    pool: z.enum(['auto', 'never', 'always']),
    snapshot: SnapshotId,
  })
  .partial()
  .strict();

/** The most children one fork() makes. */
export const MAX_FORK_CHILDREN = 16;

export const ForkOptionsSchema = z
  .object({
    count: z.number().int().min(1).max(MAX_FORK_CHILDREN),
    /** Kill each child this long after it is ready. Default: no limit. */
    timeoutMs: LifetimeMs.optional(),
    /** How long a QEMU child waits for its handoff ack before the fallback (10 ms .. 60 s). */
    ackTimeoutMs: z.number().int().min(10).max(60_000).optional(),
    /** Test hook: each child's network drops its handoff ack, so the fallback wins. */
    dropHandoffAck: z.boolean().optional(),
  })
  .strict();

export const SnapshotOptionsSchema = z
  .object({
    /** Leave the sandbox paused once the snapshot is written (pause to disk). Default false. */
    stayPaused: z.boolean(),
  })
  .partial()
  .strict();

export const RuntimeOptionsSchema = z
  .object({
    workers: z.number().int().min(1).max(256),
    home: z.string().min(1).refine(noNul, 'must not contain NUL'),
    imagesHome: z.string().min(1).refine(noNul, 'must not contain NUL'),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
        file: z.string().min(1),
      })
      .partial()
      .strict(),
    backend: Backend,
    pools: z.array(PoolConfigSchema).max(256),
    lazyPools: PoolSizingSchema,
    pausedTimeoutMs: LifetimeMs,
    poolMemoryMiB: z
      .number()
      .int()
      .min(64)
      .max(1 << 30),
    poolBootConcurrency: z.number().int().min(1).max(256),
  })
  .partial()
  .strict();

export const Command = z.union([
  argString.refine((s) => s.length > 0, 'empty command'),
  z.array(argString).min(1, 'empty argv').max(32_768),
]);

export const SpawnOptionsSchema = z
  .object({
    env: Env,
    cwd: GuestPath,
    timeoutMs: TimeoutMs,
    stdin: z.enum(['pipe', 'closed']),
    login: z.boolean(),
    /** Run on a pseudo-terminal of this size (stdin is then always piped). */
    pty: PtySize,
  })
  .partial()
  .strict();

const isStream = (v: unknown): boolean => v instanceof Readable;
export const ExecOptionsSchema = z
  .object({
    env: Env,
    cwd: GuestPath,
    timeoutMs: TimeoutMs,
    login: z.boolean(),
    stdin: z.union([z.string(), z.instanceof(Uint8Array), z.custom<Readable>(isStream, 'a Readable')]),
    onStdout: z.custom<(s: string) => void>((f) => typeof f === 'function', 'a function'),
    onStderr: z.custom<(s: string) => void>((f) => typeof f === 'function', 'a function'),
    /** Bytes kept per stream in the result (default 16 MiB); callbacks still get everything. */
    maxOutputBytes: z
      .number()
      .int()
      .min(0)
      .max(1024 * MiB),
  })
  .partial()
  .strict();

export const ExposeOptionsSchema = z.object({ hostPort: HostPort, proto: Proto }).partial().strict();
export const WriteOptionsSchema = z
  .object({ mode: FileMode, size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) })
  .partial()
  .strict();
export const MkdirOptionsSchema = z.object({ mode: FileMode }).partial().strict();
export const RemoveOptionsSchema = z.object({ recursive: z.boolean() }).partial().strict();
export const WatchOptionsSchema = z.object({ recursive: z.boolean() }).partial().strict();
export const LogBytes = z
  .number()
  .int()
  .min(1)
  .max(16 * MiB);

function issuesOf(error: z.ZodError): { path: string[]; message: string }[] {
  return error.issues.map((i) => ({ path: i.path.map(String), message: i.message }));
}

/**
 * Parses `value` with `schema` or throws a SandboxError with `code`; `what`
 * names the argument in the message ("options", "command", …).
 */
export function check<S extends z.ZodType>(
  schema: S,
  value: unknown,
  code: string,
  what: string,
): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issues = issuesOf(r.error);
  const text = issues.map((i) => `${[what, ...i.path].join('.')}: ${i.message}`).join('; ');
  throw new SandboxError(code, `invalid ${what}: ${text}`, { issues });
}

export const checkOptions = <S extends z.ZodType>(schema: S, value: unknown, what = 'options'): z.infer<S> =>
  check(schema, value ?? {}, SandboxErrorCode.BAD_OPTIONS, what);

/** A command's argv (and env) within what a guest's execve takes. */
export function checkCommand(cmd: unknown, env?: Record<string, string>): string | string[] {
  const c = check(Command, cmd, SandboxErrorCode.BAD_COMMAND, 'command') as string | string[];
  const words = typeof c === 'string' ? [c] : c;
  let total = 0;
  for (const w of words) total += Buffer.byteLength(w) + 1;
  for (const [k, v] of Object.entries(env ?? {})) total += Buffer.byteLength(k) + Buffer.byteLength(v) + 2;
  if (total > MAX_COMMAND_BYTES) {
    throw new SandboxError(
      SandboxErrorCode.BAD_COMMAND,
      `command line of ${total} bytes (argv and env) exceeds ${MAX_COMMAND_BYTES}`,
      { bytes: total },
    );
  }
  return c;
}

/** A Linux signal number from a name ('SIGTERM', 'TERM') or a number (1..64). */
export function checkSignal(sig: unknown): number {
  const n = typeof sig === 'string' || typeof sig === 'number' ? signalNumber(sig) : undefined;
  if (n === undefined) {
    throw new SandboxError(SandboxErrorCode.BAD_SIGNAL, `unknown signal ${JSON.stringify(sig)}`, {
      signal: String(sig),
    });
  }
  return n;
}

export function checkPort(port: unknown, what: string, allowAny = false): number {
  return check(allowAny ? HostPort : Port, port, SandboxErrorCode.BAD_PORT, what) as number;
}

/** expose()'s arguments (ports first, for ERR_SANDBOX_BAD_PORT), in-process and remote alike. */
export function checkExposeArgs(guestPort: unknown, opts: unknown): z.infer<typeof ExposeOptionsSchema> {
  checkPort(guestPort, 'guestPort');
  const hostPort = (opts as { hostPort?: unknown } | undefined)?.hostPort;
  if (hostPort !== undefined) checkPort(hostPort, 'hostPort', true);
  return checkOptions(ExposeOptionsSchema, opts);
}

/** files.write()'s arguments, in-process and remote alike. */
export function checkWriteArgs(
  path: unknown,
  data: unknown,
  opts: unknown,
): z.infer<typeof WriteOptionsSchema> {
  checkPath(path);
  const checked = checkOptions(WriteOptionsSchema, opts);
  checkWriteData(data);
  return checked;
}

/** A signal for a method that answers with a promise: its number, or the rejection to return. */
export function signalOrRejection(sig: unknown): number | Promise<never> {
  try {
    return checkSignal(sig);
  } catch (err) {
    return rejected(err);
  }
}

/** What a file write takes: a string, bytes or a Readable. Throws ERR_SANDBOX_BAD_OPTIONS. */
export function checkWriteData(data: unknown): asserts data is string | Uint8Array | Readable {
  if (typeof data !== 'string' && !(data instanceof Uint8Array) && !(data instanceof Readable)) {
    throw new SandboxError(SandboxErrorCode.BAD_OPTIONS, 'data must be a string, a Uint8Array or a Readable');
  }
}

export function checkPath(path: unknown): string {
  return check(GuestPath, path, SandboxErrorCode.BAD_PATH, 'path') as string;
}

/** Marks a promise handled (a caller that ignores it sees no unhandled rejection) and returns it. */
export function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** A promise rejected with `err`, already marked handled. */
export function rejected<T = never>(err: unknown): Promise<T> {
  return handled(Promise.reject(err));
}
