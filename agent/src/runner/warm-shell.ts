/**
 * Shells started ahead of the scripts that will use them.
 *
 * Starting a process costs a fork and an exec, and libuv's spawn() blocks the agent's event loop until the child has
 * exec'd (~3 ms each on the project's 2-core VMs): a lease's script waits behind that, and behind every other spawn
 * of the process (several agents per process, or several leases at once). A warm shell has paid it already. It waits
 * on a pipe (fd 3) for the path of a script file, then sources that file in the same process, so the script's first
 * line runs as soon as the path arrives. The next shell is started a little later (REFILL_DELAY_MS), off the lease's
 * path.
 *
 * A warm shell is what `runScript` would have spawned: bash leading its own process group (cancel and timeout kill
 * everything it started), stdin /dev/null (on a socket, bash would read ~/.bashrc as if started by rshd), stdout and
 * stderr pipes. The script file sets the working folder and the lease's environment itself (`warmPrologue`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import type { Writable } from 'node:stream';

/** Waits for a NUL-terminated path on fd 3 (EOF: the agent is gone or closed it, exit quietly), then sources it. */
const BOOT = 'IFS= read -r -d "" -u 3 __cuttle_script || exit 0; exec 3<&-; . "$__cuttle_script"';

/** Names bash can export; others (the protocol does not forbid them) go through a spawned bash's environment. */
const SHELL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class WarmShell {
  private handedOver = false;

  private constructor(private readonly child: ChildProcess) {}

  /** Starts a shell in `cwd` (any existing folder: the script file changes to its own). */
  static start(cwd: string): WarmShell {
    const child = spawn('bash', ['-c', BOOT, 'cuttle-script'], {
      cwd,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    // A shell that failed to start, or died while waiting, is not `usable`: the script then gets a bash of its own.
    child.on('error', () => undefined);
    (child.stdio[3] as Writable).on('error', () => undefined);
    const shell = new WarmShell(child);
    shell.hold(false); // an idle shell must not keep the agent's process alive
    return shell;
  }

  /** The shell's process id (also its process group's). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Still waiting for a script, and able to run one. */
  get usable(): boolean {
    return (
      !this.handedOver && this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null
    );
  }

  /**
   * Whether a script with this environment can run here: every name must be one bash can export, and no value may
   * hold a NUL byte (spawn() refuses those too, with an error the caller reports).
   */
  static fits(env: Record<string, string>): boolean {
    return Object.entries(env).every(([k, v]) => SHELL_NAME.test(k) && !v.includes('\0'));
  }

  /** Hands the shell its script file, written with `warmPrologue` first; from here it is that script's process. */
  run(file: string): ChildProcess {
    this.handedOver = true;
    this.hold(true);
    (this.child.stdio[3] as Writable).end(`${file}\0`);
    return this.child;
  }

  /** Lets an unused shell go: with fd 3 closed it reads EOF and exits. */
  close(): void {
    if (this.handedOver) return;
    this.handedOver = true;
    for (const s of this.child.stdio) s?.destroy();
  }

  private hold(on: boolean) {
    const h = (x: unknown) => x as { ref?: () => void; unref?: () => void } | null;
    if (on) this.child.ref();
    else this.child.unref();
    for (const s of this.child.stdio) (on ? h(s)?.ref : h(s)?.unref)?.call(s);
  }
}

/** What a script file starts with when a warm shell runs it: the shell's own variable gone, the folder, the env. */
export function warmPrologue(cwd: string, env: Record<string, string>): string {
  const lines = ['unset __cuttle_script', `cd -- ${shellQuote(cwd)} || exit 1`];
  for (const [k, v] of Object.entries(env)) lines.push(`export ${k}=${shellQuote(v)}`);
  return `${lines.join('\n')}\n`;
}

/** Single-quoted for bash: nothing inside is expanded; a quote is closed, escaped and reopened. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * How long after a shell was taken the next one is started. Not at once: leases tend to come in a burst (a whole
 * window is offered in one round, and a process may hold several agents), and a spawn blocks the event loop for
 * milliseconds that the burst's other offers would wait behind. A script that comes sooner gets a bash of its own.
 */
const REFILL_DELAY_MS = 250;

/** One warm shell kept ready for an agent's next script; `take()` hands it out and schedules the next one. */
export class ShellReserve {
  private shell?: WarmShell;
  private refill?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly cwd: string) {
    this.schedule(0);
  }

  /** The ready shell, or undefined (none yet, or it died): the caller spawns a bash as it would without one. */
  take(): WarmShell | undefined {
    const s = this.shell?.usable ? this.shell : undefined;
    if (!s) this.shell?.close();
    this.shell = undefined;
    this.schedule(REFILL_DELAY_MS);
    return s;
  }

  /** Lets the ready shell go and starts no other. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.refill);
    this.refill = undefined;
    this.shell?.close();
    this.shell = undefined;
  }

  private schedule(delayMs: number) {
    if (this.stopped || this.refill) return;
    this.refill = setTimeout(() => {
      this.refill = undefined;
      if (this.stopped || this.shell?.usable) return;
      try {
        this.shell = WarmShell.start(this.cwd);
      } catch {
        this.shell = undefined; // e.g. the work folder is gone: scripts spawn their own bash, as without a reserve
      }
    }, delayMs);
    this.refill.unref();
  }
}
