/** VM backends: the Machine contract, QEMU microVMs, namespace sandboxes, and what they need. */
export { type BackendAvailability, backendAvailable } from './availability.js';
export { ConsoleBuffer } from './console-buffer.js';
export { BackendUnavailableError, VmError, VmErrorCode, VmExitedError, VmSpecError } from './errors.js';
export {
  type ProbeOptions,
  type ProbeResult,
  probeAccel,
  probeAccelDetailed,
  QEMU_BINARY,
} from './kvm-probe.js';
export { launchWithDeathSignal } from './launcher.js';
export {
  type Accel,
  type BackendKind,
  checkSpec,
  DEFAULT_AGENT_TIMEOUT_MS,
  DEFAULT_CPUS,
  DEFAULT_GRACE_MS,
  DEFAULT_MEMORY_MIB,
  type Machine,
  type MachineExit,
  type MachineNet,
  type MachineSpec,
} from './machine.js';
export {
  type NamespaceMachine,
  type NamespaceOptions,
  NS_AGENT_SOCKET,
  startNamespaceMachine,
} from './namespace.js';
export { kernelCommandLine, type QemuMachine, type QemuOptions, qemuArgs, startQemuMachine } from './qemu.js';
export { QmpClient, QmpError, type QmpEvent, type QmpGreeting } from './qmp.js';
