/**
 * Real parts for integration tests: a server process on free ports (embedded database, or a fresh PostgreSQL
 * database cloned from the migrated template), agent processes registered with real tokens over real mTLS, an
 * HTTPS client that verifies the server against its CA. Every process started here is stopped by `stopAll()`.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { writeTarGz } from '../../../scripts/support/packages.js';
import {
  freePort,
  hasExited,
  killGroup,
  spawnLogged as spawnInGroup,
  waitExit,
  waitFor,
  waitForProcess,
} from '../../../scripts/support/processes.js';
import { adminQuery, TEMPLATE_ENV, withDatabase } from './pg-admin.js';

export { freePort, waitFor };
export { setTimeout as sleep } from 'node:timers/promises';

export const ROOT = resolve(process.cwd());
const ADMIN_KEY = 'integration-admin-key-0123456789';
const running = new Set<ChildProcess>();

/** Whether a process is still running: a zombie waiting for its parent to reap it is not. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Node.js with `args` in the repository, output to `logFile`, stopped by `stopAll()` unless it exits first. */
function spawnLogged(args: string[], env: NodeJS.ProcessEnv, logFile: string): ChildProcess {
  const p = spawnInGroup(process.execPath, args, { cwd: ROOT, env, log: logFile });
  running.add(p);
  p.once('exit', () => running.delete(p));
  return p;
}

export interface ApiResponse<T = any> {
  status: number;
  body: T;
  text: string;
  headers: IncomingHttpHeaders;
}

export class TestServer {
  constructor(
    readonly dir: string,
    readonly home: string,
    readonly port: number,
    readonly agentPort: number,
    readonly proc: ChildProcess,
    readonly databaseName: string | undefined,
    readonly logFile: string,
  ) {}

  get base() {
    return `https://127.0.0.1:${this.port}`;
  }
  get ca() {
    return readFileSync(join(this.home, 'pki', 'ca.crt'), 'utf8');
  }

  /** A request as a client would make it: TLS verified against the server's CA, API key unless `key: null`. */
  request<T = any>(
    method: string,
    path: string,
    body?: unknown,
    opts: { key?: string | null; raw?: Buffer; headers?: Record<string, string> } = {},
  ): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    const key = opts.key === undefined ? ADMIN_KEY : opts.key;
    if (key) headers['x-api-key'] = key;
    let data: Buffer | undefined;
    if (opts.raw) data = opts.raw;
    else if (body !== undefined) {
      data = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      headers['content-type'] ??= 'application/json';
    }
    if (data) headers['content-length'] = String(data.length);
    return new Promise((res, rej) => {
      const req = request(`${this.base}${path}`, { method, headers, ca: this.ca }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c) => chunks.push(c));
        r.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: any;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = undefined;
          }
          res({ status: r.statusCode ?? 0, body: parsed, text, headers: r.headers });
        });
      });
      req.on('error', rej);
      req.end(data);
    });
  }

  /** Like request, but fails the test with the server's answer unless the status is the expected one. */
  async must<T = any>(
    method: string,
    path: string,
    body?: unknown,
    expect = [200, 201, 202, 204],
    opts?: Parameters<TestServer['request']>[3],
  ): Promise<T> {
    const r = await this.request<T>(method, path, body, opts);
    if (!expect.includes(r.status)) throw new Error(`${method} ${path} answered ${r.status}: ${r.text.slice(0, 500)}`);
    return r.body;
  }

  async waitDeployment(id: string, timeoutMs = 120_000) {
    return waitFor(
      `deployment ${id} to finish`,
      async () => {
        const d = await this.must('GET', `/api/deployments/${id}`);
        return ['success', 'failed', 'cancelled'].includes(d.state) ? d : null;
      },
      timeoutMs,
      150,
    );
  }

  async readLog(id: string) {
    const entries: any[] = [];
    let after = 0;
    for (;;) {
      const page = await this.must('GET', `/api/deployments/${id}/log?afterSeq=${after}&limit=500`);
      if (!page.entries.length) return entries;
      entries.push(...page.entries);
      after = page.nextSeq;
    }
  }

  /** Stops the process (SIGTERM, then SIGKILL after 10 s); `keepData` keeps its database for a restart. */
  async stop(opts: { keepData?: boolean } = {}) {
    killGroup(this.proc, 'SIGTERM');
    await waitExit(this.proc, 10_000);
    killGroup(this.proc, 'SIGKILL');
    await waitExit(this.proc, 2_000);
    if (!opts.keepData && this.databaseName && process.env.DATABASE_URL)
      await adminQuery(process.env.DATABASE_URL, `DROP DATABASE IF EXISTS ${this.databaseName} WITH (FORCE)`);
  }

  exited() {
    return waitExit(this.proc, 30_000).then(() => this.proc.exitCode);
  }

  /** kill -9: no shutdown code runs, as when the machine or the process dies. */
  async kill9() {
    killGroup(this.proc, 'SIGKILL');
    await waitExit(this.proc, 5_000);
  }

  log() {
    return readFileSync(this.logFile, 'utf8');
  }
}

