/**
 * `actorctl image build | ls | rm`: the local image store. Images are files
 * under $ACTORVM_HOME/images, so these commands work without a running
 * daemon. `image ls --socket P` (or --url) lists the daemon's store instead,
 * which is the one its sandboxes boot from when its ACTORVM_HOME differs.
 */
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import type { Piscina } from 'piscina';
import { type BuildProgress, buildImage } from '../../images/builder.js';
import { ImageError, ImageErrorCode } from '../../images/errors.js';
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
  force?: boolean;
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
  const extra = f.binary.length > 0 || files.length > 0 || f.env.length > 0;
  if (!f.name && extra) {
    throw new ImageError(ImageErrorCode.SPEC, 'an image with binaries, files or env needs --name');
  }
  const spec: ImageSpec = { name: f.name ?? BASE_IMAGE_NAME };
  if (f.binary.length) spec.binaries = f.binary;
  if (files.length) spec.files = files;
  if (f.env.length) spec.env = env;
  return spec;
}

/** Progress on stderr: a bar on a terminal, one line per step otherwise, nothing for --json. */
function progressReporter(json: boolean): { onProgress: (p: BuildProgress) => void; done: () => void } {
  if (json) return { onProgress: () => {}, done: () => {} };
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: 'building [{bar}] {value}/{total} {step}', stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      onProgress: (p) => {
        if (!started) {
          bar.start(p.total, p.done, { step: p.step });
          started = true;
        } else bar.update(p.done, { step: p.step });
      },
      done: () => {
        if (started) bar.stop();
      },
    };
  }
  let last = '';
  return {
    onProgress: (p) => {
      if (p.step === last) return;
      last = p.step;
      process.stderr.write(`image: ${p.step} (${p.done}/${p.total})\n`);
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
  spec: img.spec,
});

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
    .option('--force', 'rebuild even if the image exists')
    .option('--json', 'machine-readable output')
    .action(async (flags: BuildFlags, cmd: Command) => {
      const json = Boolean(cmd.optsWithGlobals<{ json?: boolean }>().json);
      const spec = specFromFlags(flags);
      const progress = progressReporter(json);
      const started = performance.now();
      let img: BuiltImage;
      try {
        img = await buildImage(spec, {
          home: opts.home,
          pool: opts.pool,
          force: flags.force,
          onProgress: progress.onProgress,
        });
      } finally {
        progress.done();
      }
      if (json) {
        printJson({ ...summary(img), fromCache: img.fromCache ?? false });
        return;
      }
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      process.stdout.write(
        `${img.fromCache ? 'cached' : 'built'} ${img.name} ${img.id} (${formatBytes(img.sizeBytes)}) in ${secs} s\n`,
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
        ['NAME', 'ID', 'SIZE', 'CREATED', 'KERNEL', 'BINARIES'],
        images.map((i) => [
          i.names.length ? i.names.join(',') : `(${i.name})`,
          i.id,
          formatBytes(i.sizeBytes),
          i.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
          i.kernelVersion,
          (i.spec.binaries ?? []).join(' '),
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
