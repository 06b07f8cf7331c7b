/**
 * Fault suite, server: the server process killed with SIGKILL mid-deployment and started again; and, on
 * PostgreSQL, two server nodes sharing one database with the node driving the deployment killed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  intervals,
  maxOverlap,
  sleep,
  startDeployment,
  startFleet,
  startServer,
  stopAll,
  waitFor,
  waitOnline,
  type TestFleet,
  type TestServer,
} from './support/fixtures.js';
import { FaultReport, logDefects } from './support/report.js';

const report = new FaultReport('server');

afterAll(async () => {
  await stopAll();
  report.print();
});

const runs = (home: string, tag: string) => {
  try {
    return readFileSync(join(home, `${tag}.runs`), 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean).length;
  } catch {
    return 0;
  }
};
const script = (tag: string, lines: number, seconds: number) =>
  [
    `echo run >> ../${tag}.runs`,
    `echo "${tag} start $(date +%s%3N)" >> ../times.log`,
    `for i in $(seq 1 ${lines / 2}); do echo "${tag} line $i"; done`,
    `sleep ${seconds}`,
    `for i in $(seq ${lines / 2 + 1} ${lines}); do echo "${tag} line $i"; done`,
    `echo "${tag} end $(date +%s%3N)" >> ../times.log`,
  ].join('\n');

/** Checks a finished rolling deployment: window held, each target ran once, every log line once and in order. */
async function audit(srv: TestServer, fleet: TestFleet, depId: string, tag: string, window: number, lines: number) {
  const d = await srv.must('GET', `/api/deployments/${depId}`);
  const homes = d.steps[0].targets.map((t: any) => fleet.home(t.machineName));
  const iv = intervals(homes, tag);
  expect(iv).toHaveLength(homes.length);
  const overlap = maxOverlap(iv);
  report.windowViolations += Math.max(0, overlap - window);
  const log = await srv.readLog(depId);
  expect(log.map((e: any) => e.seq)).toEqual(log.map((_: unknown, i: number) => i + 1));
  for (const t of d.steps[0].targets) {
    report.runTwice += Math.max(0, runs(fleet.home(t.machineName), tag) - 1);
    report.logLostOrDuplicated += logDefects(
      log.filter((e: any) => e.machineId === t.machineId).map((e: any) => e.text),
      tag,
      lines,
    );
  }
  expect({
    overlap: Math.min(overlap, window),
    violations: report.windowViolations,
    twice: report.runTwice,
    lost: report.logLostOrDuplicated,
  }).toEqual({ overlap: window, violations: 0, twice: 0, lost: 0 });
}

// kill -9 the server while targets run; start it again: the deployment resumes from the database, finished targets
// are not rerun, results held by agents arrive when they reconnect, and the window still holds.
it('server kill -9 and restart mid-deployment', async () => {
  let srv = await startServer();
  const env = (await srv.must('POST', '/api/environments', { name: 'Restart' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [env],
    roles: ['r'],
    maxUses: 6,
  });
  const fleet = startFleet(srv, { prefix: 'r', count: 6, roles: ['r'], environments: ['Restart'], token });
  await waitOnline(srv, fleet.names);
  const p = await createProject(srv, 'Survives', [
    {
      name: 'Roll',
      targetRoles: ['r'],
      windowSize: 2,
      actions: [{ name: 'run', type: 'script', script: script('sk', 40, 2) }],
    },
  ]);
  const dep = await startDeployment(srv, p.id, env);
  await waitFor(
    'two targets to finish and two more to run',
    async () => {
      const d = await srv.must('GET', `/api/deployments/${dep.id}`);
      const st = d.steps[0].targets.map((t: any) => t.state);
      return (
        st.filter((x: string) => x === 'success').length >= 2 && st.filter((x: string) => x === 'running').length === 2
      );
    },
    60_000,
    100,
  );
  await sleep(500);
  await srv.kill9();
  report.faults++;
  await sleep(1_500);
  srv = await startServer({ reuse: srv });
  const d = await srv.waitDeployment(dep.id, 90_000);
  expect(d.state).toBe('success');
  expect(d.steps[0].targets.every((t: any) => t.state === 'success' && t.attempt === 1)).toBe(true);
  report.deployments++;
  await audit(srv, fleet, dep.id, 'sk', 2, 40);
  await fleet.stop();
  await srv.stop();
});

// Two nodes on one PostgreSQL: the deployment is driven by node A while every agent is connected to node B (work
// reaches them through the database); kill -9 node A and node B takes the deployment over and finishes it.
const pgOnly = process.env.DATABASE_URL ? it : it.skip;
pgOnly('two server nodes, the owner killed', async () => {
  const a = await startServer({ env: { CUTTLE_OWNERSHIP_TTL_SECONDS: '3' } });
  const b = await startServer({ sameDataAs: a, env: { CUTTLE_OWNERSHIP_TTL_SECONDS: '3' } });
  const env = (await a.must('POST', '/api/environments', { name: 'Nodes' })).id;
  const { token } = await a.must('POST', '/api/registration-tokens', {
    environmentIds: [env],
    roles: ['n'],
    maxUses: 6,
  });
  // Registered through node B, so every agent connects to node B's agent port.
  const fleet = startFleet(b, { prefix: 'n', count: 6, roles: ['n'], environments: ['Nodes'], token });
  await waitOnline(a, fleet.names);
  const p = await createProject(a, 'Two nodes', [
    {
      name: 'Roll',
      targetRoles: ['n'],
      windowSize: 2,
      actions: [{ name: 'run', type: 'script', script: script('nd', 20, 1.5) }],
    },
  ]);
  const dep = await startDeployment(a, p.id, env);
  const nodeA = (await a.must('GET', `/api/health`)).node;
  expect((await a.must('GET', `/api/deployments/${dep.id}`)).ownerNode).toBe(nodeA);
  await waitFor(
    'two targets done on node B agents',
    async () =>
      (await b.must('GET', `/api/deployments/${dep.id}`)).steps[0].targets.filter((t: any) => t.state === 'success')
        .length >= 2,
    60_000,
    100,
  );
  await a.kill9();
  report.faults++;
  const d = await b.waitDeployment(dep.id, 90_000);
  expect(d.state).toBe('success');
  expect(d.ownerNode).toBeUndefined();
  expect((await b.readLog(dep.id)).length).toBeGreaterThan(0);
  report.deployments++;
  await audit(b, fleet, dep.id, 'nd', 2, 20);
  await fleet.stop();
  await b.stop();
});
