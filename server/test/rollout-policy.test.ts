/**
 * A step's rollout policy and steering a running deployment, with real parts: a server process, six real agents (one
 * fleet process: own keys, certificates and TLS connections), real bash. Every rule is asserted from what the
 * targets' scripts record on disk (when each ran), not only from what the API says.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  intervals,
  maxOverlap,
  sleep,
  startAgent,
  startDeployment,
  startFleet,
  startServer,
  stopAll,
  timed,
  timesIn,
  waitFor,
  waitInterruptions,
  waitOnline,
  type TestAgent,
  type TestFleet,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
let fleet: TestFleet;
let envId: string;
let token: string;

beforeAll(async () => {
  srv = await startServer();
  envId = (await srv.must('POST', '/api/environments', { name: 'Rollout' })).id;
  token = (await srv.must('POST', '/api/registration-tokens', { environmentIds: [envId], roles: ['web'], maxUses: 10 }))
    .token;
  fleet = startFleet(srv, { prefix: 'roll', count: 6, roles: ['web'], environments: ['Rollout'], token });
  await waitOnline(srv, fleet.names);
}, 120_000);

afterAll(async () => {
  await fleet?.stop();
  await srv?.stop();
  await stopAll();
});

const homes = () => fleet.names.map((n) => fleet.home(n));
/** When each machine's run of `tag` started and ended (by machine name). */
function runsOf(tag: string) {
  const out = new Map<string, { start: number; end: number }>();
  for (const n of fleet.names) {
    const t = timesIn(fleet.home(n)).filter((x) => x.tag === tag);
    const s = t.find((x) => x.edge === 'start');
    const e = t.find((x) => x.edge === 'end');
    if (s && e) out.set(n, { start: s.ms, end: e.ms });
  }
  return out;
}
async function deployAndWait(projectId: string, version: string, deployment: Record<string, unknown> = {}) {
  const dep = await startDeployment(srv, projectId, envId, { version, deployment });
  return srv.waitDeployment(dep.id, 180_000);
}

describe('growing batches', () => {
  // Batches [1, "50%", "100%"] of 6 targets are 1, 3 and 2 targets; no target of batch k+1 starts before every target
  // of batch k ended and the bake passed; inside a batch the window of 2 holds (and is used).
  it('rolls batch by batch, baking between batches, the window sliding inside each', async () => {
    const p = await createProject(srv, 'Batches', [
      {
        name: 'Web',
        targetRoles: ['web'],
        windowSize: 2,
        batches: [1, '50%', '100%'],
        bakeSeconds: 2,
        actions: [{ name: 'Roll', type: 'script', script: timed('batches', 0.6) }],
      },
    ]);
    const d = await deployAndWait(p.id, '1.0.0');
    expect(d.state).toBe('success');
    const step = d.steps[0];
    expect(step.batchCount).toBe(3);
    expect(step.targets.map((t: any) => t.batch)).toEqual([0, 1, 1, 1, 2, 2]);
    const runs = runsOf('batches');
    expect(runs.size).toBe(6);
    const batch = (b: number): Array<{ start: number; end: number }> =>
      step.targets.filter((t: any) => t.batch === b).map((t: any) => runs.get(t.machineName)!);
    for (let b = 1; b < 3; b++) {
      const ended = Math.max(...batch(b - 1).map((r) => r.end));
      const started = Math.min(...batch(b).map((r) => r.start));
      expect(started - ended).toBeGreaterThanOrEqual(2000 - 50); // the bake (50 ms for the clocks' reading)
    }
    expect(maxOverlap(batch(1).map((r) => [r.start, r.end]))).toBe(2);
    expect(maxOverlap(intervals(homes(), 'batches'))).toBeLessThanOrEqual(2);
    const log = (await srv.readLog(d.id)).map((e: any) => e.text).join('\n');
    expect(log).toContain('batch 2 of 3 started');
    expect(log).toMatch(/batch 1 of 3 ended; baking for 2 s/);
  }, 120_000);
});

