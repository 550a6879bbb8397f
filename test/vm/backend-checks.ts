/**
 * What the QEMU and namespace suites check alike: a guest started from
 * machineSpec runs commands with its environment and hostname and reaches the
 * gateway through `frames`; a machine logs its whole lifecycle; a machine dies
 * with the process that started it (fixtures/hold-machine.ts is that process).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { expect } from 'vitest';
import type { BackendKind } from '../../src/actors/vm/backends/machine.js';
import type { AgentClient } from '../../src/agent/index.js';
import type { FakeNetwork } from './fake-net.js';
import { IMAGE_HOME, onCleanup, type RecordingLogger } from './helpers.js';
import { TEST_NET } from './test-machine.js';

/** Start the machine with this environment for expectGuestBasics. */
export const GREETING_ENV = { GREETING: 'hello world' };

/** Commands, their environment, exit codes and hostname; ARP and ping of the gateway via FakeNetwork. */
export async function expectGuestBasics(agent: AgentClient, net: FakeNetwork): Promise<void> {
  expect((await agent.exec({ argv: ['true'] })).exitCode).toBe(0);
  const echo = await agent.exec({ shell: 'echo "$GREETING"; hostname; exit 3' });
  expect(echo.exitCode).toBe(3);
  expect(echo.stdout.toString()).toBe(`${GREETING_ENV.GREETING}\n${TEST_NET.hostname}\n`);

  // The guest's ARP and ICMP travel on `frames`; FakeNetwork answers both.
  const ping = await agent.exec({ argv: ['ping', '-c', '1', '-W', '5', TEST_NET.gateway] });
  expect(net.arpRequests).toContainEqual({
    senderMac: TEST_NET.mac,
    senderIp: TEST_NET.ip,
    targetIp: TEST_NET.gateway,
  });
  expect(ping.exitCode).toBe(0);
  expect(net.echoReplies).toBeGreaterThanOrEqual(1);
}

/** The events a machine that started, served its agent and stopped has logged. */
export function expectLifecycleLogged(rec: RecordingLogger): void {
  expect(rec.events()).toEqual(
    expect.arrayContaining([
      'vm.process_started',
      'vm.agent_connected',
      'vm.stopping',
      'vm.exited',
      'vm.stopped',
    ]),
  );
}

/**
 * Starts a `backend` machine (base image, `runDir`) in a child process that
 * holds it, for the tests that SIGKILL that process; resolves with the child
 * and the machine's pid once it started. The child is killed after the test.
 */
export async function holdMachineInChild(
  backend: BackendKind,
  runDir: string,
): Promise<{ holder: ChildProcess; pid: number; slot?: number }> {
  const fixture = new URL('./fixtures/hold-machine.ts', import.meta.url).pathname;
  const holder = spawn(process.execPath, ['--import', 'tsx', fixture, backend, IMAGE_HOME, runDir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  onCleanup(() => {
    holder.kill('SIGKILL');
  });
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    holder.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
    holder.once('exit', (code) =>
      reject(new Error(`holder exited (${code}) before starting its ${backend} machine`)),
    );
  });
  const { pid, slot } = JSON.parse(line) as { pid: number; slot?: number };
  return { holder, pid, slot };
}
