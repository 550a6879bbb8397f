/**
 * A fork-filled pool's template: one machine booted and warmed like any pool
 * machine, snapshotted once (device state + frozen RAM into /dev/shm, kept
 * paused while it is written), then taken down — the snapshot is all the
 * pool needs. Every fill restores a machine from it: QEMU on a private
 * mapping of the frozen RAM (copy-on-write, so the pool's machines share
 * every page none of them has written) and a fresh identity handed off and
 * acknowledged through the machine's own network (src/actors/vm/handoff.ts).
 *
 * The template is made on the first fill (so a pool that never fills costs
 * nothing) and shared by the fills that wait for it; a failed template is
 * retried by the next fill. `close()` (the pool drained or lost) removes the
 * files; machines restored from them keep their mappings.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { processTag } from '../../runtime/process-tag.js';
import type { NetConfig } from '../net/config.js';
import type { BootedMachine, MachineRequest, SandboxFactory } from '../vm/sandbox-factory.js';

/** Where fork copies live (a dead runtime's are swept by src/api/snapshot-service.ts, by this prefix). */
const FORK_DIR_PREFIX = `/dev/shm/actorvm-fork-${processTag()}-pool-`;

interface TemplateFiles {
  dir: string;
  state: string;
  ram: string;
  imageId: string;
}

export class ForkTemplate {
  private files: Promise<TemplateFiles> | undefined;
  private closed = false;

  constructor(
    private readonly factory: SandboxFactory,
    private readonly pool: string,
    private readonly log: Logger,
  ) {}

  /** A machine restored from the template (made first if need be), attached with `req.net`. */
  async make(req: MachineRequest): Promise<BootedMachine> {
    const t = await this.template(req);
    return this.factory.boot({ ...req, imageId: t.imageId, restore: { state: t.state, ram: t.ram } });
  }

  private template(req: MachineRequest): Promise<TemplateFiles> {
    this.files ??= this.prepare(req).catch((err) => {
      this.files = undefined; // the next fill tries again
      throw err;
    });
    return this.files;
  }

  private async prepare(req: MachineRequest & { net: NetConfig }): Promise<TemplateFiles> {
    const t0 = performance.now();
    const m = await this.factory.boot({ ...req, observer: undefined, pool: undefined });
    const dir = mkdtempSync(FORK_DIR_PREFIX);
    try {
      await this.factory.warmUp(m, req.bootTimeoutMs);
      await m.vm.ask({ type: 'snapshot', dir, stayPaused: true }, { timeoutMs: req.bootTimeoutMs });
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    } finally {
      await this.factory.destroy(m.sandbox);
    }
    if (this.closed) {
      rmSync(dir, { recursive: true, force: true });
      throw Object.assign(new Error(`pool ${this.pool} is draining`), { code: 'ERR_POOL_DRAINING' });
    }
    this.log.info(
      { event: 'pool.template_ready', pool: this.pool, ms: Math.round(performance.now() - t0) },
      'fork template snapshotted',
    );
    return { dir, state: join(dir, 'state'), ram: join(dir, 'ram'), imageId: m.imageId };
  }

  close(): void {
    this.closed = true;
    const files = this.files;
    this.files = undefined;
    void files?.then(
      (t) => rmSync(t.dir, { recursive: true, force: true }),
      () => {},
    );
  }
}