describe('spreadBy', () => {
  // Six machines in three zones (two each) and batches of 3 spread by zone: every batch takes one machine of each
  // zone, so a zone never has both of its machines in one batch, and the second batch starts after the first ended.
  it('fills each batch round-robin over the zones', async () => {
    const zoneOf = (n: string) => ['a', 'a', 'b', 'b', 'c', 'c'][fleet.names.indexOf(n)];
    const machines: any[] = await srv.must('GET', '/api/machines');
    for (const n of fleet.names) {
      const m = machines.find((x) => x.name === n);
      await srv.must('PATCH', `/api/machines/${m.id}`, { labels: { zone: zoneOf(n) } });
    }
    try {
      const p = await createProject(srv, 'Spread', [
        {
          name: 'Web',
          targetRoles: ['web'],
          windowSize: 3,
          batches: [3],
          spreadBy: 'zone',
          actions: [{ name: 'Roll', type: 'script', script: timed('spread', 0.3) }],
        },
      ]);
      const d = await deployAndWait(p.id, '1.0.0');
      expect(d.state).toBe('success');
      const runs = runsOf('spread');
      const batches: string[][] = [0, 1].map((b) =>
        d.steps[0].targets.filter((t: any) => t.batch === b).map((t: any) => t.machineName as string),
      );
      for (const b of batches) expect(b.map(zoneOf).sort()).toEqual(['a', 'b', 'c']);
      // What ran together on the machines: the first three to start are one per zone.
      const byStart = [...runs].sort((x, y) => x[1].start - y[1].start).map(([n]) => n);
      expect(byStart.slice(0, 3).map(zoneOf).sort()).toEqual(['a', 'b', 'c']);
      expect(Math.min(...batches[1].map((n) => runs.get(n)!.start))).toBeGreaterThanOrEqual(
        Math.max(...batches[0].map((n) => runs.get(n)!.end)),
      );
    } finally {
      for (const m of machines.filter((x) => fleet.names.includes(x.name)))
        await srv.must('PATCH', `/api/machines/${m.id}`, { labels: {} });
    }
  }, 120_000);
});

describe('health checks', () => {
  // The check runs after a target's actions and again at the end of its batch's bake; on one machine it fails the
  // second time. With maxFailures 0 the roll stops after that batch (later batches never run); with maxFailures 1 it
  // goes on to the end. The failed target says why.
  it.each([
    [0, 'failed', 2],
    [1, 'success', 6],
  ])(
    'a check failing in the bake, maxFailures %p: the deployment is %p, %p targets ran',
    async (maxFailures, state, ran) => {
      const tag = `health${maxFailures}`;
      const counter = `../hc-${tag}`;
      const p = await createProject(srv, `Health ${maxFailures}`, [
        {
          name: 'Web',
          targetRoles: ['web'],
          windowSize: 2,
          batches: [2, 2, 2],
          bakeSeconds: 1,
          maxFailures,
          healthCheck: {
            script: `n=$(( $(cat ${counter} 2>/dev/null || echo 0) + 1 )); echo $n > ${counter}\necho "check $n on $CUTTLE_MACHINE_NAME"\nif [ "$CUTTLE_MACHINE_NAME" = roll-02 ] && [ $n -ge 2 ]; then echo unhealthy >&2; exit 1; fi`,
            timeoutSeconds: 10,
          },
          actions: [{ name: 'Roll', type: 'script', script: timed(tag, 0.2) }],
        },
      ]);
      const d = await deployAndWait(p.id, '1.0.0');
      expect(d.state).toBe(state);
      expect(runsOf(tag).size).toBe(ran);
      const t2 = d.steps[0].targets.find((t: any) => t.machineName === 'roll-02');
      expect(t2.state).toBe('failed');
      expect(t2.failureKind).toBe('health-check');
      expect(t2.bakeCheck).toBe('failed');
      expect(t2.error).toMatch(/health check failed at the end of the bake/);
      const checksOn = (n: string) => Number(readFileSync(join(fleet.home(n), `hc-${tag}`), 'utf8').trim());
      expect(checksOn('roll-01')).toBe(2); // after its actions, and at the end of the bake
      const last = d.steps[0].targets.filter((t: any) => t.batch === 2);
      if (maxFailures === 0) expect(last.every((t: any) => t.state === 'skipped')).toBe(true);
      // The last batch has no bake after it: its targets were checked once.
      else expect(checksOn(last[0].machineName)).toBe(1);
    },
    120_000,
  );
});

