/** How actorctl prints: a table for people, one JSON document with --json. */
import Table from 'cli-table3';

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printTable(head: string[], rows: unknown[][]): void {
  const table = new Table({ head, style: { head: ['cyan'] } });
  for (const r of rows) table.push(r.map((c) => (c === undefined || c === null ? '' : String(c))));
  process.stdout.write(`${table.toString()}\n`);
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}
