/**
 * Fault suite, agents: real agent processes killed with SIGKILL, restarted, and cut off the network by a real TCP
 * proxy, during real scripts. Nothing is simulated: the server only learns what it can see.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  CutProxy,
  intervals,
  maxOverlap,
  processAlive,
  sleep,
  startAgent,
  startDeployment,
  startServer,
  stopAll,
  waitFor,
  waitOnline,
  type TestAgent,
  type TestServer,
} from './support/fixtures.js';
import { FaultReport, logDefects } from './support/report.js';

const TTL = 6;
let srv: TestServer;
let proxy: CutProxy;
let env: string;
const agents: Record<string, TestAgent> = {};
const ids: Record<string, string> = {};
const report = new FaultReport('agents');
const orphans: number[] = [];

beforeAll(async () => {
  proxy = await CutProxy.create();
  srv = await startServer({
    env: { CUTTLE_LEASE_TTL_SECONDS: String(TTL), CUTTLE_AGENT_URL: `https://127.0.0.1:${proxy.port}` },
  });
  await proxy.target(srv.agentPort).restore();
  env = (await srv.must('POST', '/api/environments', { name: 'Faults' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [env],
    roles: ['f'],
    maxUses: 3,
  });
  for (const name of ['f-1', 'f-2', 'f-3'])
    agents[name] = startAgent(srv, { name, roles: ['f'], environments: ['Faults'], token });
  for (const m of await waitOnline(srv, Object.keys(agents))) ids[m.name] = m.id;
}, 120_000);

afterAll(async () => {
  for (const pid of orphans) killTree(pid);
  await Promise.all(Object.values(agents).map((a) => a.stop()));
  await srv?.stop();
  await proxy?.cut();
  await stopAll();
  report.print();
});

function killTree(pid: number) {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}
const home = (m: string) => agents[m].home;
const pidOf = (m: string, tag: string) => Number(readFileSync(join(home(m), `${tag}.pid`), 'utf8'));
const runsOf = (m: string, tag: string) => {
  try {
    return readFileSync(join(home(m), `${tag}.runs`), 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean).length;
  } catch {
    return 0;
  }
};

/** A script that records its pid, its start/end, a run count, and prints numbered lines around a sleep. */
const script = (tag: string, lines: number, seconds: number) =>
  [
    `echo $$ > ../${tag}.pid`,
    `echo run >> ../${tag}.runs`,
    `echo "${tag} start $(date +%s%3N)" >> ../times.log`,
    `for i in $(seq 1 ${Math.floor(lines / 2)}); do echo "${tag} line $i"; done`,
    `sleep ${seconds}`,
    `for i in $(seq ${Math.floor(lines / 2) + 1} ${lines}); do echo "${tag} line $i"; done`,
    `echo "${tag} end $(date +%s%3N)" >> ../times.log`,
  ].join('\n');

async function deploy(tag: string, machines: string[], step: Record<string, unknown>, lines = 40, seconds = 3) {
  const p = await createProject(srv, `faults ${tag}`, [
    {
      name: 'Roll',
      targetRoles: ['f'],
      ...step,
      actions: [{ name: 'run', type: 'script', script: script(tag, lines, seconds) }],
    },
  ]);
  return startDeployment(srv, p.id, env, { deployment: { specificMachineIds: machines.map((m) => ids[m]) } });
}

async function logTexts(depId: string, machine: string) {
  return (await srv.readLog(depId)).filter((e: any) => e.machineId === ids[machine]).map((e: any) => e.text);
}

// A machine dies mid-script (agent and script killed with SIGKILL): within the lease TTL its target fails as
// "agent lost", distinct from a script failure; the slot frees and the roll goes on to the next target.
it('agent kill -9 mid-script: agent lost within the TTL, the roll goes on', async () => {
  const dep = await deploy('k9', ['f-1', 'f-2'], { windowSize: 1, maxFailures: 1 });
  await waitFor('the script on f-1 to start', async () => runsOf('f-1', 'k9') === 1);
  const killedAt = Date.now();
  await agents['f-1'].kill9();
  killTree(pidOf('f-1', 'k9'));
  report.faults++;
  const d = await srv.waitDeployment(dep.id, 60_000);
  const lostAfter = new Date(d.steps[0].targets[0].finishedAt).getTime() - killedAt;
  expect(lostAfter).toBeLessThan((TTL + 3) * 1000);
  expect(d.state).toBe('success');
  expect(d.steps[0].targets.map((t: any) => `${t.machineName}:${t.state}:${t.failureKind ?? ''}`)).toEqual([
    'f-1:failed:agent-lost',
    'f-2:success:',
  ]);
  expect(d.steps[0].targets[0].error).toBe(`agent lost: no heartbeat for ${TTL} s`);
  const log = (await srv.readLog(dep.id)).map((e: any) => e.text);
  expect(log).toContain(`Roll on f-1 failed: agent lost: no heartbeat for ${TTL} s`);
  report.deployments++;
  // f-1's interval ends when it was killed; the window of 1 held.
  const iv = [
    ...intervals([home('f-2')], 'k9'),
    [intervals([home('f-1')], 'k9')[0]?.[0] ?? killedAt, killedAt] as [number, number],
  ];
  report.windowViolations += Math.max(0, maxOverlap(iv) - 1);
  report.runTwice += Math.max(0, runsOf('f-1', 'k9') - 1) + Math.max(0, runsOf('f-2', 'k9') - 1);
  report.logLostOrDuplicated += logDefects(await logTexts(dep.id, 'f-2'), 'k9', 40);
  expect([report.windowViolations, report.runTwice, report.logLostOrDuplicated]).toEqual([0, 0, 0]);

  agents['f-1'].restart();
  await waitOnline(srv, ['f-1']);
});

