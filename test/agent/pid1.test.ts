import { readFileSync, readlinkSync } from 'node:fs';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { processesInPidNamespace } from '../support/processes.js';
import { startAgent, waitFor } from './helpers.js';

/** The agent as PID 1 of a new pid namespace, with its own /proc (no --init: nothing is mounted by the agent). */
const PIDNS = ['unshare', '--pid', '--fork', '--kill-child', '--mount-proc'];

describe('agent as PID 1 of a pid namespace', () => {
  it('reports the real exit status of a command whose orphans it reaps', async () => {
    const { client } = await startAgent({ wrapper: PIDNS });
    expect(client.hello.pid).toBe(1);
    expect(client.hello.init).toBe(false);

    const r = await client.exec({ shell: '(sleep 0.2; exit 7) & exit 3' });
    expect(r.exitCode).toBe(3);

    // Orphans that have already exited when the command ends are re-parented to
    // the agent as zombies and reaped; none of their statuses (1..9) may be
    // taken for the command's.
    for (let round = 0; round < 5; round++) {
      const many = await client.exec({ shell: 'for i in 1 2 3 4 5 6 7 8 9; do (exit $i) & done; exit 42' });
      expect(many.exitCode).toBe(42);
    }
    const zombies = async (): Promise<string> =>
      (await client.exec({ shell: "grep -l '^State:.*Z' /proc/[0-9]*/status || true" })).stdout.toString();
    await waitFor('every orphan to be reaped', async () => (await zombies()) === '');
  });

  it('powers the namespace off on shutdown, terminating what is left', async () => {
    const { client, agent } = await startAgent({ wrapper: PIDNS });
    const leftover = client.run({ shell: 'sleep 1000' });
    await leftover.pid;
    await client.shutdown();
    await agent.exited;
    await expect(leftover.result).rejects.toMatchObject({ code: 'ERR_AGENT_CLOSED' });
  });
});

describe('the lifeline', () => {
  it('ends the pid namespace, daemons included, when the other end closes', async () => {
    // fd 4: a socketpair whose other end only this process holds (as the runtime does).
    const { client, agent } = await startAgent({ wrapper: PIDNS, extraFds: 1, args: ['--lifeline-fd', '4'] });
    const watched = client.run({ shell: 'sleep 1000' });
    await watched.pid;
    await client.exec({ shell: 'setsid sleep 1001 </dev/null >/dev/null 2>&1 &' });
    // The agent is unshare's child; its pid namespace is the sandbox's.
    const agentPid = Number(
      readFileSync(`/proc/${agent.child.pid}/task/${agent.child.pid}/children`, 'utf8'),
    );
    const ns = readlinkSync(`/proc/${agentPid}/ns/pid`);
    expect(processesInPidNamespace(ns).length).toBeGreaterThanOrEqual(3);
    (agent.child.stdio[4] as Socket).destroy();
    await expect(watched.result).rejects.toMatchObject({ code: 'ERR_AGENT_CLOSED' });
    await agent.exited;
    expect(agent.stderrText()).toContain('lifeline closed');
    expect(processesInPidNamespace(ns)).toEqual([]);
  });
});

describe('agent as an ordinary process', () => {
  it('exits 0 on shutdown', async () => {
    const { client, agent } = await startAgent();
    expect(client.hello.pid).toBe(agent.child.pid);
    await client.shutdown();
    expect(await agent.exited).toEqual({ code: 0, signal: null });
  });
});