describe('batch approvals', () => {
  // Before every batch after the first, a batch-approval names that batch's targets; with a timeout its default
  // answer is applied when the time runs out, recorded as given by "timeout": abort stops the roll there, proceed
  // lets the batch go.
  it.each([
    ['abort', 'failed', 1],
    ['proceed', 'success', 6],
  ])(
    'an approval that times out with %p',
    async (approvalDefault, state, ran) => {
      const tag = `approve-${approvalDefault}`;
      const p = await createProject(srv, `Approval ${approvalDefault}`, [
        {
          name: 'Web',
          targetRoles: ['web'],
          batches: [1, '100%'],
          approveEachBatch: true,
          approvalTimeoutSeconds: 2,
          approvalDefault,
          actions: [{ name: 'Roll', type: 'script', script: timed(tag, 0.1) }],
        },
      ]);
      const dep = await startDeployment(srv, p.id, envId, { version: '1.0.0' });
      const [intr] = await waitInterruptions(srv, dep.id, 1, 60_000);
      expect(intr.kind).toBe('batch-approval');
      expect(intr.batch).toBe(1);
      expect(intr.targets.map((t: any) => t.machineName)).toEqual(fleet.names.slice(1));
      expect(intr.defaultResult).toBe(approvalDefault);
      expect(intr.allowedResults).toEqual(['proceed', 'abort']);
      expect(new Date(intr.expiresAt).getTime()).toBeGreaterThan(Date.now() - 1000);
      expect((await srv.must('GET', `/api/deployments/${dep.id}`)).state).toBe('waiting');
      const d = await srv.waitDeployment(dep.id, 60_000);
      expect(d.state).toBe(state);
      expect(runsOf(tag).size).toBe(ran);
      const answered = await srv.must('GET', `/api/interruptions/${intr.id}`);
      expect(answered).toMatchObject({ state: 'submitted', result: approvalDefault, submittedBy: 'timeout' });
      // Nothing of the second batch started before the approval's time ran out.
      const firstOfBatch2 = Math.min(...[...runsOf(tag)].filter(([n]) => n !== 'roll-01').map(([, r]) => r.start));
      if (ran > 1) expect(firstOfBatch2).toBeGreaterThanOrEqual(new Date(intr.expiresAt).getTime() - 50);
    },
    120_000,
  );

  // A person answers in time: proceed lets the next batch go at once; the answer is theirs.
  it('lets a batch go when a person proceeds', async () => {
    const p = await createProject(srv, 'Approval by hand', [
      {
        name: 'Web',
        targetRoles: ['web'],
        batches: [3, 3],
        approveEachBatch: true,
        actions: [{ name: 'Roll', type: 'script', script: timed('by-hand', 0.1) }],
      },
    ]);
    const dep = await startDeployment(srv, p.id, envId, { version: '1.0.0' });
    const [intr] = await waitInterruptions(srv, dep.id, 1, 60_000);
    await sleep(1000);
    expect(runsOf('by-hand').size).toBe(3); // the second batch waits for the answer
    const done = await srv.must('POST', `/api/interruptions/${intr.id}/submit`, { result: 'proceed', notes: 'ok' });
    expect(done).toMatchObject({ state: 'submitted', result: 'proceed' });
    expect((await srv.waitDeployment(dep.id, 60_000)).state).toBe('success');
    expect(runsOf('by-hand').size).toBe(6);
  }, 120_000);
});

