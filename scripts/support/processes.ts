/**
 * Processes for the bench (`scripts/bench`) and the integration tests (`server/test/support/fixtures.ts`): free
 * ports, the built server and agents started in process groups of their own with their output in a log file, waits
 * for them to answer or to exit, and signals to a whole group. Compiled by tsconfig.build.json (the bench runs from
 * dist/); the tests load it through ts-jest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { setTimeout } from 'node:timers/promises';

/** A TCP port free on 127.0.0.1 now (the kernel's pick; nothing holds it once this returns). */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
}

/**
 * Starts `command` in a process group of its own (detached: `killGroup` reaches its children too), in `cwd`, with
 * this process's environment plus `env`, no standard input, standard output and error appended to `log`.
 */
export function spawnLogged(
  command: string,
  args: string[],
  o: { cwd: string; env?: NodeJS.ProcessEnv; log: string },
): ChildProcess {
  const fd = openSync(o.log, 'a');
  try {
    return spawn(command, args, {
      cwd: o.cwd,
      env: { ...process.env, ...o.env },
      stdio: ['ignore', fd, fd],
      detached: true,
    });
  } finally {
    // The child has its own copy of the descriptor once spawn() returns.
    closeSync(fd);
  }
}

/** Sends `signal` to the process group `p` leads (the process and what it started); nothing if it is gone. */
export function killGroup(p: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-p.pid!, signal);
  } catch {
    /* gone */
  }
}

/** Whether `p` has exited (Node.js has seen it exit or be killed). */
export function hasExited(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

/** Until `p` has exited, at most `ms`. */
export async function waitExit(p: ChildProcess, ms: number): Promise<void> {
  if (hasExited(p)) return;
  const timer = new AbortController();
  await Promise.race([once(p, 'exit'), setTimeout(ms, undefined, { signal: timer.signal }).catch(() => undefined)]);
  timer.abort();
}

async function poll<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs: number,
  everyMs: number,
  gone?: () => string | undefined,
): Promise<T> {
  const t0 = Date.now();
  let last: unknown;
  while (Date.now() - t0 < timeoutMs) {
    const why = gone?.();
    if (why) throw new Error(`gave up waiting for ${what}: ${why}`);
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await setTimeout(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** Calls `fn` every `everyMs` until it returns something truthy (a throw counts as not yet); fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs = 60_000,
  everyMs = 200,
): Promise<T> {
  return poll(what, fn, timeoutMs, everyMs);
}

/**
 * `waitFor` for a process just started, e.g. a server until it answers /api/health: also given up on at once when
 * `p` has exited, which will never answer.
 */
export async function waitForProcess<T>(
  p: ChildProcess,
  what: string,
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs: number,
  everyMs: number,
): Promise<T> {
  return poll(what, fn, timeoutMs, everyMs, () =>
    hasExited(p) ? `the process exited (${p.exitCode ?? p.signalCode})` : undefined,
  );
}
