/**
 * The execution rules of a deployment process, each observed from outside with real agents: step conditions and
 * start triggers, manual intervention, guided failure, rollout controls, timeouts, retries and cancel.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  intervals,
  maxOverlap,
  processAlive,
  startDeployment,
  startFleet,
  startServer,
  stopAll,
  timed,
  waitFor,
  waitInterruptions,
  waitOnline,
  type TestFleet,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
let fleet: TestFleet;
let prod: string;
let staging: string;
const ids: Record<string, string> = {};

beforeAll(async () => {
  srv = await startServer();
  prod = (await srv.must('POST', '/api/environments', { name: 'Prod' })).id;
  staging = (await srv.must('POST', '/api/environments', { name: 'Staging' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [prod, staging],
    roles: ['app'],
    maxUses: 10,
  });
  fleet = startFleet(srv, { prefix: 'app', count: 10, roles: ['app'], environments: ['Prod', 'Staging'], token });
  const machines = await waitOnline(srv, fleet.names, 90_000);
  for (const m of machines) ids[m.name] = m.id;
}, 150_000);

afterAll(async () => {
  await fleet?.stop();
  await srv?.stop();
  await stopAll();
});

const only = (...names: string[]) => ({ deployment: { specificMachineIds: names.map((n) => ids[n]) } });
const homes = (...names: string[]) => names.map((n) => fleet.home(n));
const marker = (name: string) => `touch ../${name}`;
const has = (machine: string, name: string) => existsSync(join(fleet.home(machine), name));
const states = (d: any) => d.steps.map((s: any) => `${s.name}:${s.state}`);
let n = 0;
const uniq = (s: string) => `${s} ${++n}`;

describe('step conditions and start triggers', () => {
  // After a failure: `success` steps are skipped, `failure` and `always` steps run; the deployment fails.
  it('runs failure and always steps after a failure, skips success steps', async () => {
    const p = await createProject(srv, uniq('Conditions'), [
      {
        name: 'Break',
        targetRoles: ['app'],
        actions: [{ name: 'Fail', type: 'script', script: 'echo breaking; exit 1' }],
      },
      {
        name: 'OnSuccess',
        targetRoles: ['app'],
        actions: [{ name: 'S', type: 'script', script: marker('cond-success') }],
      },
      {
        name: 'OnFailure',
        targetRoles: ['app'],
        condition: 'failure',
        actions: [{ name: 'F', type: 'script', script: marker('cond-failure') }],
      },
      {
        name: 'Always',
        targetRoles: ['app'],
        condition: 'always',
        actions: [{ name: 'A', type: 'script', script: marker('cond-always') }],
      },
    ]);
    const d = await srv.waitDeployment((await startDeployment(srv, p.id, prod, only('app-01'))).id);
    expect(d.state).toBe('failed');
    expect(states(d)).toEqual(['Break:failed', 'OnSuccess:skipped', 'OnFailure:success', 'Always:success']);
    expect([has('app-01', 'cond-success'), has('app-01', 'cond-failure'), has('app-01', 'cond-always')]).toEqual([
      false,
      true,
      true,
    ]);
    const log = await srv.readLog(d.id);
    expect(log.some((e: any) => e.text === 'Step OnSuccess skipped (its condition is not met)')).toBe(true);
  });

  // Without a failure, a failure step is skipped and the deployment succeeds.
  it('skips a failure step when all went well', async () => {
    const p = await createProject(srv, uniq('Happy'), [
      { name: 'Fine', targetRoles: ['app'], actions: [{ name: 'Ok', type: 'script', script: 'true' }] },
      {
        name: 'OnFailure',
        targetRoles: ['app'],
        condition: 'failure',
        actions: [{ name: 'F', type: 'script', script: marker('happy-failure') }],
      },
    ]);
    const d = await srv.waitDeployment((await startDeployment(srv, p.id, prod, only('app-01'))).id);
    expect(d.state).toBe('success');
    expect(states(d)).toEqual(['Fine:success', 'OnFailure:skipped']);
    expect(has('app-01', 'happy-failure')).toBe(false);
  });

  // Two withPrevious steps overlap in time; the next afterPrevious step starts only after both ended.
  it('runs withPrevious steps in parallel', async () => {
    const p = await createProject(srv, uniq('Parallel'), [
      { name: 'One', targetRoles: ['app'], actions: [{ name: 'a', type: 'script', script: timed('par-one', 1.5) }] },
      {
        name: 'Two',
        targetRoles: ['app'],
        startTrigger: 'withPrevious',
        actions: [{ name: 'b', type: 'script', script: timed('par-two', 1.5) }],
      },
      {
        name: 'Three',
        targetRoles: ['app'],
        actions: [{ name: 'c', type: 'script', script: timed('par-three', 0.1) }],
      },
    ]);
    const d = await srv.waitDeployment((await startDeployment(srv, p.id, prod, only('app-02'))).id);
    expect(d.state).toBe('success');
    const [one] = intervals(homes('app-02'), 'par-one');
    const [two] = intervals(homes('app-02'), 'par-two');
    const [three] = intervals(homes('app-02'), 'par-three');
    expect(maxOverlap([one, two])).toBe(2);
    expect(three[0]).toBeGreaterThanOrEqual(Math.max(one[1], two[1]));
  });
});

describe('manual intervention', () => {
  const process = (name: string, extra: Record<string, unknown> = {}) => [
    {
      name: 'Before',
      targetRoles: ['app'],
      actions: [{ name: 'b', type: 'script', script: marker(`${name}-before`) }],
    },
    {
      name: 'Approve',
      actions: [
        { name: 'Sign-off', type: 'manual-intervention', instructions: 'Check the dashboards, then proceed', ...extra },
      ],
    },
    { name: 'After', targetRoles: ['app'], actions: [{ name: 'a', type: 'script', script: marker(`${name}-after`) }] },
    {
      name: 'Cleanup',
      targetRoles: ['app'],
      condition: 'always',
      actions: [{ name: 'c', type: 'script', script: marker(`${name}-cleanup`) }],
    },
  ];

  // The deployment waits with the instructions shown; proceed continues; the submitter and notes are recorded and
  // logged; a second answer is a conflict.
  it('waits, then proceeds when approved', async () => {
    const p = await createProject(srv, uniq('Approval'), process('mi-ok'));
    const dep = await startDeployment(srv, p.id, prod, only('app-03'));
    const [intr] = await waitInterruptions(srv, dep.id);
    expect(intr).toMatchObject({
      kind: 'manual-intervention',
      stepName: 'Approve',
      actionName: 'Sign-off',
      instructions: 'Check the dashboards, then proceed',
      state: 'pending',
    });
    expect((await srv.must('GET', `/api/deployments/${dep.id}`)).state).toBe('waiting');
    expect(has('app-03', 'mi-ok-before')).toBe(true);
    expect(has('app-03', 'mi-ok-after')).toBe(false);
    const bad = await srv.request('POST', `/api/interruptions/${intr.id}/submit`, { result: 'retry' });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/result must be one of proceed, abort/);
    const done = await srv.must('POST', `/api/interruptions/${intr.id}/submit`, {
      result: 'proceed',
      notes: 'graphs look fine',
    });
    expect(done).toMatchObject({
      state: 'submitted',
      result: 'proceed',
      notes: 'graphs look fine',
      submittedBy: 'admin',
    });
    expect((await srv.request('POST', `/api/interruptions/${intr.id}/submit`, { result: 'abort' })).status).toBe(409);
    const d = await srv.waitDeployment(dep.id);
    expect(d.state).toBe('success');
    expect(states(d)).toEqual(['Before:success', 'Approve:success', 'After:success', 'Cleanup:success']);
    expect(has('app-03', 'mi-ok-after')).toBe(true);
    const log = await srv.readLog(dep.id);
    expect(log.some((e: any) => e.text === 'Manual intervention Sign-off: proceed by admin: graphs look fine')).toBe(
      true,
    );
  });

  // Abort fails the deployment; `success` steps are skipped and `always` steps still run.
  it('fails the deployment when aborted, and always steps still run', async () => {
    const p = await createProject(srv, uniq('Rejected'), process('mi-no'));
    const dep = await startDeployment(srv, p.id, prod, only('app-03'));
    const [intr] = await waitInterruptions(srv, dep.id);
    await srv.must('POST', `/api/interruptions/${intr.id}/submit`, { result: 'abort', notes: 'error rate too high' });
    const d = await srv.waitDeployment(dep.id);
    expect(d.state).toBe('failed');
    expect(states(d)).toEqual(['Before:success', 'Approve:failed', 'After:skipped', 'Cleanup:success']);
    expect([has('app-03', 'mi-no-after'), has('app-03', 'mi-no-cleanup')]).toEqual([false, true]);
    expect(
      (await srv.readLog(dep.id)).some(
        (e: any) => e.text === 'Manual intervention Sign-off: abort by admin: error rate too high',
      ),
    ).toBe(true);
  });

  // A manual intervention limited to Prod does not stop a Staging deployment; the skip and its reason are logged.
  it('does not stop other environments when limited to one', async () => {
    const p = await createProject(srv, uniq('ProdOnly'), process('mi-env', { environmentIds: [prod] }));
    const d = await srv.waitDeployment((await startDeployment(srv, p.id, staging, only('app-04'))).id);
    expect(d.state).toBe('success');
    expect(states(d)).toEqual(['Before:success', 'Approve:skipped', 'After:success', 'Cleanup:success']);
    expect((await srv.must('GET', `/api/interruptions?deploymentId=${d.id}`)).length).toBe(0);
    const log = await srv.readLog(d.id);
    expect(log.some((e: any) => e.text === 'Step Approve will be skipped: every action is skipped')).toBe(true);
  });
});

describe('guided failure', () => {
  // Retry reruns the target from the failed action (the action before it is not rerun) and the deployment succeeds.
  it('retries a failed target from the failed action', async () => {
    const p = await createProject(srv, uniq('Guided retry'), [
      {
        name: 'Web',
        targetRoles: ['app'],
        actions: [
          { name: 'First', type: 'script', script: 'echo first >> ../gf-retry.log' },
          {
            name: 'Flaky',
            type: 'script',
            script:
              'echo flaky >> ../gf-retry.log\nif [ ! -f ../gf-retry.once ]; then touch ../gf-retry.once; exit 4; fi',
          },
        ],
      },
    ]);
    const dep = await startDeployment(srv, p.id, prod, {
      deployment: { specificMachineIds: [ids['app-05']], guidedFailure: true },
    });
    const [intr] = await waitInterruptions(srv, dep.id);
    expect(intr).toMatchObject({
      kind: 'guided-failure',
      stepName: 'Web',
      actionName: 'Flaky',
      machineId: ids['app-05'],
      machineName: 'app-05',
    });
    expect(intr.allowedResults).toEqual(['retry', 'skip', 'abort']);
    await srv.must('POST', `/api/interruptions/${intr.id}/submit`, { result: 'retry' });
    const d = await srv.waitDeployment(dep.id);
    expect(d.state).toBe('success');
    expect(d.steps[0].targets[0]).toMatchObject({ state: 'success', attempt: 2 });
    expect(readFileSync(join(fleet.home('app-05'), 'gf-retry.log'), 'utf8')).toBe('first\nflaky\nflaky\n');
  });

  // Each failed target has its own interruption: skipping one leaves the other waiting; skip lets the roll go on,
  // abort fails the step.
  it('asks per target: skip lets the roll go on, abort fails the step', async () => {
    const p = await createProject(srv, uniq('Guided skip'), [
      {
        name: 'Web',
        targetRoles: ['app'],
        windowSize: 2,
        actions: [
          {
            name: 'Maybe',
            type: 'script',
            script: 'touch ../gf-skip-$CUTTLE_MACHINE_NAME\ncase $CUTTLE_MACHINE_NAME in app-06|app-07) exit 1;; esac',
          },
        ],
      },
    ]);
    const dep = await startDeployment(srv, p.id, prod, {
      deployment: { specificMachineIds: ['app-06', 'app-07', 'app-08'].map((x) => ids[x]), guidedFailure: true },
    });
    const two = await waitInterruptions(srv, dep.id, 2);
    expect(two.map((i: any) => i.machineName).sort()).toEqual(['app-06', 'app-07']);
    // Both failed targets hold the window (2): app-08 waits.
    expect(has('app-08', 'gf-skip-app-08')).toBe(false);
    const i6 = two.find((i: any) => i.machineName === 'app-06');
    const i7 = two.find((i: any) => i.machineName === 'app-07');
    await srv.must('POST', `/api/interruptions/${i6.id}/submit`, { result: 'skip', notes: 'known bad host' });
    await waitFor('app-08 to run', async () => has('app-08', 'gf-skip-app-08'));
    expect((await srv.must('GET', `/api/interruptions/${i7.id}`)).state).toBe('pending');
    await srv.must('POST', `/api/interruptions/${i7.id}/submit`, { result: 'abort' });
    const d = await srv.waitDeployment(dep.id);
    expect(d.state).toBe('failed');
    expect(d.steps[0].state).toBe('failed');
    expect(d.steps[0].targets.map((t: any) => `${t.machineName}:${t.state}`)).toEqual([
      'app-06:skipped',
      'app-07:failed',
      'app-08:success',
    ]);
  });
});

describe('rollout controls', () => {
  // A 30% window over 10 targets is 3: never more than 3 in flight, and 3 at some point; targets in name order.
  it('holds a percentage window over 10 targets', async () => {
    const p = await createProject(srv, uniq('Percent'), [
      {
        name: 'Roll',
        targetRoles: ['app'],
        windowSize: '30%',
        actions: [{ name: 'r', type: 'script', script: timed('pct', 0.6) }],
      },
    ]);
    const dep = await startDeployment(srv, p.id, prod);
    const d = await srv.waitDeployment(dep.id);
    expect(d.state).toBe('success');
    expect(d.steps[0].windowSize).toBe(3);
    expect(d.steps[0].targets.map((t: any) => t.machineName)).toEqual(fleet.names);
    const iv = intervals(homes(...fleet.names), 'pct');
    expect(iv).toHaveLength(10);
    expect(maxOverlap(iv)).toBe(3);
    // Taken in name order: the leases were taken (and logged, in sequence) app-01, app-02, ... app-10.
    const taken = (await srv.readLog(d.id))
      .map((e: any) => /^Roll on (\S+): lease taken/.exec(e.text)?.[1])
      .filter(Boolean);
    expect(taken).toEqual(fleet.names);
  });

  // maxFailures 1: the first failure is tolerated, the second fails the step, and no further target starts.
  it('lets one failure through and stops at the second', async () => {
    const p = await createProject(srv, uniq('Budget'), [
      {
        name: 'Roll',
        targetRoles: ['app'],
        windowSize: 1,
        maxFailures: 1,
        actions: [
          {
            name: 'r',
            type: 'script',
            script: 'touch ../budget-$CUTTLE_MACHINE_NAME\ncase $CUTTLE_MACHINE_NAME in app-02|app-04) exit 1;; esac',
          },
        ],
      },
    ]);
    const d = await srv.waitDeployment(
      (await startDeployment(srv, p.id, prod, only('app-01', 'app-02', 'app-03', 'app-04', 'app-05'))).id,
    );
    expect(d.state).toBe('failed');
    expect(d.steps[0]).toMatchObject({ state: 'failed', maxFailures: 1 });
    expect(d.steps[0].targets.map((t: any) => t.state)).toEqual(['success', 'failed', 'success', 'failed', 'skipped']);
    expect(has('app-05', 'budget-app-05')).toBe(false);
  });
});

describe('timeouts, retries and cancel', () => {
  // A script over its timeout is killed (its whole process group) and fails with "timed out after N s"; the
  // project's default applies to actions without their own.
  it('kills a script that runs over its timeout', async () => {
    const p = await createProject(
      srv,
      uniq('Timeout'),
      [
        {
          name: 'Own',
          targetRoles: ['app'],
          actions: [
            {
              name: 'slow',
              type: 'script',
              timeoutSeconds: 2,
              script: 'sleep 30 & echo $! > ../timeout-child.pid\nwait',
            },
          ],
        },
        {
          name: 'Default',
          targetRoles: ['app'],
          condition: 'always',
          actions: [{ name: 'slower', type: 'script', script: 'sleep 30' }],
        },
      ],
      { defaultTimeoutSeconds: 1 },
    );
    const t0 = Date.now();
    const d = await srv.waitDeployment((await startDeployment(srv, p.id, prod, only('app-06'))).id);
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(d.state).toBe('failed');
    expect(states(d)).toEqual(['Own:failed', 'Default:failed']);
    const log = await srv.readLog(d.id);
    expect(log.filter((e: any) => e.text === 'timed out after 2 s')).toHaveLength(1);
    expect(log.filter((e: any) => e.text === 'timed out after 1 s')).toHaveLength(1);
    const child = Number(readFileSync(join(fleet.home('app-06'), 'timeout-child.pid'), 'utf8'));
    await waitFor('the timed-out script child to be gone', async () => !processAlive(child), 10_000);
  });

  // retries reruns a failed action after retryDelaySeconds; success on the second attempt succeeds the target.
  it('retries a failed action', async () => {
    const p = await createProject(srv, uniq('Retry'), [
      {
        name: 'Flaky',
        targetRoles: ['app'],
        actions: [
          {
            name: 'f',
            type: 'script',
            retries: 2,
            retryDelaySeconds: 1,
            script: 'echo try >> ../retry.log\nif [ ! -f ../retry.once ]; then touch ../retry.once; exit 7; fi',
          },
        ],
      },
    ]);
    const d = await srv.waitDeployment((await startDeployment(srv, p.id, prod, only('app-07'))).id);
    expect(d.state).toBe('success');
    expect(readFileSync(join(fleet.home('app-07'), 'retry.log'), 'utf8')).toBe('try\ntry\n');
    expect(
      (await srv.readLog(d.id)).some((e: any) => e.text === 'Action f failed (attempt 1 of 3); retrying in 1 s'),
    ).toBe(true);
  });

  // Cancel stops new work at once, kills the running script's process group, and ends cancelled.
  it('cancels a deployment during a long script, leaving no script running', async () => {
    const p = await createProject(srv, uniq('Cancel'), [
      {
        name: 'Long',
        targetRoles: ['app'],
        windowSize: 1,
        actions: [
          { name: 'l', type: 'script', script: 'echo $$ > ../cancel-$CUTTLE_MACHINE_NAME.pid\nsleep 60 & wait' },
        ],
      },
      { name: 'Later', targetRoles: ['app'], actions: [{ name: 'x', type: 'script', script: marker('cancel-later') }] },
    ]);
    const dep = await startDeployment(srv, p.id, prod, only('app-08', 'app-09'));
    await waitFor('the long script to start', async () => has('app-08', 'cancel-app-08.pid'));
    const pid = Number(readFileSync(join(fleet.home('app-08'), 'cancel-app-08.pid'), 'utf8'));
    const t0 = Date.now();
    const r = await srv.request('POST', `/api/deployments/${dep.id}/cancel`);
    expect(r.status).toBe(202);
    const d = await srv.waitDeployment(dep.id, 30_000);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(d.state).toBe('cancelled');
    expect(d.steps[0].targets.map((t: any) => t.state)).toEqual(['cancelled', 'cancelled']);
    expect(d.steps[1].state).toBe('cancelled');
    expect(processAlive(pid)).toBe(false);
    expect(has('app-09', 'cancel-app-09.pid')).toBe(false);
    expect(has('app-08', 'cancel-later')).toBe(false);
    expect((await srv.request('POST', `/api/deployments/${dep.id}/cancel`)).status).toBe(409);
  });

  // Cancel while waiting on a manual intervention closes it and ends cancelled.
  it('closes pending interruptions on cancel', async () => {
    const p = await createProject(srv, uniq('Cancel waiting'), [
      { name: 'Approve', actions: [{ name: 'ok', type: 'manual-intervention', instructions: 'wait' }] },
    ]);
    const dep = await startDeployment(srv, p.id, prod);
    const [intr] = await waitInterruptions(srv, dep.id);
    await srv.must('POST', `/api/deployments/${dep.id}/cancel`);
    const d = await srv.waitDeployment(dep.id);
    expect(d.state).toBe('cancelled');
    expect((await srv.must('GET', `/api/interruptions/${intr.id}`)).state).toBe('cancelled');
    expect((await srv.request('POST', `/api/interruptions/${intr.id}/submit`, { result: 'proceed' })).status).toBe(409);
  });
});
