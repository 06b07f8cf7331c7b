/**
 * One process using the whole rollout policy at once, driven only through the REST API as an operator's tooling
 * would: labels, batches spread over zones, a bake with health checks, a batch approval, a manual intervention per
 * target, a pause (skipUnavailable is set, with every machine up); then a release whose health check fails
 * in the bake and rolls back automatically to the previous release on exactly the targets that got it. Real server,
 * six real agents, real packages on disk.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  makeTarGz,
  sleep,
  startFleet,
  startServer,
  stopAll,
  waitFor,
  waitOnline,
  type TestFleet,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
let fleet: TestFleet;
let envId: string;
const ZONES = ['a', 'b', 'c', 'a', 'b', 'c'];

beforeAll(async () => {
  srv = await startServer();
  envId = (await srv.must('POST', '/api/environments', { name: 'Fleet' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [envId],
    roles: ['web'],
    maxUses: 6,
  });
  fleet = startFleet(srv, { prefix: 'all', count: 6, roles: ['web'], environments: ['Fleet'], token });
  const machines = await waitOnline(srv, fleet.names, 90_000);
  for (const [i, n] of fleet.names.entries()) {
    const m = machines.find((x: any) => x.name === n);
    await srv.must('PATCH', `/api/machines/${m.id}`, { labels: { zone: ZONES[i] } });
  }
}, 150_000);

afterAll(async () => {
  await fleet?.stop();
  await srv?.stop();
  await stopAll();
});

/** The version a machine's site says it runs (written by the package's deploy.sh), and what it served, in order. */
const current = (n: string) => {
  const f = join(fleet.home(n), 'site-version');
  return existsSync(f) ? readFileSync(f, 'utf8').trim() : null;
};
const history = (n: string) => {
  const f = join(fleet.home(n), 'site-history');
  return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n') : [];
};

async function upload(version: string) {
  const pkg = await makeTarGz(srv.dir, {
    'deploy.sh': `#!/bin/bash\nset -e\necho ${version} > ../../../site-version\necho "${version} $(date +%s%3N)" >> ../../../site-history\n`,
    VERSION: `${version}\n`,
  });
  await srv.must('POST', `/api/packages/site/${version}`, undefined, [201], {
    raw: pkg,
    headers: { 'content-type': 'application/gzip' },
  });
}

/** Answers every pending interruption of the deployment as `answer` says, until it ends; returns what was answered. */
async function operate(depId: string, answer: (i: any) => 'proceed' | 'abort' | null) {
  const answered: any[] = [];
  for (;;) {
    const d = await srv.must('GET', `/api/deployments/${depId}`);
    if (['success', 'failed', 'cancelled'].includes(d.state)) return { d, answered };
    for (const i of await srv.must('GET', `/api/interruptions?deploymentId=${depId}&state=pending`)) {
      const result = answer(i);
      if (!result) continue;
      const r = await srv.request('POST', `/api/interruptions/${i.id}/submit`, { result, notes: 'from the test' });
      if (r.status === 200) answered.push(i);
    }
    await sleep(200);
  }
}