// The agent process restarts while its script runs: the journal knows a script was running, so the target is
// reported failed with "unknown result", never success, and nothing is run again.
it('agent restart mid-script: unknown result, not rerun', async () => {
  const dep = await deploy('rs', ['f-2'], {}, 40, 4);
  await waitFor('the script on f-2 to start', async () => runsOf('f-2', 'rs') === 1);
  await sleep(300);
  await agents['f-2'].kill9();
  orphans.push(pidOf('f-2', 'rs'));
  agents['f-2'].restart();
  report.faults++;
  const d = await srv.waitDeployment(dep.id, 60_000);
  expect(d.state).toBe('failed');
  expect(d.steps[0].targets[0]).toMatchObject({ state: 'failed', failureKind: 'unknown-result', attempt: 1 });
  const texts = await logTexts(dep.id, 'f-2');
  expect(texts).toContain('The agent restarted while this target was running: its result is unknown');
  // What arrived arrived once and in order (the lines after the restart had no reader).
  const seen = texts.filter((t: string) => t.startsWith('rs line ')).map((t: string) => Number(t.slice(8)));
  expect(seen).toEqual(seen.map((_: number, i: number) => i + 1));
  report.deployments++;
  report.runTwice += Math.max(0, runsOf('f-2', 'rs') - 1);
  expect(runsOf('f-2', 'rs')).toBe(1);
  await waitOnline(srv, ['f-2']);
});

// The network between agent and server is cut for less than the TTL: the agent reconnects, resends what was not
// acknowledged, and the target succeeds with every log line exactly once.
it('connection cut and restored before the TTL: nothing lost', async () => {
  const dep = await deploy('cb', ['f-3'], {}, 60, 4);
  await waitFor('the script on f-3 to start', async () => runsOf('f-3', 'cb') === 1);
  await sleep(500);
  await proxy.cut();
  report.faults++;
  await sleep(2_000);
  await proxy.restore();
  const d = await srv.waitDeployment(dep.id, 60_000);
  expect(d.state).toBe('success');
  expect(d.steps[0].targets[0]).toMatchObject({ state: 'success', attempt: 1 });
  report.deployments++;
  const defects = logDefects(await logTexts(dep.id, 'f-3'), 'cb', 60);
  report.logLostOrDuplicated += defects;
  expect(defects).toBe(0);
  report.runTwice += Math.max(0, runsOf('f-3', 'cb') - 1);
  expect(runsOf('f-3', 'cb')).toBe(1);
});

// Cut for longer than the TTL: the lease expires and the target fails as agent lost; when the agent is back it is
// told to cancel the lease and its script is stopped, so nothing keeps running unaccounted for.
it('connection cut past the TTL: agent lost, and the script is stopped on reconnect', async () => {
  await waitOnline(srv, ['f-3']);
  const dep = await deploy('ca', ['f-3'], {}, 10, 60);
  await waitFor('the script on f-3 to start', async () => runsOf('f-3', 'ca') === 1);
  const pid = pidOf('f-3', 'ca');
  await proxy.cut();
  report.faults++;
  const d = await srv.waitDeployment(dep.id, 60_000);
  expect(d.state).toBe('failed');
  expect(d.steps[0].targets[0]).toMatchObject({ state: 'failed', failureKind: 'agent-lost' });
  expect(processAlive(pid)).toBe(true);
  await proxy.restore();
  await waitFor('the orphaned script to be stopped after the agent reconnects', async () => !processAlive(pid), 30_000);
  report.deployments++;
  report.runTwice += Math.max(0, runsOf('f-3', 'ca') - 1);
  expect(runsOf('f-3', 'ca')).toBe(1);
});