/**
 * Starts a server. `reuse` starts it again on the same data folder, ports and database as an earlier (stopped)
 * one, as an operator restarting the service would.
 */
/** Where test servers and agents keep their folders: one folder per run, deleted when every test passed. */
const TEST_TMP = process.env.CUTTLE_TEST_TMP ?? tmpdir();

export async function startServer(
  opts: { env?: Record<string, string>; reuse?: TestServer; sameDataAs?: TestServer } = {},
): Promise<TestServer> {
  const shared = opts.reuse ?? opts.sameDataAs;
  const dir = shared?.dir ?? mkdtempSync(join(TEST_TMP, 'cuttle-it-'));
  const home = join(dir, 'server');
  mkdirSync(home, { recursive: true });
  // `sameDataAs`: another node of one installation (same data folder and database), on ports of its own. The shared
  // folder gives it the same secrets key (secrets.key), which every node on one database needs.
  const [port, agentPort] = opts.reuse ? [opts.reuse.port, opts.reuse.agentPort] : [await freePort(), await freePort()];
  let databaseName: string | undefined = shared?.databaseName;
  const env: Record<string, string> = {
    CUTTLE_HOME: home,
    CUTTLE_HOST: '127.0.0.1',
    CUTTLE_PORT: String(port),
    CUTTLE_AGENT_PORT: String(agentPort),
    CUTTLE_ADMIN_API_KEY: ADMIN_KEY,
    CUTTLE_LOG_FORMAT: 'json',
    ...(opts.env ?? {}),
  };
  const base = process.env.DATABASE_URL;
  if (base) {
    if (!databaseName) {
      const template = process.env[TEMPLATE_ENV];
      databaseName = `cuttle_test_${randomBytes(6).toString('hex')}`;
      await adminQuery(base, `CREATE DATABASE ${databaseName}${template ? ` TEMPLATE ${template}` : ''}`);
    }
    env.DATABASE_URL = withDatabase(base, databaseName);
  } else env.DATABASE_URL = '';
  const logFile = join(dir, opts.sameDataAs ? `server-${port}.log` : 'server.log');
  const proc = spawnLogged(['dist/server/src/main.js'], env, logFile);
  const srv = new TestServer(dir, home, port, agentPort, proc, databaseName, logFile);
  try {
    await waitForProcess(
      proc,
      'the server to answer /api/health',
      async () => (await srv.request('GET', '/api/health', undefined, { key: null })).status === 200,
      90_000,
      250,
    );
  } catch (e) {
    if (hasExited(proc))
      throw new Error(`server exited with ${proc.exitCode ?? proc.signalCode}: ${srv.log().slice(-2000)}`, {
        cause: e,
      });
    throw e;
  }
  return srv;
}

/** Runs the server binary with the given environment and returns its exit code and output (for boot failures). */
export async function runServerExpectingExit(
  env: Record<string, string>,
  timeoutMs = 60_000,
): Promise<{ code: number | null; output: string }> {
  const dir = mkdtempSync(join(TEST_TMP, 'cuttle-it-'));
  const logFile = join(dir, 'server.log');
  const p = spawnLogged(['dist/server/src/main.js'], { CUTTLE_HOME: join(dir, 'home'), ...env }, logFile);
  await waitExit(p, timeoutMs);
  if (p.exitCode === null) killGroup(p, 'SIGKILL');
  return { code: p.exitCode, output: readFileSync(logFile, 'utf8') };
}

export class TestAgent {
  constructor(
    readonly name: string,
    readonly home: string,
    public proc: ChildProcess,
    readonly logFile: string,
  ) {}

