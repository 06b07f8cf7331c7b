/**
 * What every bench scenario runs on: a server of its own (PostgreSQL or the embedded database) in a work folder,
 * agents in fleet processes or one process each, deployments run to the end, the machine quiet between scenarios.
 * Every process started here is in a process group of its own and is stopped by `stopAll()` at the latest.
 */
import type { ChildProcess } from 'node:child_process';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { CuttleClient } from '#shared/client/index.js';
import type {
  Deployment,
  DeploymentProcess,
  Environment,
  Health,
  LogEntry,
  LogPage,
  Project,
  RegistrationToken,
  Release,
} from '#shared/api/types.js';
import { writeTarGz } from '../support/packages.js';
import { freePort, hasExited, killGroup, spawnLogged, waitExit, waitForProcess } from '../support/processes.js';

/** The repository (this file is dist/scripts/bench/harness.js). */
export const ROOT = resolve(new URL('../../..', import.meta.url).pathname);

/** The bench's flags (see bench.ts), with --quick's sizes applied. */
export interface BenchOptions {
  scenarios: string;
  /** scale: hollow agents, per fleet process, registrations at once per process. */
  scale: number;
  scalePerProcess: number;
  scaleConcurrency: number;
  makespan: string;
  sizeMb: number;
  sleep: number;
  fleet: number;
  idleSeconds: number;
  latencyTargets: number;
  logAgents: number;
  logLines: number;
  packageMb: number;
  packageAgents: number;
  reps: number;
  cold?: boolean;
  quick?: boolean;
}

