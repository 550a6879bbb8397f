/**
 * The contract between the VM actor and a sandbox backend. A backend starts
 * one isolated machine from a built image and hands back three channels: the
 * guest's Ethernet frames, the guest agent, and the machine's lifetime.
 *
 * Two backends implement it: a QEMU microVM (qemu.ts) and Linux namespaces
 * (namespace.ts). What each isolates is in docs/backends.md.
 */
import type { OnReadOpts } from 'node:net';
import type { Duplex } from 'node:stream';
import type { AgentClient } from '../../../agent/client.js';
import type { BuiltImage } from '../../../images/layout.js';
import type { Logger } from '../../../runtime/logger.js';
import { VmSpecError } from './errors.js';

export type BackendKind = 'qemu' | 'namespace';
export type Accel = 'kvm' | 'tcg';

/** The guest's network identity, applied by the agent at boot. */
export interface MachineNet {
  /** IPv4 address, e.g. 10.0.2.15. */
  ip: string;
  /** Prefix length, e.g. 24. */
  prefix: number;
  gateway: string;
  dns: string;
  mtu: number;
  /** e.g. 52:54:00:12:34:56. */
  mac: string;
  hostname: string;
}

export interface MachineSpec {
  /** Sandbox id, used in names and the run dir: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`. */
  id: string;
  image: BuiltImage;
  /** Guest RAM (QEMU), memory limit where cgroups allow (namespace). Default 256. */
  memoryMiB: number;
  /** vCPUs (QEMU), CPU quota where cgroups allow (namespace). Default 1. */
  cpus: number;
  /** Caller-provided empty directory for sockets/files; the backend owns its contents and empties it on stop. */
  runDir: string;
  net: MachineNet;
  /** Environment for the agent (over the image's). */
  env?: Record<string, string>;
  log: Logger;
  /**
   * Passed to `net.connect` for the frames socket: read into a caller-owned,
   * reused buffer instead of a fresh Buffer per read. When given, `frames`
   * emits no 'data' events; the callback gets the bytes.
   */
  framesOnRead?: OnReadOpts;
  /** Namespace backend: size of the sandbox's writable layer (tmpfs), default 1024 MiB. */
  diskMiB?: number;
  /** Start the machine's processes at this nice value (a pool's machine boots and idles in the background). */
  nice?: number;
  /**
   * Namespace backend: read-only layers stacked over the image, topmost
   * first (a filesystem snapshot's writable layer). Their files belong to
   * guest ids, as an image's do; whiteouts hide what lies below.
   */
  layers?: string[];
  /**
   * QEMU: resume this memory snapshot instead of booting — `state` is the
   * device state (a migration stream saved with x-ignore-shared), `ram` the
   * frozen guest RAM, mapped copy-on-write (it is never written). Without
   * `ram`, `state` is a full-RAM stream (qemu-snapshot.ts).
   */
  restore?: MachineRestore;
}

export interface MachineRestore {
  state: string;
  ram?: string;
}

export interface MachineExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Machine {
  readonly backend: BackendKind;
  readonly accel?: Accel;
  /** QEMU's pid, or the namespace init's pid (host view). */
  readonly pid: number;
  /** The guest's Ethernet frame stream: 4-byte big-endian length + frame, both ways. */
  readonly frames: Duplex;
  /** Connects to the guest agent; resolves once its HELLO arrived. Rejects promptly (ERR_VM_EXITED + console tail) if the machine dies first. */
  connectAgent(opts?: { timeoutMs?: number }): Promise<AgentClient>;
  /** Resolves when the VM process exits (code/signal). */
  readonly exited: Promise<MachineExit>;
  /** Last bytes of the serial console (QEMU) or of the init's stderr (namespace), bounded buffer. */
  consoleTail(maxBytes?: number): string;
  /** Stops the machine: graceful (agent shutdown) when possible, then SIGKILL after a grace period; removes everything in runDir. Idempotent. */
  stop(opts?: { graceMs?: number }): Promise<void>;
}

export const DEFAULT_MEMORY_MIB = 256;
export const DEFAULT_CPUS = 1;
/** connectAgent's backstop when the machine neither answers nor dies. */
export const DEFAULT_AGENT_TIMEOUT_MS = 60_000;
export const DEFAULT_GRACE_MS = 3_000;

/** Validates the parts of a spec both backends rely on; throws ERR_VM_SPEC. */
export function checkSpec(spec: MachineSpec): void {
  const problems: string[] = [];
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(spec.id)) problems.push(`id ${JSON.stringify(spec.id)}`);
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 64) problems.push('memoryMiB (integer ≥ 64)');
  if (!Number.isInteger(spec.cpus) || spec.cpus < 1) problems.push('cpus (integer ≥ 1)');
  const ip4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
  for (const k of ['ip', 'gateway', 'dns'] as const) if (!ip4.test(spec.net[k])) problems.push(`net.${k}`);
  if (!Number.isInteger(spec.net.prefix) || spec.net.prefix < 1 || spec.net.prefix > 32)
    problems.push('net.prefix');
  if (!Number.isInteger(spec.net.mtu) || spec.net.mtu < 68 || spec.net.mtu > 65535) problems.push('net.mtu');
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(spec.net.mac)) problems.push('net.mac');
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(spec.net.hostname)) problems.push('net.hostname');
  if (problems.length) throw new VmSpecError(`invalid machine spec: ${problems.join(', ')}`);
}
