/**
 * `actorctl image build | import | ls | rm`: the local image store. Images are files
 * under $ACTORVM_HOME/images, so these commands work without a running
 * daemon. `image ls --socket P` (or --url) lists the daemon's store instead,
 * which is the one its sandboxes boot from when its ACTORVM_HOME differs.
 */
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import type { Piscina } from 'piscina';
import { type BuildProgress, buildImage } from '../../images/builder.js';
import { ImageError, ImageErrorCode } from '../../images/errors.js';
import { type ImportProgress, importImage } from '../../images/importer.js';
import type { BuiltImage } from '../../images/layout.js';
import { BASE_IMAGE_NAME, type ImageFileSpec, type ImageSpec } from '../../images/spec.js';
import { ImageStore } from '../../images/store.js';
import { type GlobalOptions, withClient } from '../context.js';
import { formatBytes, printJson, printTable } from '../output.js';

export interface ImageCommandOptions {
  /** State directory; default ACTORVM_HOME or ~/.actorvm (tests point it elsewhere). */
  home?: string;
  pool?: Piscina;
}

interface BuildFlags {
  name?: string;
  binary: string[];
  file: string[];
  env: string[];
  package?: string[];
  workdir?: string;
  force?: boolean;
  refresh?: boolean;
  json?: boolean;
}

const collect = (v: string, acc: string[]): string[] => [...acc, v];

function splitPair(flag: string, value: string): [string, string] {
  const eq = value.indexOf('=');
  if (eq <= 0 || eq === value.length - 1) {
    throw new ImageError(ImageErrorCode.SPEC, `--${flag} takes A=B, got ${JSON.stringify(value)}`);
  }
  return [value.slice(0, eq), value.slice(eq + 1)];
}

/** The spec the build flags describe. */
export function specFromFlags(f: BuildFlags): ImageSpec {
  const files: ImageFileSpec[] = f.file.map((v) => {
    const [path, source] = splitPair('file', v);
    return { path, source };
  });
  const env: Record<string, string> = {};
  for (const v of f.env) {
    const [k, val] = splitPair('env', v);
    env[k] = val;
  }
  const packages = f.package ?? [];
  const extra =
    f.binary.length > 0 || files.length > 0 || f.env.length > 0 || packages.length > 0 || f.workdir;
  if (!f.name && extra) {
    throw new ImageError(
      ImageErrorCode.SPEC,
      'an image with packages, binaries, files, env or a workdir needs --name',
    );
  }
  const spec: ImageSpec = { name: f.name ?? BASE_IMAGE_NAME };
  if (packages.length) spec.packages = packages;
  if (f.workdir) spec.workdir = f.workdir;
  if (f.binary.length) spec.binaries = f.binary;
  if (files.length) spec.files = files;
  if (f.env.length) spec.env = env;
  return spec;
}

interface Reporter<P> {
  onProgress: (p: P) => void;
  done: () => void;
}

/**
 * Build progress on stderr: on a terminal, a bar of the build's steps and,
 * while packages are fetched and unpacked, a second bar of bytes or packages;
 * one line per step (and per package phase) otherwise; nothing for --json.
 */