/** Extra node flags for the server or agent processes, e.g. CUTTLE_BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof". */
const serverNodeArgs = (process.env.CUTTLE_BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
/** The same for agent processes, e.g. CUTTLE_BENCH_AGENT_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof-agents". */
const agentNodeArgs = (process.env.CUTTLE_BENCH_AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean);

/** Every process started since the last `stopAll()`, exited or not. */
const procs: ChildProcess[] = [];

/** The processes started since the last `stopAll()` (the server's and the agents'). */
export const started = (): readonly ChildProcess[] => procs;

function start(cmd: string, args: string[], env: Record<string, string>, log: string): ChildProcess {
  const p = spawnLogged(cmd, args, { cwd: ROOT, env, log });
  procs.push(p);
  return p;
}

function signalAll(signal: NodeJS.Signals) {
  for (const p of procs) killGroup(p, signal);
}

/** Kills every process group started since the last call. */
export function stopAll() {
  signalAll('SIGKILL');
  procs.length = 0;
}

/** A server of its own for each scenario: PostgreSQL when DATABASE_URL is set, else the embedded database. */
async function server(work: string, env: Record<string, string> = {}) {
  const [port, agentPort] = [await freePort(), await freePort()];
  const home = join(work, 'server');
  mkdirSync(home, { recursive: true });
  let db = '';
  if (process.env.DATABASE_URL) {
    db = `cuttle_bench_${randomBytes(4).toString('hex')}`;
    execFileSync('psql', [process.env.DATABASE_URL, '-qc', `CREATE DATABASE ${db}`]);
    const u = new URL(process.env.DATABASE_URL);
    u.pathname = `/${db}`;
    env.DATABASE_URL = u.toString();
  }
  const dropDatabase = () => {
    if (db) spawnSync('psql', [process.env.DATABASE_URL!, '-qc', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`]);
  };
  const key = 'bench-admin-key-0123456789abcdef';
  const proc = start(
    process.execPath,
    [...serverNodeArgs, 'dist/server/src/main.js'],
    {
      CUTTLE_HOME: home,
      CUTTLE_PORT: String(port),
      CUTTLE_AGENT_PORT: String(agentPort),
      CUTTLE_ADMIN_API_KEY: key,
      CUTTLE_LOG_LEVEL: process.env.CUTTLE_BENCH_SERVER_LOG_LEVEL ?? 'warn',
      ...env,
    },
    join(work, 'server.log'),
  );
  const base = `https://127.0.0.1:${port}`;
  let api: CuttleClient;
  try {
    api = await waitForProcess(
      proc,
      'the server to answer /api/health',
      async () => {
        const client = new CuttleClient(base, key, readFileSync(join(home, 'pki', 'ca.crt'), 'utf8'));
        await client.get('/api/health');
        return client;
      },
      100_000,
      250,
    );
  } catch {
    // Its database goes too: nothing else would drop it.
    stopAll();
    dropDatabase();
    throw new Error(`server did not start (its log: ${join(work, 'server.log')})`);
  }
  return {
    api,
    base,
    proc,
    work,
    async stop() {
      killGroup(proc, 'SIGTERM');
      await setTimeout(1500);
      dropDatabase();
    },
  };
}
export type Srv = Awaited<ReturnType<typeof server>>;

/**
 * Runs a scenario against a server of its own in a new work folder, then stops the server and every process the
 * scenario started and deletes the folder (kept with CUTTLE_BENCH_KEEP=1: server and agent logs).
 */
export async function withServer<T>(scenario: (s: Srv) => Promise<T>): Promise<T> {
  await quiet();
  const work = mkdtempSync(join(tmpdir(), 'cuttle-bench-'));
  const s = await server(work);
  try {
    return await scenario(s);
  } finally {
    await s.stop();
    // Agents get a moment to stop on their own (a --cpu-prof profile is written at exit), then are killed.
    signalAll('SIGTERM');
    // Until they have exited (at most 5 s, 10 s when profiling), so their stop runs to the end.
    const ms = agentNodeArgs.length ? 10_000 : 5_000;
    await Promise.all(procs.filter((p) => !hasExited(p)).map((p) => waitExit(p, ms)));
    stopAll();
    if (!process.env.CUTTLE_BENCH_KEEP) rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Waits (at most 60 s) until the machine is quiet before a scenario starts: the last scenario's processes gone and
 * PostgreSQL's writes of what it dropped done (a CHECKPOINT now rather than in the middle of the next scenario).
 */
export async function quiet() {
  if (process.env.DATABASE_URL) spawnSync('psql', [process.env.DATABASE_URL, '-qc', 'CHECKPOINT']);
  const cpu = () => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return { idle: f[3] + f[4], total: f.reduce((a, b) => a + b, 0) };
  };
  for (const until = Date.now() + 60_000; Date.now() < until;) {
    const a = cpu();
    await setTimeout(1000);
    const b = cpu();
    if ((b.idle - a.idle) / Math.max(1, b.total - a.total) >= 0.85) return;
  }
}

/** Runs `timed` with the file CUTTLE_BENCH_MARK names present, for a profiler to record just that (see docs). */
export async function marked<T>(what: string, timed: () => Promise<T>): Promise<T> {
  const mark = process.env.CUTTLE_BENCH_MARK;
  if (mark) writeFileSync(mark, `${what} under way\n`);
  try {
    return await timed();
  } finally {
    if (mark) rmSync(mark, { force: true });
  }
}

/**
 * N agents in fleet processes of at most `perProcess`, registered with one token; `hollow`: with the hollow runner
 * (no process started, nothing unpacked), `concurrency`: registrations at once per fleet process.
 */
export async function fleet(
  s: Srv,
  n: number,
  role: string,
  perProcess = 50,
  opts: { hollow?: boolean; concurrency?: number } = {},
) {
  const env = await s.api.post<Environment>('/api/environments', { name: `E-${role}` });
  const { token } = await s.api.post<RegistrationToken>('/api/registration-tokens', {
    environmentIds: [env.id],
    roles: [role],
    maxUses: n,
  });
  const dir = join(s.work, `fleet-${role}`);
  for (let first = 1; first <= n; first += perProcess) {
    const count = Math.min(perProcess, n - first + 1);
    if (perProcess === 1) {
      // One agent, one process: the agent as installed on a machine (`cuttle-agent run`).
      const name = `${role}-${String(first).padStart(String(n).length, '0')}`;
      start(
        process.execPath,
        [
          ...agentNodeArgs,
          'dist/agent/src/main.js',
          'run',
          '--home',
          join(dir, name),
          '--server',
          s.base,
          '--token',
          token,
          '--name',
          name,
          '--roles',
          role,
          '--environments',
          env.name,
        ],
        { CUTTLE_LOG_LEVEL: 'warn', CUTTLE_LOG_FORMAT: 'json' },
        join(s.work, `agent-${name}.log`),
      );
      continue;
    }
    start(
      process.execPath,
      [
        ...agentNodeArgs,
        'dist/agent/src/fleet.js',
        '--home',
        dir,
        '--count',
        String(count),
        '--first',
        String(first),
        '--prefix',
        role,
        '--server',
        s.base,
        '--token',
        token,
        '--roles',
        role,
        '--environments',
        env.name,
        ...(opts.hollow ? ['--hollow'] : []),
        ...(opts.concurrency ? ['--concurrency', String(opts.concurrency)] : []),
      ],
      { CUTTLE_LOG_LEVEL: 'warn', CUTTLE_LOG_FORMAT: 'json' },
      join(s.work, `fleet-${role}-${first}.log`),
    );
  }
  const t0 = Date.now();
  for (;;) {
    const h = await s.api.get<Health>('/api/health');
    if (h.agents.online >= n) break;
    if (Date.now() - t0 > 600_000) throw new Error(`only ${h.agents.online} of ${n} agents online`);
    await setTimeout(500);
  }
  return { env, dir, onlineAfterMs: Date.now() - t0 };
}

/** A package in `dir` of `mb` random bytes (payload.bin) and the given deploy.sh; returns the .tar.gz's path. */
export function payload(dir: string, mb: number, deploySh: string): Promise<string> {
  return writeTarGz(dir, { 'deploy.sh': deploySh, 'payload.bin': randomBytes(Math.round(mb * 1024 * 1024)) });
}

/** Sets the project's process to `steps`, deploys a new release of it to `envId`; fails unless it succeeds. */
export async function deployAndWait(
  s: Srv,
  projectName: string,
  steps: unknown[],
  envId: string,
  packages?: Record<string, string>,
) {
  let p;
  try {
    p = await s.api.post<Project>('/api/projects', { name: projectName });
  } catch {
    p = await s.api.get<Project>(`/api/projects/${encodeURIComponent(projectName)}`);
  }
  const proc = await s.api.get<DeploymentProcess>(`/api/projects/${p.id}/deployment-process`);
  await s.api.put(`/api/projects/${p.id}/deployment-process`, { version: proc.version, steps });
  const rel = await s.api.post<Release>('/api/releases', {
    projectId: p.id,
    version: `1.0.${Date.now()}`,
    ...(packages ? { packages } : {}),
  });
  const dep = await s.api.post<Deployment>('/api/deployments', { releaseId: rel.id, environmentId: envId });
  let d = dep;
  // Light polling (the poll itself loads the server); the time is the server's own: from the POST creating the
  // deployment to the success being recorded.
  while (!['success', 'failed', 'cancelled'].includes(d.state)) {
    await setTimeout(250);
    d = await s.api.get<Deployment>(`/api/deployments/${dep.id}`);
  }
  if (d.state !== 'success') {
    // A bench figure of a failed deployment means nothing: stop, saying why it failed.
    const why = (await allLog(s, dep.id)).filter((e) => e.level !== 'info').slice(0, 8);
    throw new Error(
      `${projectName} deployment ${d.state}:\n${why.map((e) => `  ${e.at} ${e.level} ${e.text}`).join('\n')}`,
    );
  }
  return { d, wallMs: Date.parse(d.finishedAt!) - Date.parse(d.createdAt) };
}

/** The deployment's whole log. */
export async function allLog(s: Srv, id: string) {
  const out: LogEntry[] = [];
  let after = 0;
  for (;;) {
    const page = await s.api.get<LogPage>(`/api/deployments/${id}/log?afterSeq=${after}&limit=10000`);
    if (!page.entries.length) return out;
    out.push(...page.entries);
    after = page.nextSeq;
  }
}

/** A process's resident memory and the CPU it has used (in ticks of 10 ms), from /proc. */
export function procStat(pid: number) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { rssBytes: rssKb * 1024, cpuTicks: Number(f[11]) + Number(f[12]) };
}
/** The server's node process: the child of `npm`-less start is the process itself. */
export const serverPid = (s: Srv) => s.proc.pid!;
