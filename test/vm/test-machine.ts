/**
 * The machine every backend test starts, free of vitest so that the fixtures
 * run as child processes and worker threads (fixtures/*.ts) can use it too:
 * where the shared test image store lives and the spec a test machine gets.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { MachineNet, MachineSpec } from '../../src/actors/vm/backends/machine.js';
import type { BuiltImage } from '../../src/images/index.js';

/** Images are content-addressed, so every test file, fixture and run can share one store. */
export const IMAGE_HOME = join(tmpdir(), 'actorvm-test-images');

/** QEMU's user-mode addresses, which FakeNetwork and the tests' expectations assume. */
export const TEST_NET: Readonly<MachineNet> = {
  ip: '10.0.2.15',
  prefix: 24,
  gateway: '10.0.2.2',
  dns: '10.0.2.3',
  mtu: 1500,
  mac: '52:54:00:12:34:56',
  hostname: 'sbx-test',
};

/** A small machine (256 MiB, one CPU) on TEST_NET, logging nothing unless `over` says otherwise. */
export function testMachineSpec(
  id: string,
  image: BuiltImage,
  runDir: string,
  over: Partial<MachineSpec> = {},
): MachineSpec {
  return {
    id,
    image,
    memoryMiB: 256,
    cpus: 1,
    runDir,
    log: pino({ level: 'silent' }),
    net: { ...TEST_NET },
    ...over,
  };
}
