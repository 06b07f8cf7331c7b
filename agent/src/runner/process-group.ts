import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { WarmShell, warmPrologue } from './warm-shell.js';

export interface RunScriptOptions {
  /** Bash source text. */
  script: string;
  /** Working directory (must exist). */
  cwd: string;
  /** Merged over process.env. */
  env: Record<string, string>;
  /** Private folder for the script file (0700 dir, 0600 file); the file is deleted once the process ends. */
  scriptDir: string;
  /** When exceeded the whole process group is killed and `timedOut` is set. */
  timeoutSeconds?: number;
  /** Time between SIGTERM and SIGKILL to the process group (default 5000). */
  graceMs?: number;
  /**
   * One call per output line, without the trailing newline (a trailing \r is stripped too). A final partial line
   * is delivered as well. Must not throw: it runs inside stream event handlers.
   */
  onLine: (stream: 'stdout' | 'stderr', text: string) => void;
  /** Aborting cancels the run: the group is killed like on timeout and `cancelled` is set. */
  signal?: AbortSignal;
  /**
   * Back-pressure: while `isOpen()` is false the script's output is not read (its pipe fills and its writes block),
   * until `wait()` resolves. A log flood is thus slowed to what the agent can send, and no line is dropped.
   */
  gate?: { isOpen(): boolean; wait(): Promise<void> };
  /**
   * A shell started ahead (see warm-shell.ts), handed over for this run: it runs the script when it is still usable
   * and the environment fits it, else bash is spawned as without one. Either way the run owns it from here.
   */
  shell?: WarmShell;
}

export interface RunScriptResult {
  /** null when the process was ended by a signal (then `signal` is set). */
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  cancelled: boolean;
  durationMs: number;
}

const DEFAULT_GRACE_MS = 5000;
/** How long to wait for stdout/stderr to close after bash exited before assuming a background child holds them. */
const PIPE_DRAIN_MS = 2000;
const POLL_MS = 50;
/** After bash exits, output still arriving is read for at most this long before the group is killed. */
const ORPHAN_OUTPUT_MS = 60_000;
/**
 * A line longer than this is delivered in pieces, so a script printing megabytes without a newline cannot grow the
 * agent's memory without bound.
 */
const MAX_LINE_CHARS = 1 << 20;

/**
 * Runs `script` with bash as the leader of a new process group, so a timeout or cancel can kill everything it
 * started (pipelines, background jobs), not just bash itself.
 */
