import { mkdtempSync, rmSync } from 'node:fs';
import { mkdtemp, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { killProcessGroup, runScript, type RunScriptOptions } from './process-group.js';
import { ShellReserve, WarmShell } from './warm-shell.js';

// Real bash, real processes. Every test that starts a long-lived process either kills it through the code under
// test (and asserts so) or, should an assertion fail first, in afterEach via the recorded pids.

let base: string;
let scriptDir: string;
let workDir: string;
const strays: number[] = [];
/** Runs go through a warm shell (see warm-shell.ts) in the second pass of the runScript tests. */
let warm = false;
const shells: WarmShell[] = [];

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'cuttle-pg-'));
  scriptDir = join(base, 'scripts');
  workDir = await realpath(await mkdtemp(join(base, 'cwd-')));
});

afterEach(async () => {
  for (const s of shells.splice(0)) s.close();
  for (const pid of strays.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone, as expected */
    }
  }
  await rm(base, { recursive: true, force: true });
});

function run(script: string, extra: Partial<RunScriptOptions> = {}) {
  const lines: Array<[string, string]> = [];
  const shell = warm ? WarmShell.start(workDir) : undefined;
  if (shell) shells.push(shell);
  const promise = runScript({
    script,
    cwd: workDir,
    env: {},
    scriptDir,
    onLine: (stream, text) => lines.push([stream, text]),
    shell,
    ...extra,
  });
  return { lines, promise, shell };
}

/**
 * Dead means no such pid, or a zombie: PID 1 in a container may reap orphans seconds late, and a zombie runs no code.
 */
async function isDead(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function waitDead(pid: number, ms = 3000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await isDead(pid)) return true;
    await delay(50);
  }
  return isDead(pid);
}

async function readPid(file: string): Promise<number> {
  const pid = Number((await readFile(file, 'utf8')).trim());
  expect(Number.isInteger(pid) && pid > 1).toBe(true);
  strays.push(pid);
  return pid;
}

