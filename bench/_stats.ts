/** Small helpers shared by the benches: percentiles, flags, backends, a readable table. */
import Table from 'cli-table3';
import { backendAvailable } from '../src/actors/vm/backends/availability.js';
import { probeAccel } from '../src/actors/vm/backends/kvm-probe.js';

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

export const median = (values: number[]): number => percentile(values, 50);

export const round = (v: number, digits: number): number => {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};

export const flag = (argv: string[], name: string): boolean => argv.includes(name);

/** `--name N`: a whole number, or `fallback` when the flag is absent. */
export function count(argv: string[], name: string, fallback: number): number {
  const i = argv.indexOf(name);
  if (i < 0) return fallback;
  const v = Number(argv[i + 1]);
  if (!Number.isInteger(v) || v < 0) throw new Error(`${name} takes a whole number, got '${argv[i + 1]}'`);
  return v;
}

/**
 * The backends of `wanted` this machine can run, each with the label its
 * results go under (`namespace`, `qemu-tcg`, `qemu-kvm`); the others are
 * reported on stderr and skipped.
 */
export async function usableBackends(
  wanted: string[],
): Promise<{ backend: 'qemu' | 'namespace'; label: string }[]> {
  const out: { backend: 'qemu' | 'namespace'; label: string }[] = [];
  for (const backend of wanted as ('qemu' | 'namespace')[]) {
    const avail = await backendAvailable(backend);
    if (!avail.ok) {
      process.stderr.write(`… ${backend}: unavailable (${avail.reason}), skipped\n`);
      continue;
    }
    out.push({ backend, label: backend === 'qemu' ? `qemu-${await probeAccel()}` : 'namespace' });
  }
  return out;
}

export function printTable(head: string[], rows: (string | number)[][]): void {
  const t = new Table({ head });
  for (const r of rows) t.push(r.map(String));
  console.log(t.toString());
}