export async function runScript(o: RunScriptOptions): Promise<RunScriptResult> {
  const started = performance.now();
  const warm = o.shell?.usable && !o.signal?.aborted && WarmShell.fits(o.env) ? o.shell : undefined;
  if (o.shell !== warm) o.shell?.close();
  if (o.signal?.aborted) {
    // Never start work that has already been cancelled.
    return { exitCode: null, signal: null, timedOut: false, cancelled: true, durationMs: 0 };
  }

  // The script goes into a file rather than `bash -c`: no argv length limit, and it stays out of `ps` output,
  // which other users on the machine can read. Written synchronously (a few small writes): from here to the spawn
  // nothing yields, so a script starts in the same turn as the offer that asked for it (see LeaseManager.offer).
  // For a warm shell the file also sets the folder and the environment: it is the agent user's alone (0600 in a
  // 0700 folder) and holds the script's substituted values already.
  const file = join(o.scriptDir, `script-${randomBytes(8).toString('hex')}.sh`);
  try {
    mkdirSync(o.scriptDir, { recursive: true, mode: 0o700 });
    chmodSync(o.scriptDir, 0o700); // recursive mkdir leaves an existing folder's mode alone
    writeFileSync(file, warm ? warmPrologue(o.cwd, o.env) + o.script : o.script, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    warm?.close(); // never handed its script: let it go, or it would idle until the agent stops
    throw err;
  }

  try {
    return await new Promise<RunScriptResult>((resolve, reject) => {
      const child =
        warm?.run(file) ??
        spawn('bash', [file], {
          cwd: o.cwd,
          env: { ...process.env, ...o.env },
          detached: true, // setsid(): bash leads a new process group whose id is its pid
          stdio: ['ignore', 'pipe', 'pipe'],
        });
      const graceMs = o.graceMs ?? DEFAULT_GRACE_MS;

      let exited = false;
      let exitCode: number | null = null;
      let exitSignal: string | null = null;
      let timedOut = false;
      let cancelled = false;
      let settled = false;
      let killing: Promise<void> | undefined;
      let timeoutTimer: NodeJS.Timeout | undefined;
      let drainTimer: NodeJS.Timeout | undefined;
      const open = { stdout: true, stderr: true };
      let gated = 0; // streams paused by back-pressure: their pipes still hold output
      let lastDataAt = Date.now();

      const killGroup = (): Promise<void> => {
        // One kill sequence per run: a timeout racing an abort must not restart the grace period.
        if (!killing && child.pid !== undefined) {
          killing = killProcessGroup(child.pid, graceMs).catch(() => undefined);
        }
        return killing ?? Promise.resolve();
      };

      const onAbort = () => {
        if (exited || timedOut) return;
        cancelled = true;
        void killGroup();
      };

      const cleanup = () => {
        clearTimeout(timeoutTimer);
        clearTimeout(drainTimer);
        o.signal?.removeEventListener('abort', onAbort);
      };

      const maybeFinish = () => {
        if (settled || !exited || open.stdout || open.stderr) return;
        settled = true;
        cleanup();
        resolve({
          exitCode,
          signal: exitSignal,
          timedOut,
          cancelled,
          durationMs: Math.round(performance.now() - started),
        });
      };

      const pump = (name: 'stdout' | 'stderr', stream: Readable) => {
        const decoder = new StringDecoder('utf8'); // keeps a multibyte char split across chunks intact
        let pending = '';
        const emit = (line: string) => o.onLine(name, line.endsWith('\r') ? line.slice(0, -1) : line);
        stream.on('data', (chunk: Buffer) => {
          lastDataAt = Date.now();
          pending += decoder.write(chunk);
          let nl: number;
          while ((nl = pending.indexOf('\n')) !== -1) {
            emit(pending.slice(0, nl));
            pending = pending.slice(nl + 1);
          }
          if (pending.length > MAX_LINE_CHARS) {
            emit(pending);
            pending = '';
          }
          if (o.gate && !o.gate.isOpen() && !stream.isPaused()) {
            stream.pause();
            gated++;
            void o.gate.wait().then(() => {
              gated--;
              lastDataAt = Date.now(); // resuming counts as activity: the pipe still holds what we held back
              stream.resume();
            });
          }
        });
        // 'end' on a normal close; 'close' alone when we destroy a pipe held open by an orphan. Either way flush once.
        const done = () => {
          if (!open[name]) return;
          open[name] = false;
          pending += decoder.end();
          if (pending.length > 0) emit(pending);
          pending = '';
          maybeFinish();
        };
        stream.on('end', done);
        stream.on('close', done);
        stream.on('error', done);
      };
      pump('stdout', child.stdout!);
      pump('stderr', child.stderr!);

      child.on('error', (err) => {
        // Spawn failure (bash missing, cwd gone): there is no process to wait for.
        if (settled) return;
        settled = true;
        cleanup();
        reject(err);
      });

      child.on('exit', (code, sig) => {
        exited = true;
        exitCode = code;
        exitSignal = sig;
        if (!open.stdout && !open.stderr) return maybeFinish();
        // A background child (`sleep 30 &`) inherited the pipes and keeps them open after bash is gone. Give it a
        // moment to flush, then kill what is left of the group and stop reading.
        const exitedAt = Date.now();
        const drain = () => {
          // Output still being read is not an orphan holding the pipe: read it all first. That is output held back by
          // back-pressure, or output that arrived lately (a backlog being drained), for up to a minute after exit.
          const flowing = Date.now() - lastDataAt < PIPE_DRAIN_MS && Date.now() - exitedAt < ORPHAN_OUTPUT_MS;
          if (gated > 0 || flowing) {
            drainTimer = setTimeout(drain, PIPE_DRAIN_MS);
            return;
          }
          void killGroup().then(() => {
            child.stdout?.destroy();
            child.stderr?.destroy();
          });
        };
        drainTimer = setTimeout(drain, PIPE_DRAIN_MS);
      });

      if (o.timeoutSeconds !== undefined && o.timeoutSeconds > 0) {
        timeoutTimer = setTimeout(() => {
          if (exited || cancelled) return;
          timedOut = true;
          void killGroup();
        }, o.timeoutSeconds * 1000);
      }
      o.signal?.addEventListener('abort', onAbort, { once: true });
      if (o.signal?.aborted) onAbort(); // aborted while we were writing the script file
    });
  } finally {
    await rm(file, { force: true });
  }
}

/**
 * SIGTERM to every process in the group, then SIGKILL to whatever is still running after `graceMs`. Resolves once
 * the group is gone or SIGKILL has been sent.
 */
export async function killProcessGroup(pid: number, graceMs: number = DEFAULT_GRACE_MS): Promise<void> {
  // kill(-0) would hit our own group and kill(-1) every process we may signal: refuse anything that is not a
  // real child's pid.
  if (!Number.isInteger(pid) || pid <= 1) throw new RangeError(`refusing to kill process group ${pid}`);
  if (!signalGroup(pid, 'SIGTERM')) return;
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    await delay(Math.min(POLL_MS, Math.max(0, deadline - Date.now())));
    if (!(await groupAlive(pid))) return;
  }
  signalGroup(pid, 'SIGKILL');
}

/** Returns false when the group no longer exists. */
function signalGroup(pgid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, sig);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/**
 * Whether any member of the group is still running. Zombies do not count: once our child bash has exited, its
 * killed children are reparented to PID 1, which may reap them lazily (in containers, seconds later), and a zombie
 * still answers kill(0). Waiting for them would turn every kill into a full grace period.
 */
async function groupAlive(pgid: number): Promise<boolean> {
  if (!signalGroup(pgid, 0)) return false;
  if (process.platform !== 'linux') return true;
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return true;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = await readFile(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited while we were looking
    }
    // Format: "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses, so parse after the last ')'.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(pgrp) === pgid && state !== 'Z' && state !== 'X') return true;
  }
  return false;
}