// Every behaviour holds the same whether bash is spawned for the script or a warm shell runs it.
describe.each([
  ['runScript', false],
  ['runScript through a warm shell', true],
])('%s', (_name, throughWarmShell) => {
  beforeEach(() => {
    warm = throughWarmShell;
  });
  afterEach(() => {
    warm = false;
  });

  // Log lines keep their order per stream, stderr is captured, and a last line without newline is not lost.
  it('delivers lines in order, stderr included, and a final partial line', async () => {
    const { lines, promise } = run(
      'echo one\necho two >&2\nprintf "three\\r\\nfour\\n"\nsleep 0.1\necho five >&2\nprintf "no newline"\n',
    );
    const result = await promise;
    expect(result).toMatchObject({ exitCode: 0, signal: null, timedOut: false, cancelled: false });
    expect(lines.filter(([s]) => s === 'stdout').map(([, t]) => t)).toEqual(['one', 'three', 'four', 'no newline']);
    expect(lines.filter(([s]) => s === 'stderr').map(([, t]) => t)).toEqual(['two', 'five']);
  });

  // A multibyte character split across two pipe writes must be decoded, not turned into replacement characters.
  it('decodes UTF-8 split across chunks', async () => {
    const { lines, promise } = run("printf '\\xc3'; sleep 0.2; printf '\\xa9t\\xc3\\xa9\\n'\n");
    await promise;
    expect(lines).toEqual([['stdout', 'été']]);
  });

  // The script's exit status reaches the caller unchanged.
  it('reports the exit code', async () => {
    const { promise } = run('echo failing\nexit 3\n');
    expect(await promise).toMatchObject({ exitCode: 3, signal: null, timedOut: false, cancelled: false });
  });

  // Steps see the environment and working directory they were given, over the agent's own environment.
  it('applies env and cwd', async () => {
    const { lines, promise } = run('echo "$CUTTLE_X"\npwd\necho "${PATH:+path-inherited}"\n', {
      env: { CUTTLE_X: 'hello world' },
    });
    expect((await promise).exitCode).toBe(0);
    expect(lines.map(([, t]) => t)).toEqual(['hello world', workDir, 'path-inherited']);
  });

  // A timeout kills every process the script started, not only bash, and does so promptly.
  it('kills the whole group on timeout', async () => {
    const pidFile = join(workDir, 'child.pid');
    const { promise } = run(`sleep 30 &\necho $! > ${pidFile}\nwait\n`, { timeoutSeconds: 1, graceMs: 2000 });
    const result = await promise;
    expect(result.timedOut).toBe(true);
    expect(result.cancelled).toBe(false);
    expect(result.exitCode).toBeNull();
    expect(result.signal).toBe('SIGTERM');
    expect(result.durationMs).toBeLessThan(5000);
    expect(await waitDead(await readPid(pidFile))).toBe(true);
  });

  // A script that ignores SIGTERM is still stopped: SIGKILL follows after the grace period.
  it('escalates to SIGKILL after the grace period', async () => {
    const pidFile = join(workDir, 'child.pid');
    const { promise } = run(`trap '' TERM\nsleep 30 &\necho $! > ${pidFile}\nwhile :; do sleep 0.1; done\n`, {
      timeoutSeconds: 0.5,
      graceMs: 300,
    });
    const result = await promise;
    expect(result).toMatchObject({ timedOut: true, exitCode: null, signal: 'SIGKILL' });
    expect(result.durationMs).toBeLessThan(5000);
    expect(await waitDead(await readPid(pidFile))).toBe(true);
  });

  // Cancelling through the abort signal kills the whole group just like a timeout.
  it('cancels on abort', async () => {
    const pidFile = join(workDir, 'child.pid');
    const ac = new AbortController();
    const { lines, promise } = run(`sleep 30 &\necho $! > ${pidFile}\necho started\nwait\n`, { signal: ac.signal });
    while (!lines.some(([, t]) => t === 'started')) await delay(20);
    const pid = await readPid(pidFile);
    ac.abort();
    const result = await promise;
    expect(result).toMatchObject({ cancelled: true, timedOut: false, exitCode: null, signal: 'SIGTERM' });
    expect(await waitDead(pid)).toBe(true);
  });

  // An already aborted signal starts nothing, and a warm shell handed over for it is let go.
  it('does not start when already aborted', async () => {
    const marker = join(workDir, 'ran');
    const { promise, shell } = run(`touch ${marker}\n`, { signal: AbortSignal.abort() });
    expect(await promise).toMatchObject({ cancelled: true, exitCode: null });
    await expect(readFile(marker)).rejects.toThrow();
    // In the warm pass a shell was handed over and must be let go; in the other none was.
    expect(!!shell).toBe(warm);
    if (shell) expect(await waitDead(shell.pid!)).toBe(true);
  });

  // A background child holding stdout open must not hang the run forever; it is killed shortly after bash exits.
  it('does not hang on a background child that keeps the pipes open', async () => {
    const pidFile = join(workDir, 'child.pid');
    const { lines, promise } = run(`sleep 30 &\necho $! > ${pidFile}\necho done\nexit 0\n`);
    const result = await promise;
    expect(result).toMatchObject({ exitCode: 0, signal: null, timedOut: false, cancelled: false });
    expect(result.durationMs).toBeLessThan(3500);
    expect(lines).toEqual([['stdout', 'done']]);
    expect(await waitDead(await readPid(pidFile))).toBe(true);
  });

  // A run that cannot start fails loudly instead of hanging, and still cleans up its script file. (A warm shell is
  // running already: its `cd` fails, and says why.)
  it('fails when the working folder is missing', async () => {
    const { promise, lines } = run('echo hi\n', { cwd: join(base, 'missing') });
    if (warm) {
      expect(await promise).toMatchObject({ exitCode: 1 });
      expect(lines).toEqual([['stderr', expect.stringMatching(/missing: No such file or directory/)]]);
    } else await expect(promise).rejects.toThrow(/ENOENT/);
    expect(await readdir(scriptDir)).toEqual([]);
  });

  // The script file (which may contain secrets) does not outlive the run, whatever the outcome.
  it('removes the script file afterwards', async () => {
    await run('echo secret\n').promise;
    await run('exit 7\n', {}).promise;
    await run('sleep 30\n', { timeoutSeconds: 0.3, graceMs: 500 }).promise;
    expect(await readdir(scriptDir)).toEqual([]);
  });
});

