#!/usr/bin/env node
// The `cuttle` command: the compiled CLI (npm install builds it).
await import('../dist/cli/src/main.js');
