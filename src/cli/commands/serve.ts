/**
 * `actorctl serve`: the daemon. A Runtime plus its HTTP API on the control
 * socket and, with --listen, on TCP. Runs until SIGINT or SIGTERM, then
 * closes the doors, stops every sandbox and exits: nothing is left behind.
 */
import { createRequire } from 'node:module';
import { type BackendChoice, Runtime } from '../../api/runtime.js';
import { resolveApiKey } from '../../daemon/auth.js';
import { DaemonError, DaemonErrorCode } from '../../daemon/errors.js';
import { Daemon } from '../../daemon/server.js';
import { actorvmHome, defaultSocketPath } from '../../runtime/paths.js';
import type { GlobalOptions } from '../context.js';
import { printJson } from '../output.js';

export interface ServeOptions extends GlobalOptions {
  backend?: BackendChoice;
  listen?: string;
  apiKeyFile?: string;
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
  const home = actorvmHome();
  const apiKey = listen ? resolveApiKey({ keyFile: opts.apiKeyFile, home }) : undefined;
  const version = (createRequire(import.meta.url)('../../../package.json') as { version: string }).version;
  const rt = await Runtime.start({ backend: opts.backend });
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
    });
  } else {
    const url = tcp ? ` and http://${tcp.host.includes(':') ? `[${tcp.host}]` : tcp.host}:${tcp.port}` : '';
    process.stdout.write(`actorvm daemon serving on ${socket}${url} (pid ${process.pid}); Ctrl-C to stop\n`);
    if (apiKey) process.stdout.write(`API key: ${apiKey.origin}\n`);
  }
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await daemon.close();
  await rt.stop();
}
