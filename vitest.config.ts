import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Suites spawn workers, QEMU and namespaces; a 2-core machine is happiest with few files at once.
    maxWorkers: 2,
    pool: 'forks',
  },
});
