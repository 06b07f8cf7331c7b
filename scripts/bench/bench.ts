/**
 * `npm run bench`: what Cuttle costs as the work grows, against the ideal and against Ansible. Not part of `npm test`.
 * Every scenario runs real processes on this machine (server, database, agents in fleet processes, bash, tar) and
 * prints one table; the figures are also written to bench/results/<timestamp>.json. See docs/benchmarks.md.
 *
 *   npm run bench                                  all scenarios at their default sizes
 *   npm run bench -- --scenarios makespan,peer     some of them
 *   npm run bench -- --makespan 20x5,100x25 --size-mb 1 --sleep 0.5 --fleet 1000 --quick
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import * as tar from 'tar';
import { CuttleClient } from '#shared/client/index.js';
import type { Deployment, DeploymentProcess, Environment, Health, LogPage, Project, RegistrationToken, Release } from '#shared/api/types.js';

const ROOT = resolve(new URL('../../..', import.meta.url).pathname);
const procs: ChildProcess[] = [];
/** Extra node flags for the server or agent processes, e.g. CUTTLE_BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof". */
const serverNodeArgs = (process.env.CUTTLE_BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
/** The same for agent processes, e.g. CUTTLE_BENCH_AGENT_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof-agents". */
const agentNodeArgs = (process.env.CUTTLE_BENCH_AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (s: string) => process.stdout.write(s + '\n');

const program = new Command('bench')
  .option('--scenarios <list>', 'makespan,peer,fleet,latency,logs,packages', 'makespan,peer,fleet,latency,logs,packages')
  .option('--makespan <list>', 'NxW pairs for makespan and peer', '20x5,100x25')
  .option('--size-mb <n>', 'package size for makespan and peer', (v) => Number(v), 1)
  .option('--sleep <s>', 'seconds each target sleeps', (v) => Number(v), 0.5)
  .option('--fleet <n>', 'agents for the fleet scenario', (v) => Number(v), 1000)
  .option('--idle-seconds <n>', 'how long the fleet idles while measured', (v) => Number(v), 30)
  .option('--latency-targets <n>', 'targets in flight for the latency scenario', (v) => Number(v), 100)
  .option('--log-agents <n>', 'agents printing for the logs scenario', (v) => Number(v), 10)
  .option('--log-lines <n>', 'lines each of them prints', (v) => Number(v), 50_000)
  .option('--package-mb <n>', 'package size for the packages scenario', (v) => Number(v), 50)
  .option('--package-agents <n>', 'agents for the packages scenario', (v) => Number(v), 20)
  .option('--reps <n>', 'alternating repetitions of Cuttle and Ansible', (v) => Number(v), 1)
  .option('--cold', 'makespan, latency: time the agents\' first deployment (no untimed warm-up deployment before it)')
  .option('--quick', 'small sizes, for a smoke run of the bench itself');
program.parse();
const o = program.opts();
if (o.quick) Object.assign(o, { makespan: '6x2', fleet: 50, idleSeconds: 5, latencyTargets: 10, logAgents: 2, logLines: 5_000, packageMb: 5, packageAgents: 3 });
const scenarios = new Set(String(o.scenarios).split(','));

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
}

function start(cmd: string, args: string[], env: Record<string, string>, log: string): ChildProcess {
  const fd = openSync(log, 'a');
  const p = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', fd, fd], detached: true });
  procs.push(p);
  return p;
}

function signalAll(signal: NodeJS.Signals) {
  for (const p of procs) {
    try {
      process.kill(-p.pid!, signal);
    } catch {
      /* gone */
    }
  }
}

function stopAll() {
  signalAll('SIGKILL');
  procs.length = 0;
}
process.on('exit', stopAll);
process.on('SIGINT', () => process.exit(130));

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
  const proc = start(process.execPath, [...serverNodeArgs, 'dist/server/src/main.js'], { CUTTLE_HOME: home, CUTTLE_PORT: String(port), CUTTLE_AGENT_PORT: String(agentPort), CUTTLE_ADMIN_API_KEY: key, CUTTLE_LOG_LEVEL: process.env.CUTTLE_BENCH_SERVER_LOG_LEVEL ?? 'warn', ...env }, join(work, 'server.log'));
  const base = `https://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      const api = new CuttleClient(base, key, readFileSync(join(home, 'pki', 'ca.crt'), 'utf8'));
      await api.get('/api/health');
      return {
        api,
        base,
        proc,
        work,
        async stop() {
          try {
            process.kill(-proc.pid!, 'SIGTERM');
          } catch {
            /* gone */
          }
          await sleep(1500);
          dropDatabase();
        },
      };
    } catch {
      if (i > 400 || proc.exitCode !== null) {
        // Its database goes too: nothing else would drop it.
        stopAll();
        dropDatabase();
        throw new Error(`server did not start (its log: ${join(work, 'server.log')})`);
      }
      await sleep(250);
    }
  }
}
type Srv = Awaited<ReturnType<typeof server>>;

/**
 * Runs a scenario against a server of its own in a new work folder, then stops the server and every process the
 * scenario started and deletes the folder (kept with CUTTLE_BENCH_KEEP=1: server and agent logs).
 */
async function withServer<T>(scenario: (s: Srv) => Promise<T>): Promise<T> {
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
    const until = Date.now() + (agentNodeArgs.length ? 10_000 : 5_000);
    while (procs.some((p) => p.exitCode === null && p.signalCode === null) && Date.now() < until) await sleep(100);
    stopAll();
    if (!process.env.CUTTLE_BENCH_KEEP) rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Waits (at most 60 s) until the machine is quiet before a scenario starts: the last scenario's processes gone and
 * PostgreSQL's writes of what it dropped done (a CHECKPOINT now rather than in the middle of the next scenario).
 */
async function quiet() {
  if (process.env.DATABASE_URL) spawnSync('psql', [process.env.DATABASE_URL, '-qc', 'CHECKPOINT']);
  const cpu = () => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return { idle: f[3] + f[4], total: f.reduce((a, b) => a + b, 0) };
  };
  for (const until = Date.now() + 60_000; Date.now() < until; ) {
    const a = cpu();
    await sleep(1000);
    const b = cpu();
    if ((b.idle - a.idle) / Math.max(1, b.total - a.total) >= 0.85) return;
  }
}

/** Runs `timed` with the file CUTTLE_BENCH_MARK names present, for a profiler to record just that (see docs). */
async function marked<T>(what: string, timed: () => Promise<T>): Promise<T> {
  const mark = process.env.CUTTLE_BENCH_MARK;
  if (mark) writeFileSync(mark, `${what} under way\n`);
  try {
    return await timed();
  } finally {
    if (mark) rmSync(mark, { force: true });
  }
}

/** N agents in fleet processes of at most `perProcess`, registered with one token. */
async function fleet(s: Srv, n: number, role: string, perProcess = 50) {
  const env = await s.api.post<Environment>('/api/environments', { name: `E-${role}` });
  const { token } = await s.api.post<RegistrationToken>('/api/registration-tokens', { environmentIds: [env.id], roles: [role], maxUses: n });
  const dir = join(s.work, `fleet-${role}`);
  for (let first = 1; first <= n; first += perProcess) {
    const count = Math.min(perProcess, n - first + 1);
    if (perProcess === 1) {
      // One agent, one process: the agent as installed on a machine (`cuttle-agent run`).
      const name = `${role}-${String(first).padStart(String(n).length, '0')}`;
      start(process.execPath, [...agentNodeArgs, 'dist/agent/src/main.js', 'run', '--home', join(dir, name), '--server', s.base, '--token', token, '--name', name, '--roles', role, '--environments', env.name], { CUTTLE_LOG_LEVEL: 'warn', CUTTLE_LOG_FORMAT: 'json' }, join(s.work, `agent-${name}.log`));
      continue;
    }
    start(process.execPath, [...agentNodeArgs, 'dist/agent/src/fleet.js', '--home', dir, '--count', String(count), '--first', String(first), '--prefix', role, '--server', s.base, '--token', token, '--roles', role, '--environments', env.name], { CUTTLE_LOG_LEVEL: 'warn', CUTTLE_LOG_FORMAT: 'json' }, join(s.work, `fleet-${role}-${first}.log`));
  }
  const t0 = Date.now();
  for (;;) {
    const h = await s.api.get<Health>('/api/health');
    if (h.agents.online >= n) break;
    if (Date.now() - t0 > 600_000) throw new Error(`only ${h.agents.online} of ${n} agents online`);
    await sleep(500);
  }
  return { env, dir, onlineAfterMs: Date.now() - t0 };
}

function payload(dir: string, mb: number, deploySh: string): string {
  const src = join(dir, `pkg-${randomBytes(3).toString('hex')}`);
  mkdirSync(src, { recursive: true });
  writeFileSync(join(src, 'payload.bin'), randomBytes(Math.round(mb * 1024 * 1024)));
  writeFileSync(join(src, 'deploy.sh'), deploySh, { mode: 0o755 });
  const file = `${src}.tar.gz`;
  execFileSync('tar', ['-C', src, '-czf', file, 'deploy.sh', 'payload.bin']);
  return file;
}

async function deployAndWait(s: Srv, projectName: string, steps: unknown[], envId: string, packages?: Record<string, string>) {
  let p;
  try {
    p = await s.api.post<Project>('/api/projects', { name: projectName });
  } catch {
    p = await s.api.get<Project>(`/api/projects/${encodeURIComponent(projectName)}`);
  }
  const proc = await s.api.get<DeploymentProcess>(`/api/projects/${p.id}/deployment-process`);
  await s.api.put(`/api/projects/${p.id}/deployment-process`, { version: proc.version, steps });
  const rel = await s.api.post<Release>('/api/releases', { projectId: p.id, version: `1.0.${Date.now()}`, ...(packages ? { packages } : {}) });
  const dep = await s.api.post<Deployment>('/api/deployments', { releaseId: rel.id, environmentId: envId });
  let d = dep;
  // Light polling (the poll itself loads the server); the time is the server's own: from the POST creating the
  // deployment to the success being recorded.
  while (!['success', 'failed', 'cancelled'].includes(d.state)) {
    await sleep(250);
    d = await s.api.get<Deployment>(`/api/deployments/${dep.id}`);
  }
  if (d.state !== 'success') {
    // A bench figure of a failed deployment means nothing: stop, saying why it failed.
    const why = (await allLog(s, dep.id)).filter((e) => e.level !== 'info').slice(0, 8);
    throw new Error(`${projectName} deployment ${d.state}:\n${why.map((e) => `  ${e.at} ${e.level} ${e.text}`).join('\n')}`);
  }
  return { d, wallMs: Date.parse(d.finishedAt!) - Date.parse(d.createdAt) };
}

function pct(values: number[], p: number) {
  const v = [...values].sort((a, b) => a - b);
  return v.length ? v[Math.min(v.length - 1, Math.floor((p / 100) * v.length))] : NaN;
}

function procStat(pid: number) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { rssBytes: rssKb * 1024, cpuTicks: Number(f[11]) + Number(f[12]) };
}
/** The server's node process: the child of `npm`-less start is the process itself. */
const serverPid = (s: Srv) => s.proc.pid!;

const results: Record<string, unknown> = { startedAt: new Date().toISOString(), machine: machineFacts(), database: process.env.DATABASE_URL ? 'postgresql' : 'embedded (PGlite)', options: o };
const rows: Array<[string, string, string, string]> = [];
const row = (scenario: string, measure: string, value: string, target = '') => {
  rows.push([scenario, measure, value, target]);
  say(`  ${scenario.padEnd(22)} ${measure.padEnd(38)} ${value.padEnd(18)} ${target}`);
};

function machineFacts() {
  const cpu = readFileSync('/proc/cpuinfo', 'utf8');
  return { cores: (cpu.match(/^processor/gm) ?? []).length, model: /model name\s+:\s+(.+)/.exec(cpu)?.[1], memGiB: Math.round(Number(/MemTotal:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]) / 1024 / 1024), node: process.version };
}

// ------------------------------------------------------------------ scenarios

async function makespan(n: number, w: number): Promise<number> {
  return withServer(async (s) => {
    // One process per agent, as on real targets: agents sharing an event loop would serialise a wave's
    // downloads and unpacking (a window takes consecutive targets) and measure that instead.
    const { env } = await fleet(s, n, `m${n}`, 1);
    const steps = [{ name: 'Roll', targetRoles: [`m${n}`], windowSize: w, actions: [{ name: 'Unpack', type: 'package', packageId: 'app' }] }];
    const upload = async () => {
      const file = payload(s.work, o.sizeMb, `#!/bin/sh\nsleep ${o.sleep}\necho "deployed $(date +%s.%N)" > "$PWD/DEPLOYED"\n`);
      const version = `1.0.${Date.now()}`;
      await s.api.request('POST', `/api/packages/app/${version}`, undefined, { data: readFileSync(file), contentType: 'application/gzip' });
      return version;
    };
    // An untimed first roll warms the agents up as they are on long-running targets (code compiled, TLS contexts
    // made): a freshly started process pays ~50 ms of one-off start-up costs on its first package. The timed roll
    // then ships a new package version (new bytes, so nothing comes from the agents' caches).
    if (!o.cold) await deployAndWait(s, 'Makespan', steps, env.id, { app: await upload() });
    const version = await upload();
    const before = cpuByPart(s);
    const timedFromUs = process.hrtime.bigint() / 1000n;
    const { d, wallMs } = await marked('timed roll', () => deployAndWait(s, 'Makespan', steps, env.id, { app: version }));
    const timedToUs = process.hrtime.bigint() / 1000n;
    const after = cpuByPart(s);
    lastCpu = Object.fromEntries(Object.keys(after).map((k) => [k, Math.round(((after[k] - (before[k] ?? 0)) * 10) / n)]));
    const log = await allLog(s, d.id);
    lastPhases = phases(log, d.steps[0].targets, o.sleep * 1000);
    // For a closer look at one run: the deployment and its whole log as JSON, and when it ran on the monotonic clock
    // in µs (the clock of --cpu-prof samples: a profile can be cut to the timed roll).
    if (process.env.CUTTLE_BENCH_DUMP) writeFileSync(`${process.env.CUTTLE_BENCH_DUMP}-${n}x${w}.json`, JSON.stringify({ deployment: d, log, timedUs: [Number(timedFromUs), Number(timedToUs)] }));
    return wallMs / 1000;
  });
}

