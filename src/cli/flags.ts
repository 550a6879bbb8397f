/** Parsing of actorctl's option values, shared by the commands. Errors are ERR_CLI_BAD_OPTION. */
import type { Command } from 'commander';
import { ActorvmError } from '../errors.js';

export const badOption = (message: string) => new ActorvmError('ERR_CLI_BAD_OPTION', message);

/** commander's accumulator for a repeatable option. */
export const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

/** An integer flag within bounds, or undefined when absent. Throws ERR_CLI_BAD_OPTION. */
export function intFlag(flag: string, v: string | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw badOption(`--${flag} takes an integer ${min}..${max}, got '${v}'`);
  }
  return n;
}

/** `K=V` flags as a record. Throws ERR_CLI_BAD_OPTION. */
export function pairs(flag: string, list: string[] | undefined): Record<string, string> | undefined {
  if (!list?.length) return undefined;
  const out: Record<string, string> = {};
  for (const item of list) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw badOption(`--${flag} takes KEY=VALUE, got '${item}'`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/** The terminal flags of every command that runs something (`run`, `vm exec`, `pool run`): -i, -t, --cols, --rows. */
export function terminalFlags(cmd: Command): Command {
  return cmd
    .option('-i, --interactive', 'forward our stdin to the command (EOF closes its stdin)')
    .option('-t, --tty', 'run the command on a pseudo-terminal (raw mode, resized with ours)')
    .option('--cols <n>', 'terminal width with -t (default: ours, else 80)')
    .option('--rows <n>', 'terminal height with -t (default: ours, else 24)');
}