function progressReporter(json: boolean): Reporter<BuildProgress> {
  if (json) return { onProgress: () => {}, done: () => {} };
  if (process.stderr.isTTY) {
    const bars = new cliProgress.MultiBar(
      {
        format: '{label} [{bar}] {value}/{total} {what}',
        stream: process.stderr,
        hideCursor: true,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    );
    let steps: cliProgress.SingleBar | undefined;
    let detail: cliProgress.SingleBar | undefined;
    let detailPhase = '';
    return {
      onProgress: (p) => {
        if (!steps) steps = bars.create(p.total, p.done, { label: 'building', what: p.step });
        steps.update(p.done, { what: p.step });
        if (p.detail) {
          const d = p.detail;
          const unit = d.unit === 'bytes' ? 'KiB' : 'packages';
          const scale = d.unit === 'bytes' ? 1024 : 1;
          if (!detail || detailPhase !== d.phase) {
            detail?.stop();
            detailPhase = d.phase;
            detail = bars.create(Math.max(1, Math.round(d.total / scale)), 0, {
              label: d.phase.padEnd(8),
              what: unit,
            });
          }
          detail.setTotal(Math.max(1, Math.round(d.total / scale)));
          detail.update(Math.round(d.done / scale), { what: unit });
        }
      },
      done: () => bars.stop(),
    };
  }
  let last = '';
  return {
    onProgress: (p) => {
      const key = p.detail ? `${p.step}:${p.detail.phase}` : p.step;
      if (key === last) return;
      last = key;
      process.stderr.write(
        p.detail
          ? `image: ${p.step}: ${p.detail.phase} (${p.detail.total} ${p.detail.unit})\n`
          : `image: ${p.step} (${p.done}/${p.total})\n`,
      );
    },
    done: () => {},
  };
}

function importReporter(json: boolean): Reporter<ImportProgress> {
  if (json) return { onProgress: () => {}, done: () => {} };
  let last = '';
  return {
    onProgress: (p) => {
      if (p.phase === last) return;
      last = p.phase;
      process.stderr.write(`import: ${p.phase}\n`);
    },
    done: () => {},
  };
}

const summary = (img: BuiltImage) => ({
  name: img.name,
  id: img.id,
  sizeBytes: img.sizeBytes,
  createdAt: img.createdAt,
  kernelVersion: img.kernelVersion,
  modules: img.modules,
  env: img.env,
  dir: img.dir,
  kernel: img.kernel,
  initrd: img.initrd,
  rootfs: img.rootfs,
  rootDisk: img.rootDisk,
  workdir: img.workdir,
  defaultCommand: img.defaultCommand,
  imported: img.imported,
  packages: img.packages,
  spec: img.spec,
});

/** Runs a build or import with its progress shown, then prints the image (--json) or one line with the time. */
async function report<P>(
  json: boolean,
  progress: Reporter<P>,
  make: (onProgress: (p: P) => void) => Promise<BuiltImage>,
  line: (img: BuiltImage) => string,
): Promise<void> {
  const started = performance.now();
  let img: BuiltImage;
  try {
    img = await make(progress.onProgress);
  } finally {
    progress.done();
  }
  if (json) printJson({ ...summary(img), fromCache: img.fromCache ?? false });
  else process.stdout.write(`${line(img)} in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
}

export function registerImageCommands(program: Command, opts: ImageCommandOptions = {}): void {
  const image = program.command('image').description('build, list and remove sandbox images (local files)');

  image
    .command('build')
    .description('build an image (default: base), or find it already built')
    .option('--name <name>', 'image name (default: base)')
    .option(
      '--binary <path>',
      'host executable to include with its shared libraries (repeatable)',
      collect,
      [],
    )
    .option(
      '--file <imagePath=hostPath>',
      'host file or directory to copy to imagePath (repeatable)',
      collect,
      [],
    )
    .option('--env <key=value>', 'environment variable of the image (repeatable)', collect, [])
    .option(
      '--package <name>',
      'Debian package to install, with its dependencies (repeatable; from the archives the host apt uses)',
      collect,
      [],
    )
    .option('--workdir <path>', 'default working directory of commands')
    .option('--refresh', 'refresh the package lists (apt-get update) first')
    .option('--force', 'rebuild even if the image exists')
    .option('--json', 'machine-readable output')
    .action(async (flags: BuildFlags, cmd: Command) => {
      const json = Boolean(cmd.optsWithGlobals<{ json?: boolean }>().json);
      const spec = specFromFlags(flags);
      await report(
        json,
        progressReporter(json),
        (onProgress) =>
          buildImage(spec, {
            home: opts.home,
            pool: opts.pool,
            force: flags.force,
            refresh: flags.refresh,
            onProgress,
          }),
        (img) =>
          `${img.fromCache ? 'cached' : 'built'} ${img.name} ${img.id} (${formatBytes(img.sizeBytes)})`,
      );
    });

  image
    .command('import')
    .argument('<name>', 'image name')
    .argument('<source>', 'an OCI layout directory, an OCI archive, a `docker save` tarball, or - for stdin')
    .description('import an OCI or docker-save image (layers, Env, WorkingDir; the agent becomes its init)')
    .option('--ref <ref>', 'which image, when the source holds several (ref name or docker tag)')
    .option('--json', 'machine-readable output')
    .action(async (name: string, source: string, flags: { ref?: string }, cmd: Command) => {
      const json = Boolean(cmd.optsWithGlobals<{ json?: boolean }>().json);
      await report(
        json,
        importReporter(json),
        (onProgress) =>
          importImage(name, source === '-' ? process.stdin : source, {
            home: opts.home,
            pool: opts.pool,
            ref: flags.ref,
            onProgress,
          }),
        (img) => `imported ${img.name} ${img.id} (${formatBytes(img.sizeBytes)}, ${img.imported?.digest})`,
      );
    });

  image
    .command('ls')
    .description('list built images')
    .option('--json', 'machine-readable output')
    .action(async (_flags: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const json = Boolean(g.json);
      const images =
        g.socket || g.url
          ? ((await withClient(g, (rt) => rt.images())) as unknown as Awaited<ReturnType<ImageStore['list']>>)
          : await new ImageStore({ home: opts.home }).list();
      if (json) {
        printJson(images.map((i) => ({ ...summary(i), names: i.names })));
        return;
      }
      printTable(
        ['NAME', 'ID', 'SIZE', 'CREATED', 'BOOT', 'FROM'],
        images.map((i) => [
          i.names.length ? i.names.join(',') : `(${i.name})`,
          i.id,
          formatBytes(i.sizeBytes),
          i.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
          i.rootDisk ? 'disk' : 'initrd',
          i.imported
            ? `${i.imported.format} ${i.imported.digest.slice(0, 19)}`
            : [i.packages ? `${i.packages.count} packages` : '', (i.spec.binaries ?? []).join(' ')]
                .filter(Boolean)
                .join(', '),
        ]),
      );
    });

  image
    .command('rm')
    .argument('<image>', 'image name or id (or a unique id prefix)')
    .description('remove an image and the names pointing at it')
    .option('--json', 'machine-readable output')
    .action(async (nameOrId: string, _flags: unknown, cmd: Command) => {
      const json = Boolean(cmd.optsWithGlobals<{ json?: boolean }>().json);
      const img = await new ImageStore({ home: opts.home }).remove(nameOrId);
      if (json) printJson({ removed: summary(img) });
      else process.stdout.write(`removed ${img.name} ${img.id}\n`);
    });
}
