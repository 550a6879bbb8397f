/** Small helpers shared by the benches: percentiles, flags, a readable table. */
import Table from 'cli-table3';

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

export function printTable(head: string[], rows: (string | number)[][]): void {
  const t = new Table({ head });
  for (const r of rows) t.push(r.map(String));
  console.log(t.toString());
}
