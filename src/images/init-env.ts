/**
 * What an image's environment must be to reach the agent: on QEMU it
 * travels on the kernel command line as KEY=VALUE words, which the kernel
 * hands to init as its environment (the namespace backend passes the same
 * words in argv). Shared by the QEMU backend, which writes the words, and
 * the importer, which keeps out of an image what could not travel.
 *
 * The kernel splits its command line on isspace(), whose table counts byte
 * 0xA0 as a space — a byte inside UTF-8 characters such as "à" — and knows no
 * escapes, only double quotes. So a value is quoted whenever it holds
 * anything but printable ASCII, and may not hold a quote itself: otherwise
 * `Y=xàrdinit=/bin/sh` would become two words and replace the agent as PID 1.
 */

// x86's COMMAND_LINE_SIZE, and the kernel's limit on init's environment
// (MAX_INIT_ENVS, of which it uses two for HOME and TERM).
export const MAX_CMDLINE_BYTES = 2048;
export const MAX_INIT_ENVS = 30;

// Words the kernel consumes itself: as env keys they would never reach init.
const KERNEL_PARAMS = new Set([
  'init',
  'rdinit',
  'root',
  'console',
  'panic',
  'quiet',
  'debug',
  'loglevel',
  'ro',
  'rw',
]);

/** Why KEY=VALUE cannot be an init environment variable, or undefined when it can. */
export function initEnvProblem(key: string, value: string): string | undefined {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key) || KERNEL_PARAMS.has(key)) {
    return `environment variable name ${JSON.stringify(key)} cannot travel on the kernel command line`;
  }
  if (/[\0\n"]/.test(value)) return `environment value of ${key} contains NUL, newline or "`;
  return undefined;
}

/** KEY=VALUE as one kernel command-line word (quoted unless plain printable ASCII). */
export function initEnvWord(key: string, value: string): string {
  return /^[\x21-\x7e]+$/.test(value) ? `${key}=${value}` : `${key}="${value}"`;
}
