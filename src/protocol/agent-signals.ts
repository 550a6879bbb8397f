/**
 * Linux signal numbers as the agent sees them. The host may run on another OS
 * (or have different `os.constants`), so the wire carries Linux numbers and this
 * table, valid for x86-64 and arm64 guests, translates names.
 */
export const LINUX_SIGNALS = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGSTKFLT: 16,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPWR: 30,
  SIGSYS: 31,
} as const;

export type SignalName = keyof typeof LINUX_SIGNALS;

const byNumber = new Map<number, SignalName>(
  Object.entries(LINUX_SIGNALS).map(([name, num]) => [num, name as SignalName]),
);

/** Signal name for a Linux signal number; real-time signals come back as `SIGRTn`. */
export function signalName(num: number): string {
  return byNumber.get(num) ?? (num >= 32 && num <= 64 ? `SIGRT${num - 32}` : `SIG${num}`);
}

/** Linux number for a name (`'SIGTERM'` or `'TERM'`) or a number; undefined when unknown. */
export function signalNumber(sig: string | number): number | undefined {
  if (typeof sig === 'number') return Number.isInteger(sig) && sig >= 1 && sig <= 64 ? sig : undefined;
  const name = (sig.startsWith('SIG') ? sig : `SIG${sig}`) as SignalName;
  return LINUX_SIGNALS[name];
}
