/**
 * The in-sandbox services (envd's Connect RPC `process.Process` and
 * `filesystem.Filesystem`) as typed clients over the endpoint's address:
 * Connect protocol, binary codec, HTTP/1.1 through the same keep-alive agent
 * (and so the same Unix socket) as the REST calls. A streaming call holds one
 * connection while it is open; its response is read only as fast as the
 * caller pulls from the iterator, so a slow consumer pauses the stream in the
 * socket, not in memory here.
 */
import { type Client, createClient, type Transport } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Filesystem, Process } from '../../protocol/envd/index.js';
import type { Endpoint } from './endpoint.js';

/** Largest single Connect message accepted from the daemon (an output chunk, a ListDir answer). */
const READ_MAX_BYTES = 64 * 1024 * 1024;

export interface RpcClients {
  process: Client<typeof Process>;
  filesystem: Client<typeof Filesystem>;
}

export function rpcClients(endpoint: Endpoint): RpcClients {
  const transport: Transport = createConnectTransport({
    httpVersion: '1.1',
    baseUrl: endpoint.baseUrl,
    useBinaryFormat: true,
    readMaxBytes: READ_MAX_BYTES,
    nodeOptions: endpoint.nodeOptions(),
    interceptors: [
      (next) => (req) => {
        for (const [k, v] of Object.entries(endpoint.authHeaders())) req.header.set(k, v);
        return next(req);
      },
    ],
  });
  return { process: createClient(Process, transport), filesystem: createClient(Filesystem, transport) };
}

/** Call options for one sandbox: its key in E2b-Sandbox-Id, the endpoint's closing signal joined with `signal`. */
export function callOptions(endpoint: Endpoint, key: string, signal?: AbortSignal) {
  return {
    headers: { 'e2b-sandbox-id': key },
    signal: signal ? AbortSignal.any([signal, endpoint.signal]) : endpoint.signal,
  };
}
