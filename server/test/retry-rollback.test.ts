/**
 * Steering after the fact, with real agents: retrying what did not succeed in a failed deployment, rolling back to
 * the environment's previous release (automatically and on demand), and the preview's estimates from history. What
 * ran where is read from what the scripts append to files in the agents' homes, not only from the API.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  makeTarGz,
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
const ids: Record<string, string> = {};

beforeAll(async () => {
  srv = await startServer();
  envId = (await srv.must('POST', '/api/environments', { name: 'Prod' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [envId],
    roles: ['web'],
    maxUses: 4,
  });
  fleet = startFleet(srv, { prefix: 'web', count: 4, roles: ['web'], environments: ['Prod'], token });
  for (const m of await waitOnline(srv, fleet.names, 90_000)) ids[m.name] = m.id;
  // Three of the four also run the app (the rollback tests).
  for (const name of ['web-01', 'web-02', 'web-03'])
    await srv.must('PATCH', `/api/machines/${ids[name]}`, { roles: ['web', 'app'] });
}, 150_000);

afterAll(async () => {
  await fleet?.stop();
  await srv?.stop();
  await stopAll();
});

/** Lines a machine's scripts appended to `<agent home>/<file>`. */
function recorded(machine: string, file: string): string[] {
  const f = join(fleet.home(machine), file);
  return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').filter(Boolean) : [];
}

async function release(projectId: string, version: string, packages?: Record<string, string>) {
  return srv.must('POST', '/api/releases', { projectId, version, ...(packages ? { packages } : {}) });
}

async function deploy(releaseId: string, extra: Record<string, unknown> = {}) {
  return srv.must('POST', '/api/deployments', { releaseId, environmentId: envId, ...extra });
}

