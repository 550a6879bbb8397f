import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Fails the run if a test left a process, mount, namespace, id range or temp dir behind.
    globalSetup: ['test/support/leftovers.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Suites spawn workers, QEMU and namespaces; a 2-core machine is happiest with few files at once.
    maxWorkers: 2,
    pool: 'forks',
  },
});
