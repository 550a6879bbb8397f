/**
 * `actorctl serve`: the daemon. A Runtime plus its HTTP API on the control
 * socket and, with --listen, on TCP. Runs until SIGINT or SIGTERM, then
 * closes the doors, drains the warm pools, stops every sandbox and exits:
 * nothing is left behind.
 *
 * Warm pools: `--warm base=4,py@qemu=2` starts one pool per item (they fill
 * in the background, so the daemon answers at once); `--lazy-pools MIN`
 * starts a pool for the key of the first create no pool serves. Every pool
 * holds at most `--pool-max` machines (never fewer than its min), all pools
 * together at most `--pool-memory` MiB of guest memory.
 */
import { createRequire } from 'node:module';
import { DEFAULT_POOL_MAX, type PoolConfig, parseWarmSpec } from '../../actors/pool/pool-key.js';
import { type BackendChoice, Runtime, type RuntimeOptions } from '../../api/runtime.js';
import { resolveApiKey } from '../../daemon/auth.js';
import { DaemonError, DaemonErrorCode } from '../../daemon/errors.js';
import { Daemon } from '../../daemon/server.js';
import { actorvmHome, defaultSocketPath } from '../../runtime/paths.js';
import type { GlobalOptions } from '../context.js';
import { intFlag } from '../flags.js';
import { printJson } from '../output.js';

export interface ServeOptions extends GlobalOptions {
  backend?: BackendChoice;
  listen?: string;
  apiKeyFile?: string;
  /** `IMAGE[@BACKEND][=MIN],…` */
  warm?: string;
  poolMax?: string;
  lazyPools?: string;
  poolMemory?: string;
}

/**
 * The pool options of `serve`, checked before anything starts. Throws
 * ERR_POOL_BAD_CONFIG (a bad --warm spec) and ERR_CLI_BAD_OPTION.
 */
export function poolOptions(
  opts: Pick<ServeOptions, 'warm' | 'poolMax' | 'lazyPools' | 'poolMemory'>,
): Pick<RuntimeOptions, 'pools' | 'lazyPools' | 'poolMemoryMiB'> {
  const poolMax = intFlag('pool-max', opts.poolMax, 1, 4096) ?? DEFAULT_POOL_MAX;
  const lazyMin = intFlag('lazy-pools', opts.lazyPools, 0, 4096);
  const poolMemoryMiB = intFlag('pool-memory', opts.poolMemory, 64, 1 << 30);
  let pools: PoolConfig[] | undefined;
  if (opts.warm !== undefined) {
    pools = parseWarmSpec(opts.warm).map((c) => ({
      ...c,
      max: Math.max(poolMax, c.min ?? 1),
    }));
  }
  return {
    pools,
    lazyPools: lazyMin === undefined ? undefined : { min: lazyMin, max: Math.max(poolMax, lazyMin) },
    poolMemoryMiB,
  };
}

/** `host:port` (IPv4, `localhost` or `[v6]`); port 0 picks a free one. Throws ERR_DAEMON_START_FAILED. */
export function parseListen(spec: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(spec);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || port > 65535) {
    throw new DaemonError(DaemonErrorCode.START_FAILED, `--listen takes HOST:PORT, got '${spec}'`);
  }
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

export async function serve(opts: ServeOptions): Promise<void> {
  const listen = opts.listen ? parseListen(opts.listen) : undefined;
  const pools = poolOptions(opts);
  const home = actorvmHome();
  const apiKey = listen ? resolveApiKey({ keyFile: opts.apiKeyFile, home }) : undefined;
  const version = (createRequire(import.meta.url)('../../../package.json') as { version: string }).version;
  // Pools start filling here; the doors open without waiting for them.
  const rt = await Runtime.start({ backend: opts.backend, ...pools });
  let daemon: Daemon;
  try {
    daemon = await Daemon.start({
      runtime: rt,
      socket: opts.socket ?? defaultSocketPath(),
      listen,
      apiKey: apiKey?.key,
      log: rt.system.log,
      version,
    });
  } catch (err) {
    await rt.stop();
    throw err;
  }
  const tcp = daemon.tcpAddress;
  const socket = opts.socket ?? defaultSocketPath();
  if (apiKey) rt.system.log.info({ event: 'daemon.api_key', origin: apiKey.origin }, 'API key for TCP');
  if (opts.json) {
    printJson({
      socket,
      tcp: tcp ? `${tcp.host}:${tcp.port}` : null,
      apiKey: apiKey?.origin ?? null,
      pid: process.pid,
      pools: rt.pools.list().map((p) => p.name),
    });
  } else {
    const url = tcp ? ` and http://${tcp.host.includes(':') ? `[${tcp.host}]` : tcp.host}:${tcp.port}` : '';
    process.stdout.write(`actorvm daemon serving on ${socket}${url} (pid ${process.pid}); Ctrl-C to stop\n`);
    if (apiKey) process.stdout.write(`API key: ${apiKey.origin}\n`);
    const names = rt.pools.list().map((p) => p.name);
    if (names.length) process.stdout.write(`warm pools: ${names.join(', ')}\n`);
  }
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await daemon.close();
  // Drains the pools first: their idle and booting machines go before the sandboxes do.
  await rt.stop();
}