describe('warm shells', () => {
  const pidOf = async (shell: WarmShell | undefined, extra: Partial<RunScriptOptions> = {}) => {
    const lines: string[] = [];
    const r = await runScript({
      script: 'echo "$$"\n',
      cwd: workDir,
      env: {},
      scriptDir,
      onLine: (_s, t) => lines.push(t),
      shell,
      ...extra,
    });
    expect(r.exitCode).toBe(0);
    return Number(lines[0]);
  };

  // The script runs in the shell started ahead, not in a bash spawned for it: that is the point of keeping one.
  it('runs the script in the shell started ahead', async () => {
    const shell = WarmShell.start(workDir);
    shells.push(shell);
    expect(await pidOf(shell)).toBe(shell.pid);
  });

  // The lease's environment reaches the script byte for byte, whatever quotes, newlines or `$` its values hold.
  it('passes values with quotes, newlines and dollars unchanged', async () => {
    const shell = WarmShell.start(workDir);
    shells.push(shell);
    const value = `it's "quoted" $HOME \\ \`x\`\nsecond line '' end`;
    const lines: string[] = [];
    const r = await runScript({
      script: 'printf "%s" "$CUTTLE_V" | base64 -w0; echo\n',
      cwd: workDir,
      env: { CUTTLE_V: value },
      scriptDir,
      onLine: (_s, t) => lines.push(t),
      shell,
    });
    expect(r.exitCode).toBe(0);
    expect(Buffer.from(lines[0], 'base64').toString('utf8')).toBe(value);
  });

  // A shell that died while waiting is not used: the script gets a bash of its own and runs.
  it('spawns a bash when the shell died', async () => {
    const shell = WarmShell.start(workDir);
    shells.push(shell);
    process.kill(shell.pid!, 'SIGKILL');
    while (shell.usable) await delay(10);
    const pid = await pidOf(shell);
    expect(pid).not.toBe(shell.pid);
  });

  // A shell handed over for a script whose file cannot be written is let go, not left idling until the agent stops.
  it('lets the shell go when the script file cannot be written', async () => {
    const shell = WarmShell.start(workDir);
    shells.push(shell);
    const notAFolder = join(base, 'file');
    await writeFile(notAFolder, '');
    await expect(
      runScript({
        script: 'true\n',
        cwd: workDir,
        env: {},
        scriptDir: join(notAFolder, 'scripts'),
        onLine: () => undefined,
        shell,
      }),
    ).rejects.toThrow(/ENOTDIR/);
    expect(await waitDead(shell.pid!)).toBe(true);
  });

  // A name bash cannot export still reaches the script, through a spawned bash's environment.
  it('spawns a bash for an environment the shell cannot export', async () => {
    const shell = WarmShell.start(workDir);
    shells.push(shell);
    const lines: string[] = [];
    const r = await runScript({
      script: 'printenv "odd.name"; echo "$$"\n',
      cwd: workDir,
      env: { 'odd.name': 'v' },
      scriptDir,
      onLine: (_s, t) => lines.push(t),
      shell,
    });
    expect(r.exitCode).toBe(0);
    expect(lines[0]).toBe('v');
    expect(Number(lines[1])).not.toBe(shell.pid);
    expect(await waitDead(shell.pid!)).toBe(true); // the unused shell was let go
  });
});

describe('ShellReserve', () => {
  // One shell is kept ready, handed out once, replaced after a while, and none is left running after stop().
  it('keeps one shell ready and lets it go on stop', async () => {
    const reserve = new ShellReserve(workDir);
    try {
      await delay(50);
      const first = reserve.take();
      expect(first?.usable).toBe(true);
      first!.close();
      expect(reserve.take()).toBeUndefined(); // the next one is started later, not in the middle of a burst
      let next: WarmShell | undefined;
      for (let i = 0; i < 40 && !next; i++) {
        await delay(50);
        next = reserve.take();
      }
      expect(next?.usable).toBe(true);
      next!.close();
      await delay(400);
      const idle = reserve.take();
      expect(idle?.usable).toBe(true);
      const pid = idle!.pid!;
      idle!.close();
      expect(await waitDead(pid)).toBe(true);
      await delay(400); // a replacement is running now
    } finally {
      reserve.stop();
    }
    const ps = await readdir('/proc');
    const ours: number[] = [];
    for (const p of ps.filter((x) => /^\d+$/.test(x))) {
      const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && stat.includes('(bash)')) ours.push(Number(p));
    }
    for (const pid of ours) expect(await waitDead(pid)).toBe(true);
  });
});

describe('killProcessGroup', () => {
  // Guards against kill(-0) / kill(-1), which would hit our own group or every process we can signal.
  it('refuses pids that would address our own group or all processes', async () => {
    await expect(killProcessGroup(0, 10)).rejects.toThrow(RangeError);
    await expect(killProcessGroup(1, 10)).rejects.toThrow(RangeError);
    await expect(killProcessGroup(-5, 10)).rejects.toThrow(RangeError);
  });
});

describe('a slow consumer', () => {
  // A slow reader must not lose output: bash exits long before its last lines are read, and the backlog it left in
  // the pipe is read to the end. (Regression: the pipe was closed 2 s after bash exited while lines still flowed.)
  it('reads every line when reading is slower than the script', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cuttle-slow-'));
    let count = 0;
    let last = '';
    try {
      const r = await runScript({
        script: 'seq 1 60000',
        cwd: dir,
        env: {},
        scriptDir: join(dir, 'tmp'),
        onLine: (_s, t) => {
          // ~60 µs a line: reading takes about 3.5 s, well after bash has exited.
          const until = performance.now() + 0.06;
          while (performance.now() < until);
          count++;
          last = t;
        },
      });
      expect(r.exitCode).toBe(0);
      expect(count).toBe(60000);
      expect(last).toBe('60000');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