describe('retry-failed', () => {
  // Invariant: a retry runs exactly what did not succeed, from the first step that failed: the failed targets of that
  // step (not the ones that succeeded there), every target of the steps never reached, no step before it; and the
  // steps that run again see the output variables the original's earlier steps set.
  it('runs only the failed targets from the failed step, with the earlier outputs', async () => {
    for (const m of ['web-02', 'web-04']) writeFileSync(join(fleet.home(m), 'broken'), '');
    const p = await createProject(srv, 'Retry', [
      {
        name: 'Prepare',
        targetRoles: ['web'],
        actions: [
          {
            name: 'Set',
            type: 'script',
            script:
              'echo "prepare $CUTTLE_DEPLOYMENT_ID" >> ../retry.log\nset_cuttle_variable Token "tok-$CUTTLE_MACHINE_NAME"',
          },
        ],
      },
      {
        name: 'Apply',
        targetRoles: ['web'],
        actions: [
          {
            name: 'Use',
            type: 'script',
            script: [
              'echo "apply $CUTTLE_DEPLOYMENT_ID token=#{Cuttle.Action[Prepare.Set].Output.Token}" >> ../retry.log',
              'if [ -f ../broken ] && [ ! -f ../fixed ]; then echo "broken here" >&2; exit 3; fi',
            ].join('\n'),
          },
        ],
      },
      {
        name: 'Finish',
        targetRoles: ['web'],
        actions: [{ name: 'Done', type: 'script', script: 'echo "finish $CUTTLE_DEPLOYMENT_ID" >> ../retry.log' }],
      },
    ]);
    const rel = await release(p.id, '1.0.0');
    const orig = await srv.waitDeployment((await deploy(rel.id)).id);
    expect(orig.state).toBe('failed');
    expect(orig.steps.map((s: any) => s.state)).toEqual(['success', 'failed', 'skipped']);
    expect(orig.steps[1].targets.filter((t: any) => t.state === 'failed').map((t: any) => t.machineName)).toEqual([
      'web-02',
      'web-04',
    ]);

    // The cause is fixed; the retry goes.
    for (const m of ['web-02', 'web-04']) writeFileSync(join(fleet.home(m), 'fixed'), '');
    const created = await srv.must('POST', `/api/deployments/${orig.id}/retry-failed`, undefined, [201]);
    expect(created).toMatchObject({ retryOf: orig.id, releaseId: rel.id, environmentId: envId, state: 'queued' });
    const retry = await srv.waitDeployment(created.id);
    expect(retry.state).toBe('success');
    expect(retry.steps[0]).toMatchObject({ state: 'skipped', skipReason: `succeeded in deployment ${orig.id}` });
    expect(retry.steps[0].targets).toEqual([]);
    expect(retry.steps[1].targets.map((t: any) => `${t.machineName}:${t.state}`)).toEqual([
      'web-02:success',
      'web-04:success',
    ]);
    expect(retry.steps[2].targets.map((t: any) => t.machineName)).toEqual(['web-01', 'web-02', 'web-03', 'web-04']);
    // Limited to the machines it retries on (in any step), by name.
    expect(retry.specificMachineIds).toEqual(fleet.names.map((m) => ids[m]));

    // On disk: nobody prepared again; Apply ran again on the two machines only, with the token their Prepare set in
    // the original; Finish ran everywhere.
    for (const m of fleet.names) {
      const mine = recorded(m, 'retry.log').filter((l) => l.includes(retry.id));
      const expected = ['web-02', 'web-04'].includes(m)
        ? [`apply ${retry.id} token=tok-${m}`, `finish ${retry.id}`]
        : [`finish ${retry.id}`];
      expect(mine).toEqual(expected);
    }
    const log = (await srv.readLog(retry.id)).map((e: any) => e.text);
    expect(log).toContain(`Retrying what did not succeed in deployment ${orig.id}, from step Apply`);
    expect(log).toContain('Step Apply: retrying on web-02, web-04');
    expect(log).toContain(`Step Prepare will be skipped: succeeded in deployment ${orig.id}`);
    expect(log.some((t: string) => /^\d+ output variable\(s\) of deployment .* carried over$/.test(t))).toBe(true);
    expect((await srv.readLog(orig.id)).map((e: any) => e.text)).toContain(
      `Retried by deployment ${retry.id}: what did not succeed here runs again there`,
    );
    const summary = (await srv.must('GET', `/api/deployments?projectId=${p.id}`)).find((x: any) => x.id === retry.id);
    expect(summary.retryOf).toBe(orig.id);
    for (const m of ['web-02', 'web-04']) {
      rmSync(join(fleet.home(m), 'broken'));
      rmSync(join(fleet.home(m), 'fixed'));
    }
  });

  // Invariant: a machine disabled since the failure is not retried on, and the log says so; a step left with
  // nothing to retry is skipped rather than run on other machines.
  it('leaves out machines disabled since', async () => {
    writeFileSync(join(fleet.home('web-03'), 'broken-left'), '');
    const p = await createProject(srv, 'Retry left out', [
      {
        name: 'Only',
        targetRoles: ['web'],
        actions: [
          {
            name: 'Run',
            type: 'script',
            script: 'echo "run $CUTTLE_DEPLOYMENT_ID" >> ../left.log\nif [ -f ../broken-left ]; then exit 2; fi',
          },
        ],
      },
    ]);
    const orig = await srv.waitDeployment((await deploy((await release(p.id, '1')).id)).id);
    expect(orig.state).toBe('failed');
    await srv.must('PATCH', `/api/machines/${ids['web-03']}`, { disabled: true });
    try {
      const retry = await srv.waitDeployment(
        (await srv.must('POST', `/api/deployments/${orig.id}/retry-failed`, undefined, [201])).id,
      );
      expect(retry.state).toBe('success');
      expect(retry.steps[0].state).toBe('skipped');
      expect(retry.steps[0].targets).toEqual([]);
      const log = (await srv.readLog(retry.id)).map((e: any) => e.text);
      expect(log).toContain(
        'Step Only on web-03: left out, the machine was revoked or disabled since (or left the environment)',
      );
      for (const m of fleet.names) expect(recorded(m, 'left.log').filter((l) => l.includes(retry.id))).toEqual([]);
    } finally {
      await srv.must('PATCH', `/api/machines/${ids['web-03']}`, { disabled: false });
      rmSync(join(fleet.home('web-03'), 'broken-left'));
    }
  });
});