  get workDir() {
    return join(this.home, 'work');
  }

  async stop() {
    killGroup(this.proc, 'SIGTERM');
    await waitExit(this.proc, 10_000);
    killGroup(this.proc, 'SIGKILL');
  }

  /** kill -9 of the agent process alone: scripts it started (their own process groups) keep running. */
  async kill9() {
    killGroup(this.proc, 'SIGKILL');
    await waitExit(this.proc, 5_000);
  }

  /**
   * Starts the agent again on its home, with its stored identity (no token), as a service manager would; `args`
   * adds options to its command line.
   */
  restart(args: string[] = []) {
    this.proc = spawnLogged(
      ['dist/agent/src/main.js', 'run', '--home', this.home, ...args],
      { CUTTLE_LOG_FORMAT: 'json' },
      this.logFile,
    );
    return this;
  }

  exitCode(timeoutMs = 30_000) {
    return waitExit(this.proc, timeoutMs).then(() => this.proc.exitCode);
  }

  log() {
    return readFileSync(this.logFile, 'utf8');
  }
}

/**
 * A TCP pass-through between agents and the agent port that a test can cut (every connection dropped, new ones
 * refused) and restore: a real network cut, TLS end to end.
 */
export class CutProxy {
  private server?: import('node:net').Server;
  private sockets = new Set<import('node:net').Socket>();
  constructor(
    readonly port: number,
    private targetPort: number,
  ) {}

  static async create(targetPort = 0) {
    return new CutProxy(await freePort(), targetPort);
  }

  target(port: number) {
    this.targetPort = port;
    return this;
  }

  async restore() {
    const net = await import('node:net');
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => this.server!.listen(this.port, '127.0.0.1', () => r()));
  }

  async cut() {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server = undefined;
  }
}

/**
 * Starts an agent process; the first start registers with `token` (and `labels`, the text of `--labels`); `args`
 * adds options to its command line (`--cache-mb 1`).
 */
export function startAgent(
  srv: TestServer,
  o: {
    name: string;
    roles: string[];
    environments: string[];
    token: string;
    work?: string;
    labels?: string;
    args?: string[];
  },
): TestAgent {
  const home = join(srv.dir, `agent-${o.name}`);
  mkdirSync(home, { recursive: true });
  const logFile = join(srv.dir, `agent-${o.name}.log`);
  const proc = spawnLogged(
    [
      'dist/agent/src/main.js',
      'run',
      '--server',
      srv.base,
      '--token',
      o.token,
      '--name',
      o.name,
      '--roles',
      o.roles.join(','),
      '--environments',
      o.environments.join(','),
      '--home',
      home,
      ...(o.work ? ['--work', o.work] : []),
      ...(o.labels !== undefined ? ['--labels', o.labels] : []),
      ...(o.args ?? []),
    ],
    { CUTTLE_LOG_FORMAT: 'json' },
    logFile,
  );
  return new TestAgent(o.name, home, proc, logFile);
}

export class TestFleet {
  constructor(
    readonly names: string[],
    readonly dir: string,
    readonly proc: ChildProcess,
  ) {}
  home(name: string) {
    return join(this.dir, name);
  }
  workDir(name: string) {
    return join(this.dir, name, 'work');
  }
  async stop() {
    killGroup(this.proc, 'SIGTERM');
    await waitExit(this.proc, 15_000);
    killGroup(this.proc, 'SIGKILL');
  }
}

/**
 * N real agents (own keys, certificates, TLS connections) in one process: `<prefix>-01` …; `hollow`: with the hollow
 * runner (agent/src/runner/hollow.ts), which starts no process and unpacks nothing.
 */
export function startFleet(
  srv: TestServer,
  o: { prefix: string; count: number; roles: string[]; environments: string[]; token: string; hollow?: boolean },
): TestFleet {
  const dir = join(srv.dir, `fleet-${o.prefix}`);
  mkdirSync(dir, { recursive: true });
  const width = Math.max(2, String(o.count).length);
  const names = Array.from({ length: o.count }, (_, i) => `${o.prefix}-${String(i + 1).padStart(width, '0')}`);
  const proc = spawnLogged(
    [
      'dist/agent/src/fleet.js',
      '--home',
      dir,
      '--count',
      String(o.count),
      '--prefix',
      o.prefix,
      '--server',
      srv.base,
      '--token',
      o.token,
      '--roles',
      o.roles.join(','),
      '--environments',
      o.environments.join(','),
      ...(o.hollow ? ['--hollow'] : []),
    ],
    { CUTTLE_LOG_FORMAT: 'json' },
    join(srv.dir, `fleet-${o.prefix}.log`),
  );
  return new TestFleet(names, dir, proc);
}