// Everything together holds: zones are spread in every batch, batch 2 waits for the bake, its checks and an
// approval, each target waits at its manual intervention, a pause holds; then a
// failing release rolls back to the previous one on exactly the machines that got it, newest first.
it('rolls out with the whole policy, then rolls a bad release back', async () => {
  await upload('1.0.0');
  await upload('2.0.0');
  const steps = (healthCheck: string) => [
    {
      name: 'Site',
      targetRoles: ['web'],
      windowSize: 2,
      batches: [3, '100%'],
      spreadBy: 'zone',
      bakeSeconds: 1,
      healthCheck: { script: healthCheck, timeoutSeconds: 10 },
      approveEachBatch: true,
      approvalTimeoutSeconds: 30,
      approvalDefault: 'proceed',
      skipUnavailable: true,
      actions: [
        { name: 'Install', type: 'package', packageId: 'site' },
        { name: 'Confirm', type: 'manual-intervention', instructions: 'Is the site up?' },
        { name: 'Enable', type: 'script', script: 'echo enabled on $CUTTLE_MACHINE_NAME' },
      ],
    },
  ];
  // A script runs in the agent's work folder: the site's files are one level up.
  const p = await createProject(srv, 'Everything', steps('test -f ../site-version'));
  const r1 = await srv.must('POST', '/api/releases', {
    projectId: p.id,
    version: '1.0.0',
    packages: { site: '1.0.0' },
  });
  const preview = await srv.must('GET', `/api/deployments/preview?releaseId=${r1.id}&environmentId=${envId}`);
  expect(preview.steps[0].batches.map((b: string[]) => b.length)).toEqual([3, 3]);
  for (const b of preview.steps[0].batches)
    expect(b.map((n: string) => ZONES[fleet.names.indexOf(n)]).sort()).toEqual(['a', 'b', 'c']);

  const d1 = await srv.must('POST', '/api/deployments', { releaseId: r1.id, environmentId: envId });
  // Pause at once, hold, resume: nothing ran meanwhile.
  // (The first window may have started before the pause arrived: what started then finishes, nothing more starts.)
  await srv.must('POST', `/api/deployments/${d1.id}/pause`, undefined, [202]);
  // A target leased before the pause was committed may still be installing (slow on a loaded machine): judge by lease
  // times against pausedAt, then check that no further target starts while paused.
  const startedNames = (d: any) =>
    d.steps[0].targets
      .filter((t: any) => t.startedAt)
      .map((t: any) => t.machineName as string)
      .sort();
  const paused = await srv.must('GET', `/api/deployments/${d1.id}`);
  expect(paused.pausedAt).toBeTruthy();
  for (const t of paused.steps[0].targets.filter((x: any) => x.startedAt))
    expect(new Date(t.startedAt).getTime()).toBeLessThanOrEqual(new Date(paused.pausedAt).getTime());
  const before = startedNames(paused);
  expect(before.length).toBeLessThanOrEqual(2);
  await sleep(2000);
  const held = await srv.must('GET', `/api/deployments/${d1.id}`);
  expect(startedNames(held)).toEqual(before);
  expect(fleet.names.filter((n) => current(n) && !before.includes(n))).toEqual([]);
  expect(held.state).toBe('paused');
  await srv.must('POST', `/api/deployments/${d1.id}/resume`, undefined, [202]);
  let approvals = 0;
  const { d: done1 } = await operate(d1.id, (i) => {
    if (i.kind === 'batch-approval') return approvals++ === 0 ? 'proceed' : null;
    return 'proceed';
  });
  expect(done1.state).toBe('success');
  for (const n of fleet.names) expect(current(n)).toBe('1.0.0');
  const t1 = done1.steps[0].targets;
  expect(t1.every((t: any) => t.bakeCheck === undefined || t.bakeCheck === 'success')).toBe(true);
  expect(t1.filter((t: any) => t.batch === 0 && t.bakeCheck === 'success')).toHaveLength(3);
  const firstOfBatch2 = Math.min(
    ...t1.filter((t: any) => t.batch === 1).map((t: any) => new Date(t.startedAt).getTime()),
  );
  const lastOfBatch1 = Math.max(
    ...t1.filter((t: any) => t.batch === 0).map((t: any) => new Date(t.finishedAt).getTime()),
  );
  expect(firstOfBatch2 - lastOfBatch1).toBeGreaterThanOrEqual(1000);

  // Release 2: its health check fails in the bake on the second machine of batch 1; the budget is 0, so the roll
  // stops after batch 1 and the deployment rolls back to 1.0.0 on the machines that got 2.0.0.
  const bad: string = preview.steps[0].batches[0][1];
  writeFileSync(join(fleet.home(bad), 'fail-after-bake'), '');
  const proc = await srv.must('GET', `/api/projects/${p.id}/deployment-process`);
  await srv.must('PUT', `/api/projects/${p.id}/deployment-process`, {
    version: proc.version,
    steps: steps(
      'n=$(( $(cat ../checks-$CUTTLE_DEPLOYMENT_ID 2>/dev/null || echo 0) + 1 )); echo $n > ../checks-$CUTTLE_DEPLOYMENT_ID\nif [ -f ../fail-after-bake ] && [ $n -ge 2 ]; then exit 1; fi',
    ),
  });
  const r2 = await srv.must('POST', '/api/releases', {
    projectId: p.id,
    version: '2.0.0',
    packages: { site: '2.0.0' },
  });
  const d2 = await srv.must('POST', '/api/deployments', {
    releaseId: r2.id,
    environmentId: envId,
    rollbackOnFailure: true,
  });
  const { d: done2 } = await operate(d2.id, () => 'proceed');
  expect(done2.state).toBe('failed');
  const got2 = done2.steps[0].targets.filter((t: any) => t.startedAt).map((t: any) => t.machineName);
  expect(got2.sort()).toEqual([...preview.steps[0].batches[0]].sort());
  const failed = done2.steps[0].targets.find((t: any) => t.machineName === bad);
  expect(failed).toMatchObject({ state: 'failed', failureKind: 'health-check' });

  const rolled = await waitFor(
    'the automatic rollback',
    async () => (await srv.must('GET', `/api/deployments/${d2.id}`)).rolledBackBy ?? null,
    30_000,
  );
  const { d: rb } = await operate(rolled, () => 'proceed');
  expect(rb.state).toBe('success');
  expect(rb.rollbackOf).toBe(d2.id);
  expect(rb.releaseVersion).toBe('1.0.0');
  expect(rb.steps[0].targets.map((t: any) => t.machineName).sort()).toEqual([...got2].sort());
  for (const n of fleet.names) expect(current(n)).toBe('1.0.0');
  // The machines that never got 2.0.0 were not touched by the rollback.
  for (const n of fleet.names.filter((x) => !got2.includes(x)))
    expect(history(n).map((l) => l.split(' ')[0])).toEqual(['1.0.0']);
}, 300_000);