describe('rollback', () => {
  let app: any;
  let rel1: any;
  let rel2: any;
  let first: any;
  let failed: any;

  beforeAll(async () => {
    // The package's script records which version went where and when, and keeps the machine's current version;
    // version 2 breaks on web-02 after putting itself in place.
    for (const v of ['1', '2']) {
      const pkg = await makeTarGz(srv.dir, { 'version.txt': `v${v}\n` });
      await srv.must('POST', `/api/packages/app/${v}.0.0`, undefined, [201], {
        raw: pkg,
        headers: { 'content-type': 'application/gzip' },
      });
    }
    app = await createProject(srv, 'App', [
      {
        name: 'Install',
        targetRoles: ['app'],
        windowSize: 1,
        actions: [
          {
            name: 'Unpack',
            type: 'package',
            packageId: 'app',
            script: [
              'v=$(cat version.txt)',
              'cp version.txt ../../../current-version',
              'echo "$v $CUTTLE_DEPLOYMENT_ID $(date +%s%3N)" >> ../../../installs.log',
              'if [ "$v" = v2 ] && [ "$CUTTLE_MACHINE_NAME" = web-02 ]; then echo "v2 breaks here" >&2; exit 4; fi',
            ].join('\n'),
          },
        ],
      },
    ]);
    rel1 = await release(app.id, '1.0.0', { app: '1.0.0' });
    rel2 = await release(app.id, '2.0.0', { app: '2.0.0' });
  });

  // Invariant: a deployment created with rollbackOnFailure that fails is followed, once, by a deployment of the
  // environment's previous successful release to exactly the machines that got the failed release, newest first,
  // after which they hold the previous release again; the two deployments name each other.
  it('rolls back a failed deployment automatically, newest first', async () => {
    first = await srv.waitDeployment((await deploy(rel1.id)).id);
    expect(first.state).toBe('success');
    expect(first.rollbackOnFailure).toBe(false);
    for (const m of ['web-01', 'web-02', 'web-03'])
      expect(readFileSync(join(fleet.home(m), 'current-version'), 'utf8')).toBe('v1\n');

    const created = await deploy(rel2.id, { rollbackOnFailure: true });
    expect(created.rollbackOnFailure).toBe(true);
    failed = await srv.waitDeployment(created.id);
    expect(failed.state).toBe('failed');
    expect(failed.steps[0].targets.map((t: any) => `${t.machineName}:${t.state}`)).toEqual([
      'web-01:success',
      'web-02:failed',
      'web-03:skipped',
    ]);
    const linked = await waitFor(
      'the automatic rollback',
      async () => (await srv.must('GET', `/api/deployments/${failed.id}`)).rolledBackBy,
      30_000,
    );
    const rb = await srv.waitDeployment(linked);
    expect(rb).toMatchObject({ state: 'success', rollbackOf: failed.id, releaseId: rel1.id, rollbackOnFailure: false });
    expect(rb.specificMachineIds).toEqual([ids['web-02'], ids['web-01']]);
    expect(rb.steps[0].targets.map((t: any) => t.machineName)).toEqual(['web-02', 'web-01']);

    // On disk: v1 went back to web-02, then web-01 (the later one got v2 last); web-03 never got v2 and is untouched.
    const at = (m: string) =>
      recorded(m, 'installs.log')
        .map((l) => l.split(' '))
        .filter(([, dep]) => dep === rb.id);
    expect(at('web-02').map(([v]) => v)).toEqual(['v1']);
    expect(at('web-01').map(([v]) => v)).toEqual(['v1']);
    expect(at('web-03')).toEqual([]);
    expect(Number(at('web-02')[0][2])).toBeLessThan(Number(at('web-01')[0][2]));
    for (const m of ['web-01', 'web-02', 'web-03'])
      expect(readFileSync(join(fleet.home(m), 'current-version'), 'utf8')).toBe('v1\n');

    const rbLog = (await srv.readLog(rb.id)).map((e: any) => e.text);
    expect(rbLog).toContain(
      `Rolling back deployment ${failed.id} (release 2.0.0, which failed) to release 1.0.0, last deployed successfully by deployment ${first.id}: on web-02, web-01, newest first`,
    );
    expect((await srv.readLog(failed.id)).map((e: any) => e.text)).toContain(
      `Rolled back automatically by deployment ${rb.id}: release 1.0.0 goes back on web-02, web-01`,
    );
    // Asked again, the answer is the rollback it already has: a deployment is rolled back once.
    const again = await srv.must('POST', `/api/deployments/${failed.id}/rollback`, undefined, [201]);
    expect(again.id).toBe(rb.id);
    const all: any[] = await srv.must('GET', `/api/deployments?projectId=${app.id}`);
    expect(all.filter((d) => d.rollbackOf === failed.id).map((d) => d.id)).toEqual([rb.id]);
  });

  // Invariant: on demand, requests that arrive together make one rollback between them (each is answered with it),
  // and it puts the previous release back on what got the failed one.
  it('rolls back on demand, once however many ask', async () => {
    const again = await srv.waitDeployment((await deploy(rel2.id)).id);
    expect(again).toMatchObject({ state: 'failed', rollbackOnFailure: false });
    // No automatic rollback without rollbackOnFailure.
    expect((await srv.must('GET', `/api/deployments/${again.id}`)).rolledBackBy).toBeUndefined();
    const answers = await Promise.all(
      Array.from({ length: 5 }, () => srv.must('POST', `/api/deployments/${again.id}/rollback`, undefined, [201])),
    );
    const rbId = answers[0].id;
    expect(answers.map((a) => a.id)).toEqual(Array(5).fill(rbId));
    const rb = await srv.waitDeployment(rbId);
    expect(rb).toMatchObject({ state: 'success', rollbackOf: again.id, releaseId: rel1.id });
    expect((await srv.must('GET', `/api/deployments/${again.id}`)).rolledBackBy).toBe(rbId);
    const all: any[] = await srv.must('GET', `/api/deployments?projectId=${app.id}`);
    expect(all.filter((d) => d.rollbackOf === again.id).map((d) => d.id)).toEqual([rbId]);
    for (const m of ['web-01', 'web-02', 'web-03'])
      expect(readFileSync(join(fleet.home(m), 'current-version'), 'utf8')).toBe('v1\n');
    expect((await srv.readLog(again.id)).map((e: any) => e.text)).toContain(
      `Rolled back by deployment ${rbId}: release 1.0.0 goes back on web-02, web-01`,
    );
  });

  // Invariant: rolling back is refused while the deployment runs, and when there is no earlier release to go back
  // to; retrying is refused on a deployment that did not fail; unknown deployments are 404.
  it('refuses what cannot be rolled back or retried', async () => {
    // No earlier successful release of another version before the project's first deployment.
    const none = await srv.request('POST', `/api/deployments/${first.id}/rollback`);
    expect(none.status).toBe(409);
    expect(none.body.code).toBe('no_previous_release');
    const notFailed = await srv.request('POST', `/api/deployments/${first.id}/retry-failed`);
    expect(notFailed.status).toBe(409);
    expect(notFailed.body.code).toBe('deployment_not_failed');

    const p = await createProject(srv, 'Waits', [
      { name: 'Approve', actions: [{ name: 'Go', type: 'manual-intervention', instructions: 'wait' }] },
    ]);
    const active = await deploy((await release(p.id, '1')).id);
    await waitFor(
      'the deployment to wait',
      async () => (await srv.must('GET', `/api/deployments/${active.id}`)).state === 'waiting',
    );
    const busy = await srv.request('POST', `/api/deployments/${active.id}/rollback`);
    expect(busy.status).toBe(409);
    expect(busy.body.code).toBe('deployment_active');
    const running = await srv.request('POST', `/api/deployments/${active.id}/retry-failed`);
    expect(running.status).toBe(409);
    expect(running.body.code).toBe('deployment_not_failed');
    await srv.must('POST', `/api/deployments/${active.id}/cancel`, undefined, [202]);
    await srv.waitDeployment(active.id);

    for (const path of ['rollback', 'retry-failed']) {
      const unknown = await srv.request('POST', `/api/deployments/00000000-0000-4000-8000-000000000000/${path}`);
      expect(unknown.status).toBe(404);
      expect(unknown.body.code).toBe('not_found');
    }
  });
});