describe('manual intervention inside a rolling step', () => {
  // Each target stops at the manual intervention between its two actions and waits for a person, holding its slot:
  // with a window of 2, a third target never starts while two wait. Proceeding lets that target's second action run
  // (a continuation, not a new attempt).
  it('waits per target, inside the window', async () => {
    const p = await createProject(srv, 'Per-target approval', [
      {
        name: 'Web',
        targetRoles: ['web'],
        windowSize: 2,
        actions: [
          { name: 'Drain', type: 'script', script: timed('mi-drain', 0.1) },
          { name: 'Check', type: 'manual-intervention', instructions: 'Is the node drained?' },
          { name: 'Upgrade', type: 'script', script: timed('mi-upgrade', 0.1) },
        ],
      },
    ]);
    const dep = await startDeployment(srv, p.id, envId, { version: '1.0.0' });
    for (let answered = 0; answered < 6;) {
      const pending = await waitInterruptions(srv, dep.id, Math.min(2, 6 - answered), 60_000);
      await sleep(800);
      // Two wait: nobody else started meanwhile.
      expect(runsOf('mi-drain').size).toBe(answered + pending.length);
      const d = await srv.must('GET', `/api/deployments/${dep.id}`);
      const waiting = d.steps[0].targets.filter((t: any) => t.waitingFor === 'person');
      expect(waiting.map((t: any) => t.machineId).sort()).toEqual(pending.map((i: any) => i.machineId).sort());
      expect(pending.every((i: any) => i.kind === 'manual-intervention' && i.actionName === 'Check')).toBe(true);
      const first = pending[0];
      await srv.must('POST', `/api/interruptions/${first.id}/submit`, { result: 'proceed' });
      answered++;
      await waitFor(`Upgrade on ${first.machineName}`, async () => runsOf('mi-upgrade').has(first.machineName), 30_000);
      expect(runsOf('mi-upgrade').get(first.machineName)!.start).toBeGreaterThan(
        runsOf('mi-drain').get(first.machineName)!.end,
      );
    }
    const d = await srv.waitDeployment(dep.id, 60_000);
    expect(d.state).toBe('success');
    for (const t of d.steps[0].targets) {
      expect(t.attempt).toBe(1);
      expect(t.actions.map((a: any) => a.state)).toEqual(['success', 'success', 'success']);
    }
  }, 180_000);
});