export async function waitOnline(srv: TestServer, names: string[], timeoutMs = 60_000) {
  return waitFor(
    `machines ${names.join(', ')} online`,
    async () => {
      const ms: any[] = await srv.must('GET', '/api/machines');
      const online = ms.filter((m) => names.includes(m.name) && m.status === 'online');
      return online.length === names.length ? ms : null;
    },
    timeoutMs,
    250,
  );
}

/** A real .tar.gz on disk with the given files (name → content; names ending in .sh are executable). */
export async function makeTarGz(dir: string, files: Record<string, string>): Promise<Buffer> {
  return readFileSync(await writeTarGz(dir, files));
}

/** The largest number of intervals open at one instant. */
export function maxOverlap(intervals: Array<[number, number]>): number {
  const ev = intervals
    .flatMap(([s, e]) => [[s, 1] as const, [e, -1] as const])
    .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let cur = 0;
  let max = 0;
  for (const [, d] of ev) max = Math.max(max, (cur += d));
  return max;
}

export async function stopAll() {
  for (const p of [...running]) killGroup(p, 'SIGTERM');
  await Promise.all([...running].map((p) => waitExit(p, 10_000)));
  for (const p of [...running]) killGroup(p, 'SIGKILL');
}

/** A project with the given process; returns the project. */
export async function createProject(
  srv: TestServer,
  name: string,
  steps: unknown[],
  extra: Record<string, unknown> = {},
) {
  const p = await srv.must('POST', '/api/projects', { name, ...extra });
  const proc = await srv.must('GET', `/api/projects/${p.id}/deployment-process`);
  await srv.must('PUT', `/api/projects/${p.id}/deployment-process`, { version: proc.version, steps });
  return p;
}

/** Creates a release and a deployment of it; returns the deployment as created (state queued). */
export async function startDeployment(
  srv: TestServer,
  projectId: string,
  environmentId: string,
  opts: { version?: string; channelId?: string; deployment?: Record<string, unknown> } = {},
) {
  const rel = await srv.must('POST', '/api/releases', {
    projectId,
    version: opts.version ?? '1.0.0',
    ...(opts.channelId ? { channelId: opts.channelId } : {}),
  });
  return srv.must('POST', '/api/deployments', { releaseId: rel.id, environmentId, ...(opts.deployment ?? {}) });
}

/** Waits for the deployment's pending interruptions to be `count` and returns them. */
export async function waitInterruptions(srv: TestServer, deploymentId: string, count = 1, timeoutMs = 60_000) {
  return waitFor(
    `${count} pending interruption(s) of ${deploymentId}`,
    async () => {
      const list: any[] = await srv.must('GET', `/api/interruptions?deploymentId=${deploymentId}&state=pending`);
      return list.length === count ? list : null;
    },
    timeoutMs,
    150,
  );
}

/** Lines "TAG start|end MILLIS" that scripts append to `<agent home>/times.log` (see `timed`). */
export function timesIn(home: string): Array<{ tag: string; edge: string; ms: number }> {
  const f = join(home, 'times.log');
  let text: string;
  try {
    text = readFileSync(f, 'utf8');
  } catch {
    return [];
  }
  return text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [tag, edge, ms] = l.split(' ');
      return { tag, edge, ms: Number(ms) };
    });
}

/** A script that records when it starts and ends (in the agent's home, the parent of its work folder). */
export const timed = (tag: string, seconds: number, body = '') =>
  `echo "${tag} start $(date +%s%3N)" >> ../times.log\n${body}\nsleep ${seconds}\necho "${tag} end $(date +%s%3N)" >> ../times.log`;

/** [start, end] of each tagged run found in these homes. */
export function intervals(homes: string[], tag: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const h of homes) {
    const t = timesIn(h).filter((x) => x.tag === tag);
    const s = t.find((x) => x.edge === 'start');
    const e = t.find((x) => x.edge === 'end');
    if (s && e) out.push([s.ms, e.ms]);
  }
  return out;
}