describe('preview estimates', () => {
  // Invariant: the preview estimates a step from how long its target runs took in the project's earlier
  // deployments, a step that will not run as 0, and the whole deployment from its steps; without history, null.
  it('estimates from history, and null without it', async () => {
    const steps = [
      {
        name: 'Slow',
        targetRoles: ['web'],
        windowSize: 2,
        actions: [{ name: 'Sleep', type: 'script', script: 'sleep 1' }],
      },
      {
        name: 'On failure',
        targetRoles: ['web'],
        condition: 'failure',
        actions: [{ name: 'Alert', type: 'script', script: 'echo alert' }],
      },
    ];
    const p = await createProject(srv, 'Estimates', steps);
    const rel = await release(p.id, '1');
    const fresh = await srv.must('GET', `/api/deployments/preview?releaseId=${rel.id}&environmentId=${envId}`);
    expect(fresh.estimatedSeconds).toBeNull();
    expect(fresh.steps.map((s: any) => s.estimatedSeconds)).toEqual([null, 0]);

    expect((await srv.waitDeployment((await deploy(rel.id)).id)).state).toBe('success');
    const rel2 = await release(p.id, '2');
    const after = await srv.must('GET', `/api/deployments/preview?releaseId=${rel2.id}&environmentId=${envId}`);
    // Four targets two at a time: two passes of at least a second each.
    expect(after.steps[0].estimatedSeconds).toBeGreaterThanOrEqual(2);
    expect(after.steps[0].estimatedSeconds).toBeLessThan(30);
    expect(after.steps[1].estimatedSeconds).toBe(0);
    expect(after.estimatedSeconds).toBe(after.steps[0].estimatedSeconds);

    // Another project has no history of its own, whatever this one has.
    const other = await createProject(srv, 'Estimates fresh', steps);
    const otherPreview = await srv.must(
      'GET',
      `/api/deployments/preview?releaseId=${(await release(other.id, '1')).id}&environmentId=${envId}`,
    );
    expect(otherPreview.estimatedSeconds).toBeNull();
  });
});