describe('pause and resume', () => {
  // Paused, a deployment starts no target (the running one finishes) for as long as it stays paused, across a
  // server restart too; resumed, it finishes where it stopped, every target once.
  it('starts nothing while paused, also after a server restart, then resumes', async () => {
    const p = await createProject(srv, 'Pausable', [
      {
        name: 'Web',
        targetRoles: ['web'],
        windowSize: 1,
        actions: [{ name: 'Roll', type: 'script', script: timed('pause', 0.8) }],
      },
    ]);
    const dep = await startDeployment(srv, p.id, envId, { version: '1.0.0' });
    await waitFor('the first target to run', async () => runsOf('pause').size >= 1 || null, 30_000, 50);
    const paused = await srv.must('POST', `/api/deployments/${dep.id}/pause`, undefined, [202]);
    expect(paused).toEqual({ id: dep.id, state: 'paused' });
    const pausedAt = Date.now();
    await sleep(3000);
    let d = await srv.must('GET', `/api/deployments/${dep.id}`);
    expect(d.state).toBe('paused');
    expect(d.pausedAt).toBeTruthy();
    const ranBefore = runsOf('pause').size;
    expect(ranBefore).toBeLessThanOrEqual(2); // the one running at the pause (and one started just before it)
    // Every target that started was leased before the pause was committed (its script may begin a moment after the
    // pause's answer), and nothing more starts while paused.
    for (const t of d.steps[0].targets.filter((x: any) => x.startedAt))
      expect(new Date(t.startedAt).getTime()).toBeLessThanOrEqual(new Date(d.pausedAt).getTime());
    for (const [, r] of runsOf('pause')) expect(r.start).toBeLessThan(pausedAt + 1000);

    await srv.stop({ keepData: true });
    srv = await startServer({ reuse: srv });
    await waitOnline(srv, fleet.names);
    await sleep(2000);
    d = await srv.must('GET', `/api/deployments/${dep.id}`);
    expect(d.state).toBe('paused');
    expect(runsOf('pause').size).toBe(ranBefore);

    const resumed = await srv.must('POST', `/api/deployments/${dep.id}/resume`, undefined, [202]);
    expect(resumed).toEqual({ id: dep.id, state: 'executing' });
    d = await srv.waitDeployment(dep.id, 60_000);
    expect(d.state).toBe('success');
    expect(runsOf('pause').size).toBe(6);
    expect(d.steps[0].targets.every((t: any) => t.attempt === 1)).toBe(true);
    const log = (await srv.readLog(dep.id)).map((e: any) => e.text);
    expect(log).toContain('Resumed');
    // Steering an ended deployment is refused with its code.
    const again = await srv.request('POST', `/api/deployments/${dep.id}/pause`);
    expect(again.status).toBe(409);
    expect(again.body.code).toBe('deployment_finished');
  }, 180_000);

  // Two server nodes on one PostgreSQL: the deployment is driven by one, paused and resumed through the other; the
  // driver honours both within its next round (the pause is a row, not a node's memory).
  const pgOnly = process.env.DATABASE_URL ? it : it.skip;
  pgOnly(
    'is paused and resumed through another node',
    async () => {
      const other = await startServer({ sameDataAs: srv });
      try {
        const p = await createProject(srv, 'Pausable elsewhere', [
          {
            name: 'Web',
            targetRoles: ['web'],
            windowSize: 1,
            actions: [{ name: 'Roll', type: 'script', script: timed('pause-node', 0.5) }],
          },
        ]);
        const dep = await startDeployment(srv, p.id, envId, { version: '1.0.0' });
        await waitFor('the first target to run', async () => runsOf('pause-node').size >= 1 || null, 30_000, 50);
        await other.must('POST', `/api/deployments/${dep.id}/pause`, undefined, [202]);
        const pausedAt = Date.now();
        await sleep(2500);
        expect((await srv.must('GET', `/api/deployments/${dep.id}`)).state).toBe('paused');
        for (const [, r] of runsOf('pause-node')) expect(r.start).toBeLessThan(pausedAt + 600); // one round at most
        const ran = runsOf('pause-node').size;
        await sleep(1000);
        expect(runsOf('pause-node').size).toBe(ran);
        await other.must('POST', `/api/deployments/${dep.id}/resume`, undefined, [202]);
        expect((await srv.waitDeployment(dep.id, 60_000)).state).toBe('success');
        expect(runsOf('pause-node').size).toBe(6);
      } finally {
        await other.stop({ keepData: true }); // the database is the first node's: it drops it
      }
    },
    120_000,
  );
});

describe('skipUnavailable', () => {
  let solo: TestAgent | undefined;
  afterAll(async () => solo?.stop());

  // A target whose agent went away before its step started is skipped with the reason, at once, instead of failing
  // after the lease TTL; the others roll.
  it('skips a target that went offline before its step started', async () => {
    solo = startAgent(srv, { name: 'solo-01', roles: ['web'], environments: ['Rollout'], token });
    await waitOnline(srv, ['solo-01']);
    const p = await createProject(srv, 'Skip unavailable', [
      { name: 'Gate', actions: [{ name: 'Go', type: 'manual-intervention' }] },
      {
        name: 'Web',
        targetRoles: ['web'],
        skipUnavailable: true,
        actions: [{ name: 'Roll', type: 'script', script: timed('skip', 0.1) }],
      },
    ]);
    const dep = await startDeployment(srv, p.id, envId, { version: '1.0.0' });
    const [intr] = await waitInterruptions(srv, dep.id, 1, 60_000);
    await solo.stop();
    await waitFor(
      'solo-01 offline',
      async () => {
        const ms: any[] = await srv.must('GET', '/api/machines');
        return ms.find((m) => m.name === 'solo-01')?.status === 'offline' || null;
      },
      60_000,
    );
    await srv.must('POST', `/api/interruptions/${intr.id}/submit`, { result: 'proceed' });
    const d = await srv.waitDeployment(dep.id, 60_000);
    expect(d.state).toBe('success');
    const t = d.steps[1].targets.find((x: any) => x.machineName === 'solo-01');
    expect(t.state).toBe('skipped');
    expect(t.skipReason).toMatch(/^offline/);
    expect(existsSync(join(srv.dir, 'agent-solo-01', 'times.log'))).toBe(false);
    expect(runsOf('skip').size).toBe(6);
  }, 120_000);
});
