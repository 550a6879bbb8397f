/**
 * Bench dispatcher: `npm run bench -- <name> [--json] [options]`.
 *
 * Each bench lives in `bench/<name>.ts` and exports `run(argv: string[]): Promise<void>`.
 * With `--json` a bench prints exactly one JSON object as its last line of stdout.
 */
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const available = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && f !== 'main.ts' && !f.startsWith('_'))
  .map((f) => f.slice(0, -3))
  .sort();

const [name, ...rest] = process.argv.slice(2);
if (!name || !available.includes(name)) {
  console.error(`usage: npm run bench -- <${available.join('|')}> [--json]`);
  process.exit(2);
}
const mod = (await import(`./${name}.ts`)) as { run(argv: string[]): Promise<void> };
await mod.run(rest);
