#!/usr/bin/env node
// The published entry point runs the compiled CLI (built by `npm run build`, or by
// scripts/setup.sh, which `npm test` and `npm run demo` call first).
import '../dist/cli/main.js';