type Phases = Record<string, { p50: number; p95: number }>;
let lastPhases: Phases = {};
let lastCpu: Record<string, number> = {};

/**
 * CPU time (in ticks of 10 ms) used so far by each part on this machine: the server process, the agents (with the
 * scripts they ran, counted once reaped), and PostgreSQL's processes.
 */
function cpuByPart(s: Srv): Record<string, number> {
  const out: Record<string, number> = { server: 0, agents: 0, postgres: 0 };
  const agents = new Set(procs.filter((p) => p !== s.proc).map((p) => p.pid));
  for (const pid of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue;
    }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const own = Number(f[11]) + Number(f[12]);
    const children = Number(f[13]) + Number(f[14]);
    if (Number(pid) === s.proc.pid) out.server += own;
    else if (agents.has(Number(pid))) out.agents += own + children;
    else if (comm === 'postgres') out.postgres += own;
  }
  return out;
}

/**
 * Where a target's time goes, from the deployment log's timestamps (server lines: server clock; agent lines: the
 * agent's clock, the same machine here): lease taken → agent starts the action → package in the cache → unpacked →
 * deploy.sh started → action done (minus the script's sleep) → result stored; and how long a freed slot stays empty
 * before the next lease takes it.
 */
function phases(log: any[], targets: any[], sleepMs: number): Phases {
  const at = new Map<string, Record<string, number>>();
  const mark = (m: string, k: string, t: string) => {
    const e = at.get(m) ?? {};
    e[k] ??= Date.parse(t);
    at.set(m, e);
  };
  const slotOf = new Map<string, number>();
  for (const e of log) {
    if (!e.machineId) continue;
    const taken = /lease taken \(slot (\d+)/.exec(e.text);
    if (taken) {
      mark(e.machineId, 'taken', e.at);
      slotOf.set(e.machineId, Number(taken[1]));
    } else if (/^Running package action/.test(e.text)) mark(e.machineId, 'running', e.at);
    else if (/^Downloaded and verified|is in the cache/.test(e.text)) mark(e.machineId, 'cached', e.at);
    else if (/^Extracted /.test(e.text)) mark(e.machineId, 'unpacked', e.at);
    else if (/^Running deploy\.sh/.test(e.text)) mark(e.machineId, 'script', e.at);
    else if (/^Action .* succeeded/.test(e.text)) mark(e.machineId, 'done', e.at);
  }
  for (const t of targets) if (t.finishedAt) mark(t.machineId, 'stored', t.finishedAt);
  const spans: Record<string, number[]> = { 'lease → agent runs': [], 'package download': [], unpack: [], 'unpacked → script': [], 'script beyond its sleep': [], 'done → result stored': [], 'slot empty': [] };
  const add = (k: string, a?: number, b?: number, minus = 0) => a !== undefined && b !== undefined && spans[k].push(b - a - minus);
  for (const e of at.values()) {
    add('lease → agent runs', e.taken, e.running);
    add('package download', e.running, e.cached);
    add('unpack', e.cached, e.unpacked);
    add('unpacked → script', e.unpacked, e.script);
    add('script beyond its sleep', e.script, e.done, sleepMs);
    add('done → result stored', e.done, e.stored);
  }
  const bySlot = new Map<number, Array<Record<string, number>>>();
  for (const [m, e] of at) if (slotOf.has(m)) bySlot.set(slotOf.get(m)!, [...(bySlot.get(slotOf.get(m)!) ?? []), e]);
  for (const list of bySlot.values()) {
    list.sort((a, b) => a.taken - b.taken);
    for (let i = 1; i < list.length; i++) add('slot empty', list[i - 1].stored, list[i].taken);
  }
  return Object.fromEntries(Object.entries(spans).map(([k, v]) => [k, { p50: pct(v, 50), p95: pct(v, 95) }]));
}

function ensureAnsible(): boolean {
  if (spawnSync('ansible-playbook', ['--version']).status === 0) return true;
  say('  installing ansible (apt-get install ansible) ...');
  spawnSync('bash', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ansible >/dev/null'], { stdio: 'inherit' });
  return spawnSync('ansible-playbook', ['--version']).status === 0;
}

/** The same job with Ansible: one host per target with ansible_connection=local, serial W, forks W. */
function ansible(n: number, w: number): number {
  const t = mkdtempSync(join(tmpdir(), 'cuttle-ansible-'));
  try {
    const file = payload(t, o.sizeMb, `#!/bin/sh\nsleep ${o.sleep}\necho "deployed $(date +%s.%N)" > "$PWD/DEPLOYED"\n`);
    const hosts = Array.from({ length: n }, (_, i) => `h${String(i + 1).padStart(3, '0')}`);
    writeFileSync(join(t, 'inventory.ini'), `[targets]\n${hosts.join('\n')}\n[targets:vars]\nansible_connection=local\n`);
    writeFileSync(join(t, 'ansible.cfg'), `[defaults]\ninventory = ${t}/inventory.ini\nforks = ${w}\ngathering = explicit\nhost_key_checking = False\ninterpreter_python = /usr/bin/python3\nretry_files_enabled = False\nlocal_tmp = ${t}/.ansible/tmp\nremote_tmp = ${t}/.ansible/rtmp\n`);
    writeFileSync(
      join(t, 'deploy.yml'),
      `- hosts: targets\n  serial: ${w}\n  gather_facts: false\n  vars:\n    root: "${t}/targets/{{ inventory_hostname }}"\n    rel: "{{ root }}/releases/v1"\n  tasks:\n    - file: {path: "{{ rel }}", state: directory}\n    - copy: {src: "${file}", dest: "{{ root }}/releases/v1.tar.gz"}\n    - unarchive: {src: "{{ root }}/releases/v1.tar.gz", dest: "{{ rel }}", remote_src: true}\n    - command: {cmd: ./deploy.sh, chdir: "{{ rel }}"}\n`,
    );
    const t0 = performance.now();
    const r = spawnSync('ansible-playbook', ['deploy.yml'], { cwd: t, env: { ...process.env, ANSIBLE_CONFIG: join(t, 'ansible.cfg') }, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    const s = (performance.now() - t0) / 1000;
    if (r.status !== 0) throw new Error(`ansible-playbook failed: ${r.stdout.slice(-500)} ${r.stderr.slice(-500)}`);
    return s;
  } finally {
    rmSync(t, { recursive: true, force: true });
  }
}

async function runMakespanAndPeer() {
  const pairs = String(o.makespan).split(',').map((p) => p.split('x').map(Number) as [number, number]);
  const peer = scenarios.has('peer') && ensureAnsible();
  if (scenarios.has('peer') && !peer) say('  ansible could not be installed: peer skipped');
  const out: unknown[] = [];
  for (const [n, w] of pairs) {
    const ideal = Math.ceil(n / w) * o.sleep;
    const cuttle: number[] = [];
    const ans: number[] = [];
    let best: Phases = {};
    let bestCpu: Record<string, number> = {};
    for (let rep = 0; rep < o.reps; rep++) {
      if (scenarios.has('makespan') || peer) {
        cuttle.push(await makespan(n, w));
        if (cuttle[cuttle.length - 1] === Math.min(...cuttle)) [best, bestCpu] = [lastPhases, lastCpu];
      }
      if (peer) ans.push(ansible(n, w));
    }
    const c = Math.min(...cuttle);
    row(`makespan N=${n} W=${w}`, `wall time (ideal ${ideal.toFixed(2)} s)`, `${c.toFixed(2)} s`, '');
    row(`makespan N=${n} W=${w}`, 'ratio to ideal', (c / ideal).toFixed(2), n <= 20 ? '≤ 1.10' : '≤ 1.25');
    row(`makespan N=${n} W=${w}`, 'per target p50/p95 (ms)', Object.entries(best).map(([k, v]) => `${k} ${v.p50}/${v.p95}`).join('; '));
    row(`makespan N=${n} W=${w}`, 'CPU per target (ms)', Object.entries(bestCpu).map(([k, v]) => `${k} ${v}`).join(', '));
    const entry: Record<string, unknown> = { n, w, sizeMb: o.sizeMb, sleep: o.sleep, idealS: ideal, cuttleS: cuttle, ratio: c / ideal, phasesMs: best, cpuPerTargetMs: bestCpu };
    if (ans.length) {
      const a = Math.min(...ans);
      row(`peer N=${n} W=${w}`, 'Ansible wall time', `${a.toFixed(2)} s`);
      row(`peer N=${n} W=${w}`, 'Ansible / Cuttle', `${(a / c).toFixed(1)}×`, n <= 20 ? '≥ 7×' : '≥ 30×');
      Object.assign(entry, { ansibleS: ans, speedup: a / c });
    }
    out.push(entry);
  }
  results.makespan = out;
}

async function runFleet() {
  return withServer(async (s) => {
    const { env, onlineAfterMs } = await fleet(s, o.fleet, 'f', 250);
    row(`fleet ${o.fleet} agents`, 'all online after', `${(onlineAfterMs / 1000).toFixed(1)} s`);
    await sleep(5_000);
    const pid = serverPid(s);
    const a = procStat(pid);
    const t0 = performance.now();
    await sleep(o.idleSeconds * 1000);
    const b = procStat(pid);
    const cpu = (b.cpuTicks - a.cpuTicks) / 100 / ((performance.now() - t0) / 1000);
    row(`fleet ${o.fleet} agents`, 'server RSS at idle', `${(b.rssBytes / 1024 / 1024).toFixed(0)} MiB`, '< 1024 MiB');
    row(`fleet ${o.fleet} agents`, 'server CPU at idle (heartbeats)', `${(cpu * 100).toFixed(1)} % of a core`, '< 5 %');
    const { d, wallMs } = await deployAndWait(s, 'Fleet', [{ name: 'Noop', targetRoles: ['f'], windowSize: 100, actions: [{ name: 'n', type: 'script', script: 'true' }] }], env.id);
    row(`fleet ${o.fleet} agents`, 'one no-op step, window 100', `${(wallMs / 1000).toFixed(1)} s (${d.state})`);
    results.fleet = { agents: o.fleet, onlineAfterMs, rssBytes: b.rssBytes, idleCpuShare: cpu, noopStepMs: wallMs, state: d.state };
  });
}

/**
 * What a latency target runs. Its start is stamped by bash's own clock ($EPOCHREALTIME, bash 5): `$(date ...)` would
 * add a fork and exec of `date` per target to what is measured, 100 of them at once on this machine's two cores.
 */
const LATENCY_PROBE = 'echo "started $EPOCHREALTIME"; sleep 1';
const probeStartedMs = (text: string) => {
  const m = /^started (\d+\.\d+)$/.exec(text.trim());
  return m ? Number(m[1]) * 1000 : null;
};

async function runLatency() {
  return withServer(async (s) => {
    const n = o.latencyTargets;
    const { env } = await fleet(s, n, 'l', 10);
    const steps = [{ name: 'Hold', targetRoles: ['l'], actions: [{ name: 'h', type: 'script', script: LATENCY_PROBE }] }];
    // Untimed first, as in makespan: long-running agents have compiled their code paths before.
    if (!o.cold) await deployAndWait(s, 'Latency', steps, env.id);
    const { d } = await deployAndWait(s, 'Latency', steps, env.id);
    const log = await allLog(s, d.id);
    if (process.env.CUTTLE_BENCH_DUMP) writeFileSync(`${process.env.CUTTLE_BENCH_DUMP}-latency.json`, JSON.stringify({ deployment: d, log }));
    const taken = new Map<string, number>();
    const started = new Map<string, number>();
    const exited = new Map<string, number>();
    for (const e of log) {
      if (/lease taken/.test(e.text)) taken.set(e.machineId, Date.parse(e.at));
      const at = probeStartedMs(e.text);
      if (at !== null) started.set(e.machineId, at);
      if (/^Action h succeeded/.test(e.text)) exited.set(e.machineId, Date.parse(e.at));
    }
    const dispatch: number[] = [];
    const report: number[] = [];
    for (const t of d.steps[0].targets) {
      const m = t.machineId!; // a step with target roles
      if (taken.has(m) && started.has(m)) dispatch.push(Math.round(started.get(m)! - taken.get(m)!));
      if (exited.has(m)) report.push(Date.parse(t.finishedAt!) - exited.get(m)!);
    }
    const floor = await bashFloor(n);
    const [dispatchMs, reportMs, floorMs, floorEachSpawnMs] = [dispatch, report, floor.together, floor.each].map((v) => ({ p50: pct(v, 50), p95: pct(v, 95), p99: pct(v, 99) }));
    const shown = (x: { p50: number; p95: number; p99: number }) => `${x.p50}/${x.p95}/${x.p99} ms`;
    row(`latency ${n} in flight`, 'lease → script started p50/p95/p99', shown(dispatchMs), 'p99 < 20 ms');
    row(`latency ${n} in flight`, 'script exit → result stored p50/p95/p99', shown(reportMs));
    row(`latency ${n} in flight`, `floor: ${n} bash asked at once from one process p50/p95/p99`, shown(floorMs));
    row(`latency ${n} in flight`, `  the same, each from its own spawn() p50/p95/p99`, shown(floorEachSpawnMs));
    results.latency = { targets: n, dispatchMs, reportMs, floorMs, floorEachSpawnMs };
  });
}

/**
 * The physical floor of the latency scenario on this machine: the same script started N times at once straight from
 * one Node.js process, no server, no agent. `together`: milliseconds from the moment all N were asked for to each
 * script's own clock, what the scenario measures (its leases are all taken in one round). `each`: from each one's
 * own spawn() call, which leaves out the wait behind the spawns before it.
 */
async function bashFloor(n: number): Promise<{ together: number[]; each: number[] }> {
  // In a fresh process of its own: what "straight from one Node.js process" means.
  const code = `
    import { spawn } from 'node:child_process';
    const askedAll = Date.now();
    const outs = await Promise.all(Array.from({ length: ${n} }, () => {
      const asked = Date.now();
      return new Promise((resolve) => {
        // stdin from /dev/null, as the agent runs scripts: on a socket (libuv's default for a pipe) bash acts as if
        // started by rshd and reads ~/.bashrc, which on this machine runs pyenv's rehash (seconds per shell).
        const p = spawn('bash', ['-c', ${JSON.stringify(LATENCY_PROBE)}], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        p.stdout.on('data', (d) => (out += d));
        p.on('close', () => {
          const at = Number(/started (\\d+\\.\\d+)/.exec(out)?.[1] ?? NaN) * 1000;
          resolve([Math.round(at - askedAll), Math.round(at - asked)]);
        });
      });
    }));
    process.stdout.write(JSON.stringify(outs.filter(([t]) => !Number.isNaN(t))));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
  const ok: Array<[number, number]> = JSON.parse(r.stdout || '[]');
  return { together: ok.map(([t]) => t), each: ok.map(([, e]) => e) };
}

async function allLog(s: Srv, id: string) {
  const out: any[] = [];
  let after = 0;
  for (;;) {
    const page = await s.api.get<LogPage>(`/api/deployments/${id}/log?afterSeq=${after}&limit=10000`);
    if (!page.entries.length) return out;
    out.push(...page.entries);
    after = page.nextSeq;
  }
}

async function runLogs() {
  return withServer(async (s) => {
    const { env } = await fleet(s, o.logAgents, 'g', 10);
    const { d, wallMs } = await marked('timed logs deployment', () =>
      deployAndWait(s, 'Logs', [{ name: 'Loud', targetRoles: ['g'], actions: [{ name: 'l', type: 'script', script: `seq 1 ${o.logLines}` }] }], env.id),
    );
    const t0 = performance.now();
    const log = await allLog(s, d.id);
    const readS = (performance.now() - t0) / 1000;
    const lines = log.filter((e) => /^\d+$/.test(e.text));
    const byMachine = new Map<string, number[]>();
    for (const e of lines) {
      const list = byMachine.get(e.machineId) ?? [];
      list.push(Number(e.text));
      byMachine.set(e.machineId, list);
    }
    let defects = 0;
    for (const nums of byMachine.values()) nums.forEach((v, i) => (defects += v === i + 1 ? 0 : 1));
    const expected = o.logAgents * o.logLines;
    defects += Math.abs(expected - lines.length);
    const perSecond = lines.length / (wallMs / 1000);
    row(`logs ${o.logAgents}×${o.logLines}`, 'lines stored per second', `${Math.round(perSecond)}`, '≥ 50,000');
    row(`logs ${o.logAgents}×${o.logLines}`, 'lost or duplicated', `${defects}`, '0');
    row(`logs ${o.logAgents}×${o.logLines}`, 'read back through the log API', `${Math.round(log.length / readS)} lines/s`);
    results.logs = { agents: o.logAgents, linesEach: o.logLines, stored: lines.length, defects, deploymentMs: wallMs, storedPerSecond: perSecond, readPerSecond: log.length / readS };
  });
}

async function runPackages() {
  return withServer(async (s) => {
    const { env } = await fleet(s, o.packageAgents, 'p', 20);
    const file = payload(s.work, o.packageMb, '#!/bin/sh\ntrue\n');
    await s.api.request('POST', '/api/packages/big/1.0.0', undefined, { data: readFileSync(file), contentType: 'application/gzip' });
    const steps = [{ name: 'Ship', targetRoles: ['p'], actions: [{ name: 'Unpack', type: 'package', packageId: 'big' }] }];
    const before = (await s.api.get<Health>('/api/health')).packageBytesSent;
    const first = await deployAndWait(s, 'Packages', steps, env.id, { big: '1.0.0' });
    const mid = (await s.api.get<Health>('/api/health')).packageBytesSent;
    const second = await deployAndWait(s, 'Packages', steps, env.id, { big: '1.0.0' });
    const after = (await s.api.get<Health>('/api/health')).packageBytesSent;
    row(`packages ${o.packageMb} MB → ${o.packageAgents}`, 'first deployment wall time', `${(first.wallMs / 1000).toFixed(1)} s (${first.d.state})`);
    row(`packages ${o.packageMb} MB → ${o.packageAgents}`, 'bytes sent by the server', `${((mid - before) / 1024 / 1024).toFixed(0)} MiB`);
    row(`packages ${o.packageMb} MB → ${o.packageAgents}`, 'same version again: bytes sent', `${after - mid}`, '0');
    results.packages = { sizeMb: o.packageMb, agents: o.packageAgents, firstMs: first.wallMs, firstBytes: mid - before, secondMs: second.wallMs, secondBytes: after - mid };
  });
}

say(`Cuttle bench on ${results.database}; ${JSON.stringify(results.machine)}`);
say(`  ${'scenario'.padEnd(22)} ${'measure'.padEnd(38)} ${'value'.padEnd(18)} target`);
try {
  if (scenarios.has('makespan') || scenarios.has('peer')) await runMakespanAndPeer();
  if (scenarios.has('latency')) await runLatency();
  if (scenarios.has('logs')) await runLogs();
  if (scenarios.has('packages')) await runPackages();
  if (scenarios.has('fleet')) await runFleet();
} finally {
  stopAll();
  results.rows = rows;
  results.finishedAt = new Date().toISOString();
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  const f = join(ROOT, 'bench', 'results', `${results.startedAt as string}.json`.replace(/:/g, '-'));
  writeFileSync(f, JSON.stringify(results, null, 2));
  say(`\nresults written to ${f}`);
}
if (!existsSync(ROOT)) process.exit(1);
