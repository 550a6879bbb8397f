/** How actorctl prints: a table for people, one JSON document with --json. */
import Table from 'cli-table3';

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A table with borders; colored only on a terminal (piped output stays plain text for grep and tests). */
export function printTable(head: string[], rows: unknown[][]): void {
  const color = process.stdout.isTTY === true && !process.env.NO_COLOR;
  const table = new Table({ head, style: color ? { head: ['cyan'] } : { head: [], border: [] } });
  for (const r of rows) table.push(r.map((c) => (c === undefined || c === null ? '' : String(c))));
  process.stdout.write(`${table.toString()}\n`);
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** A duration for a table: 45s, 9m58s, 2h05m, 3d04h. */
export function formatDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}
