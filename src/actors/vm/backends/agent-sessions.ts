/**
 * The agent clients a machine has handed out from connectAgent(): stop() asks
 * one that is still open to power the guest off, and closes them all once the
 * machine is gone. A client leaves the set when it closes.
 */
import type { AgentClient } from '../../../agent/client.js';

export class AgentSessions {
  readonly #clients = new Set<AgentClient>();

  /** Tracks `client` until it closes; returns it. */
  add(client: AgentClient): AgentClient {
    this.#clients.add(client);
    void client.closed.then(() => this.#clients.delete(client));
    return client;
  }

  /** A client that can still carry a request, if any. */
  anyOpen(): AgentClient | undefined {
    return [...this.#clients].find((c) => !c.isClosed);
  }

  closeAll(): void {
    for (const c of this.#clients) c.close();
  }
}
