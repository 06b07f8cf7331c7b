/**
 * The hollow runner: a measuring instrument for the server (`npm run fleet -- --hollow`, used by the scale
 * benchmark), never reachable from `run`. Everything around the runner stays real (key, certificate, TLS connection,
 * journal, leases, heartbeats, log sequence, results, package downloads and their verification); only the machine's
 * work is left out: a script succeeds at once with one log line and no process is started, and a package is
 * downloaded into the cache and verified but not unpacked (no deploy.sh, no substitution, no script).
 */
import type { RunScriptOptions, RunScriptResult } from './process-group.js';
import type { Runner } from './runner.js';

/** The one line a hollow script prints. */
export const HOLLOW_LINE = 'hollow agent: script not run';

export const hollowRunner: Runner = {
  kind: 'hollow',
  unpacksPackages: false,
  runScript(o: RunScriptOptions): Promise<RunScriptResult> {
    if (o.signal?.aborted)
      return Promise.resolve({ exitCode: null, signal: null, timedOut: false, cancelled: true, durationMs: 0 });
    o.onLine('stdout', HOLLOW_LINE);
    return Promise.resolve({ exitCode: 0, signal: null, timedOut: false, cancelled: false, durationMs: 0 });
  },
};
