import { groupSteps, plan, type PlanInput, type PlanStep, type RunState } from './planner.js';
import { resolveMaxFailures, resolveWindow } from '#shared/process/index.js';

function step(index: number, targets: RunState[], over: Partial<PlanStep> = {}): PlanStep {
  return {
    index,
    name: `S${index}`,
    state: 'pending',
    condition: 'success',
    startTrigger: 'afterPrevious',
    window: targets.length,
    maxFailures: 0,
    targets: targets.map((state, i) => ({ id: `s${index}t${i}`, state })),
    ...over,
  };
}
const input = (steps: PlanStep[], over: Partial<PlanInput> = {}): PlanInput => ({ steps, cancelling: false, ...over });

/**
 * Drives a deployment to its end with the planner alone, finishing running targets one at a time with the outcome
 * `outcomeOf` gives, and records the largest number of targets of one step ever in flight.
 */
function simulate(steps: PlanStep[], outcomeOf: (targetId: string) => RunState = () => 'success') {
  let maxInFlight = 0;
  const startedOrder: string[] = [];
  for (let round = 0; round < 10_000; round++) {
    const d = plan(input(steps));
    for (const u of d.steps) steps[u.index].state = u.state;
    for (const u of d.targets) steps[u.stepIndex].targets.find((t) => t.id === u.targetId)!.state = u.state;
    for (const s of d.start) {
      steps[s.stepIndex].targets.find((t) => t.id === s.targetId)!.state = 'running';
      startedOrder.push(s.targetId);
    }
    for (const s of steps) maxInFlight = Math.max(maxInFlight, s.targets.filter((t) => t.state === 'running').length);
    if (d.outcome) return { outcome: d.outcome, maxInFlight, startedOrder, steps };
    // Finish the oldest running target (sliding window: its slot frees for the next one).
    const running = steps.flatMap((s) => s.targets).find((t) => t.state === 'running');
    if (!running) throw new Error('planner stalled: nothing running and no outcome');
    running.state = outcomeOf(running.id);
  }
  throw new Error('no outcome');
}

describe('window arithmetic', () => {
  // A window is a count capped at the targets, or a percentage rounded down but never below one target.
  it.each([
    [undefined, 7, 7],
    [2, 7, 2],
    [10, 3, 3],
    ['25%', 10, 2],
    ['25%', 3, 1],
    ['50%', 10, 5],
    ['100%', 4, 4],
    ['1%', 1, 1],
    [2, 0, 0],
  ])('window %p of %p targets = %p', (w, n, expected) => {
    expect(resolveWindow(w as number | string | undefined, n)).toBe(expected);
  });

  // The failure budget defaults to zero and a percentage rounds down (10% of 9 targets tolerates none).
  it.each([
    [undefined, 10, 0],
    [1, 10, 1],
    ['10%', 10, 1],
    ['10%', 9, 0],
    ['50%', 5, 2],
  ])('maxFailures %p of %p targets = %p', (m, n, expected) => {
    expect(resolveMaxFailures(m as number | string | undefined, n)).toBe(expected);
  });
});

describe('plan: rolling window', () => {
  // A sliding window: never more than W in flight, W in flight while enough targets wait, targets in order.
  it.each([
    [4, 2],
    [5, 2],
    [10, 3],
    [10, 1],
    [7, 7],
    [1, 5],
  ])('%p targets with window %p', (n, w) => {
    const steps = [step(0, Array(n).fill('pending'), { window: Math.min(w, n) })];
    const r = simulate(steps);
    expect(r.outcome).toBe('success');
    expect(r.maxInFlight).toBe(Math.min(w, n));
    expect(r.startedOrder).toEqual(steps[0].targets.map((t) => t.id));
  });

  // A freed slot starts the next target in the same round, not after the whole batch.
  it('starts the next target as soon as one slot frees', () => {
    const s = step(0, ['success', 'running', 'pending', 'pending'], { state: 'running', window: 2 });
    const d = plan(input([s]));
    expect(d.start).toEqual([{ stepIndex: 0, targetId: 's0t2' }]);
  });

  // Steps run top to bottom: the second step's targets wait until the first step is over.
  it('runs steps in order', () => {
    const steps = [step(0, ['running', 'pending'], { state: 'running', window: 1 }), step(1, ['pending', 'pending'])];
    const d = plan(input(steps));
    expect(d.start).toEqual([]);
    expect(d.steps).toEqual([]);
    const steps2 = [step(0, ['success', 'success'], { state: 'running', window: 1 }), step(1, ['pending', 'pending'])];
    const d2 = plan(input(steps2));
    expect(d2.steps).toEqual([
      { index: 0, state: 'success' },
      { index: 1, state: 'running' },
    ]);
    expect(d2.start.map((x) => x.targetId)).toEqual(['s1t0', 's1t1']);
  });

  // A step with no matching targets is skipped and the deployment goes on.
  it('skips a step without targets', () => {
    const d = plan(input([step(0, []), step(1, ['pending'])]));
    expect(d.steps[0]).toEqual({ index: 0, state: 'skipped', reason: 'no-targets' });
    expect(d.start.map((x) => x.targetId)).toEqual(['s1t0']);
  });
});

describe('plan: targets next in line (package prefetch)', () => {
  // The next window's worth of targets is named ahead, never one being started now, and only pending ones.
  it('names the next window of a running step', () => {
    const s = step(0, ['success', 'running', 'pending', 'pending', 'pending', 'pending'], {
      state: 'running',
      window: 2,
    });
    const d = plan(input([s]));
    expect(d.start.map((x) => x.targetId)).toEqual(['s0t2']);
    expect(d.next.map((x) => x.targetId)).toEqual(['s0t3', 's0t4']);
  });

  // The step after the running group gets its first window named too, unless its condition would skip it.
  it('looks into the next step only when it would run', () => {
    const steps = [
      step(0, ['running'], { state: 'running', window: 1 }),
      step(1, ['pending', 'pending', 'pending'], { window: 2 }),
    ];
    expect(plan(input(steps)).next.map((x) => x.targetId)).toEqual(['s1t0', 's1t1']);
    const onFailure = [
      step(0, ['running'], { state: 'running', window: 1 }),
      step(1, ['pending'], { condition: 'failure' }),
    ];
    expect(plan(input(onFailure)).next).toEqual([]);
    expect(plan(input(steps, { cancelling: true })).next).toEqual([]);
  });

  // Across a whole roll, every target that is started later was named ahead first (so its agent could prepare),
  // except the very first window, which starts in the first round.
  it.each([
    [10, 3],
    [7, 1],
    [5, 5],
  ])('every target after the first window is named before it starts (%p targets, window %p)', (n, w) => {
    const steps = [step(0, Array(n).fill('pending'), { window: w }), step(1, Array(n).fill('pending'), { window: w })];
    const named = new Set<string>();
    const late: string[] = [];
    for (let round = 0; round < 1_000; round++) {
      const d = plan(input(steps));
      for (const u of d.steps) steps[u.index].state = u.state;
      for (const st of d.start) {
        if (round > 0 && !named.has(st.targetId)) late.push(st.targetId);
        steps[st.stepIndex].targets.find((t) => t.id === st.targetId)!.state = 'running';
      }
      for (const x of d.next) named.add(x.targetId);
      if (d.outcome) break;
      steps.flatMap((s) => s.targets).find((t) => t.state === 'running')!.state = 'success';
    }
    expect(late).toEqual([]);
  });
});

describe('plan: failures', () => {
  // With the default budget of 0, the first failure stops new targets; runs in flight finish; the step fails and
  // later success-condition steps are skipped.
  it('a failed target fails the step and the deployment', () => {
    const steps = [step(0, ['pending', 'pending', 'pending', 'pending'], { window: 2 }), step(1, ['pending'])];
    const r = simulate(steps, (id) => (id === 's0t0' ? 'failed' : 'success'));
    expect(r.outcome).toBe('failed');
    expect(r.steps[0].state).toBe('failed');
    // t1 was already in flight and finished; t2 and t3 never started.
    expect(r.startedOrder).toEqual(['s0t0', 's0t1']);
    expect(r.steps[0].targets.map((t) => t.state)).toEqual(['failed', 'success', 'skipped', 'skipped']);
    expect(r.steps[1].state).toBe('skipped');
  });

  it('waits for runs in flight before failing the step', () => {
    const s = step(0, ['failed', 'running', 'pending'], { state: 'running', window: 2 });
    const d = plan(input([s]));
    expect(d.start).toEqual([]);
    expect(d.steps).toEqual([]);
  });

  // maxFailures lets that many failures through and stops at the next one.
  it('keeps rolling within the failure budget', () => {
    const steps = [step(0, Array(5).fill('pending'), { window: 1, maxFailures: 1 })];
    const r = simulate(steps, (id) => (id === 's0t1' || id === 's0t3' ? 'failed' : 'success'));
    expect(r.startedOrder).toEqual(['s0t0', 's0t1', 's0t2', 's0t3']);
    expect(r.steps[0].state).toBe('failed');
    expect(r.outcome).toBe('failed');
    const ok = simulate([step(0, Array(5).fill('pending'), { window: 1, maxFailures: 1 })], (id) =>
      id === 's0t1' ? 'failed' : 'success',
    );
    expect(ok.steps[0].state).toBe('success');
    expect(ok.outcome).toBe('success');
  });
});

describe('plan: conditions and start triggers', () => {
  // After a failure: success steps are skipped, failure and always steps run.
  it('honours success, failure and always after a failure', () => {
    const steps = [
      step(0, ['pending']),
      step(1, ['pending'], { condition: 'success' }),
      step(2, ['pending'], { condition: 'failure' }),
      step(3, ['pending'], { condition: 'always' }),
    ];
    const r = simulate(steps, (id) => (id === 's0t0' ? 'failed' : 'success'));
    expect(r.steps.map((s) => s.state)).toEqual(['failed', 'skipped', 'success', 'success']);
    expect(r.outcome).toBe('failed');
  });

  // Without a failure, a failure-condition step is skipped.
  it('skips failure steps when all went well', () => {
    const r = simulate([
      step(0, ['pending']),
      step(1, ['pending'], { condition: 'failure' }),
      step(2, ['pending'], { condition: 'always' }),
    ]);
    expect(r.steps.map((s) => s.state)).toEqual(['success', 'skipped', 'success']);
    expect(r.outcome).toBe('success');
  });

  // withPrevious steps start together; the next afterPrevious step waits for all of them.
  it('starts withPrevious steps together', () => {
    const steps = [step(0, ['pending']), step(1, ['pending'], { startTrigger: 'withPrevious' }), step(2, ['pending'])];
    const d = plan(input(steps));
    expect(d.start.map((s) => s.targetId)).toEqual(['s0t0', 's1t0']);
    const mid = [
      step(0, ['success'], { state: 'running' }),
      step(1, ['running'], { state: 'running', startTrigger: 'withPrevious' }),
      step(2, ['pending']),
    ];
    expect(plan(input(mid)).start).toEqual([]);
  });

  it('groups steps by start trigger', () => {
    const g = groupSteps([
      { startTrigger: 'afterPrevious' as const, n: 0 },
      { startTrigger: 'withPrevious' as const, n: 1 },
      { startTrigger: 'afterPrevious' as const, n: 2 },
      { startTrigger: 'withPrevious' as const, n: 3 },
      { startTrigger: 'withPrevious' as const, n: 4 },
    ]);
    expect(g.map((x) => x.map((s) => s.n))).toEqual([
      [0, 1],
      [2, 3, 4],
    ]);
  });
});

describe('plan: cancel', () => {
  // Cancel starts nothing new, lets running targets report, then ends cancelled with the rest settled.
  it('stops new work and ends cancelled', () => {
    const steps = [step(0, ['success', 'running', 'pending'], { state: 'running', window: 2 }), step(1, ['pending'])];
    const d = plan(input(steps, { cancelling: true }));
    expect(d.start).toEqual([]);
    expect(d.outcome).toBeUndefined();
    steps[0].targets[1].state = 'cancelled';
    const d2 = plan(input(steps, { cancelling: true }));
    expect(d2.targets).toEqual([
      { stepIndex: 0, targetId: 's0t2', state: 'cancelled' },
      { stepIndex: 1, targetId: 's1t0', state: 'cancelled' },
    ]);
    expect(d2.outcome).toBe('cancelled');
  });
});

describe('targets whose machines are busy', () => {
  // A busy target holds no slot: the free slots go to the next targets in order whose machines are free, and the busy
  // ones met on the way are reported as waiting; targets beyond the slots are not.
  it('skips busy targets without holding their slots', () => {
    const s = step(0, ['pending', 'pending', 'pending', 'pending', 'pending'], { state: 'running', window: 2 });
    const d = plan(input([s], { busy: new Set(['s0t0', 's0t2']) }));
    expect(d.start.map((x) => x.targetId)).toEqual(['s0t1', 's0t3']);
    expect(d.waiting.map((x) => x.targetId)).toEqual(['s0t0', 's0t2']);
    expect(d.next.map((x) => x.targetId)).toEqual(['s0t4']);
  });

  // With every slot taken nothing waits (the busy target is not next yet); with all pending targets busy, none
  // starts and the step neither succeeds nor stalls as failed: it waits.
  it('waits without a slot, and never finishes a step over busy targets', () => {
    const full = step(0, ['running', 'running', 'pending'], { state: 'running', window: 2 });
    expect(plan(input([full], { busy: new Set(['s0t2']) })).waiting).toEqual([]);
    const blocked = step(0, ['success', 'pending', 'pending'], { state: 'running', window: 2 });
    const d = plan(input([blocked], { busy: new Set(['s0t1', 's0t2']) }));
    expect(d.start).toEqual([]);
    expect(d.waiting.map((x) => x.targetId)).toEqual(['s0t1', 's0t2']);
    expect(d.steps).toEqual([]);
    expect(d.outcome).toBeUndefined();
  });

  // Whatever is busy, the window is never exceeded and every target runs once its machine frees.
  it('keeps the window while machines free one by one', () => {
    const s = step(
      0,
      Array.from({ length: 8 }, () => 'pending' as RunState),
      { window: 3 },
    );
    const busy = new Set(['s0t0', 's0t1', 's0t5']);
    const started: string[] = [];
    for (let round = 0; started.length < 8; round++) {
      const d = plan(input([s], { busy }));
      for (const u of d.steps) s.state = u.state;
      expect(d.start.length + s.targets.filter((t) => t.state === 'running').length).toBeLessThanOrEqual(3);
      for (const x of d.start) {
        s.targets.find((t) => t.id === x.targetId)!.state = 'running';
        started.push(x.targetId);
      }
      const running = s.targets.find((t) => t.state === 'running');
      if (running) running.state = 'success';
      busy.delete([...busy][0] ?? ''); // one machine frees per round
      if (round > 50) throw new Error('stalled');
    }
    expect(new Set(started).size).toBe(8);
  });
});

describe('plan: batches, bake, health checks, approvals', () => {
  const rolloutStep = (n: number, sizes: number[], window: number, over: Partial<PlanStep> = {}): PlanStep => {
    const batchOf = sizes.flatMap((k, b) => Array<number>(k).fill(b));
    return {
      ...step(0, Array<RunState>(n).fill('pending'), { window, batchCount: sizes.length, ...over }),
      targets: Array.from({ length: n }, (_, i) => ({ id: `t${i}`, state: 'pending' as RunState, batch: batchOf[i] })),
    };
  };

  /**
   * Drives one step with the planner alone on a clock that moves 1 s per round: targets and checks finish one per
   * round (oldest first) with the given outcomes; approvals are answered by `answer`. Records when each target
   * started and ended, when each check ran, and the most in flight.
   */
  function drive(
    s: PlanStep,
    o: {
      outcome?: (id: string) => RunState;
      check?: (id: string) => 'success' | 'failed';
      answer?: (batch: number) => 'proceed' | 'abort' | 'wait';
      paused?: (round: number) => boolean;
    } = {},
  ) {
    const steps = [s];
    const started = new Map<string, number>();
    const ended = new Map<string, number>();
    const checked = new Map<string, number>();
    const events: string[] = [];
    let maxInFlight = 0;
    for (let round = 0, now = 0; round < 2_000; round++, now += 1000) {
      const d = plan({ steps, cancelling: false, now, paused: o.paused?.(round) });
      for (const u of d.steps) s.state = u.state;
      for (const u of d.targets) s.targets.find((t) => t.id === u.targetId)!.state = u.state;
      for (const g of d.gates) {
        Object.assign(s, { currentBatch: g.currentBatch, gate: g.gate, gateUntil: g.gateUntil });
        events.push(`${g.event}:${g.currentBatch}@${now}`);
      }
      for (const c of d.checksDue) s.targets.find((t) => t.id === c.targetId)!.bakeCheck = 'pending';
      for (const c of d.checks) s.targets.find((t) => t.id === c.targetId)!.bakeCheck = 'running';
      for (const x of d.start) {
        s.targets.find((t) => t.id === x.targetId)!.state = 'running';
        started.set(x.targetId, now);
      }
      const inFlight = s.targets.filter((t) => t.state === 'running' || t.bakeCheck === 'running').length;
      maxInFlight = Math.max(maxInFlight, inFlight);
      if (d.outcome) return { outcome: d.outcome, started, ended, checked, events, maxInFlight, step: s };
      for (const a of d.approvals) {
        const r = o.answer?.(a.batch) ?? 'proceed';
        if (r === 'proceed') Object.assign(s, { currentBatch: a.batch, gate: null });
        if (r === 'abort') s.aborted = true;
      }
      const running = s.targets.find((t) => t.state === 'running');
      if (running) {
        running.state = o.outcome?.(running.id) ?? 'success';
        ended.set(running.id, now);
        continue;
      }
      const checking = s.targets.find((t) => t.bakeCheck === 'running');
      if (checking) {
        checking.bakeCheck = o.check?.(checking.id) ?? 'success';
        if (checking.bakeCheck === 'failed') checking.state = 'failed';
        checked.set(checking.id, now);
      }
    }
    throw new Error('no outcome');
  }

  // Batches [1, 50%, 100%] of 6 (sizes 1, 3, 2) with a window of 2: no target of batch k+1 starts before every
  // target of batch k ended and its bake passed; inside a batch the window holds.
  it('never starts a batch before the one before it ended and baked', () => {
    const s = rolloutStep(6, [1, 3, 2], 2, { policy: { bakeSeconds: 5 } });
    const r = drive(s);
    expect(r.outcome).toBe('success');
    expect(r.maxInFlight).toBeLessThanOrEqual(2);
    const byBatch = [0, 1, 2].map((b) => s.targets.filter((t) => t.batch === b).map((t) => t.id));
    for (let b = 1; b < 3; b++) {
      const prevEnd = Math.max(...byBatch[b - 1].map((id) => r.ended.get(id)!));
      const firstStart = Math.min(...byBatch[b].map((id) => r.started.get(id)!));
      expect(firstStart).toBeGreaterThanOrEqual(prevEnd + 5000);
    }
    expect(r.events.filter((e) => e.startsWith('bake-started'))).toHaveLength(2); // none after the last batch
  });

  // The bake's checks run on each target of the batch that succeeded; a failure fails the target: with a budget of
  // 0 the roll stops there (later batches never start), with a budget of 1 it goes on.
  it.each([
    [0, 'failed', 2],
    [1, 'success', 6],
  ])(
    'a failed bake check with maxFailures %p: outcome %p, %p targets started',
    (maxFailures, outcome, startedCount) => {
      const s = rolloutStep(6, [2, 2, 2], 2, { maxFailures, policy: { bakeSeconds: 3, healthCheck: true } });
      const r = drive(s, { check: (id) => (id === 't1' ? 'failed' : 'success') });
      expect(r.outcome).toBe(outcome);
      expect(r.started.size).toBe(startedCount);
      expect(s.targets.find((t) => t.id === 't1')!.state).toBe('failed');
      // Checks run only after the bake: never before the batch's last target ended + the bake.
      expect(r.checked.get('t0')!).toBeGreaterThanOrEqual(Math.max(r.ended.get('t0')!, r.ended.get('t1')!) + 3000);
    },
  );

  // Without a bake the checks are not run a second time (the target's own check ran as its last action).
  it('runs no bake check without a bake', () => {
    const s = rolloutStep(4, [2, 2], 2, { policy: { healthCheck: true } });
    const r = drive(s);
    expect(r.outcome).toBe('success');
    expect(r.checked.size).toBe(0);
  });

  // An approval is asked before every batch after the first, naming that batch's targets; abort fails the step.
  it('asks for approval before each later batch', () => {
    const asked: number[] = [];
    const s = rolloutStep(5, [1, 2, 2], 5, { policy: { approveEachBatch: true } });
    const r = drive(s, { answer: (b) => (asked.push(b), 'proceed') });
    expect(r.outcome).toBe('success');
    expect(asked).toEqual([1, 2]);

    const s2 = rolloutStep(5, [1, 2, 2], 5, { policy: { approveEachBatch: true } });
    const r2 = drive(s2, { answer: (b) => (b === 2 ? 'abort' : 'proceed') });
    expect(r2.outcome).toBe('failed');
    expect(s2.targets.filter((t) => t.batch === 2).map((t) => t.state)).toEqual(['skipped', 'skipped']);
  });

  // Paused: nothing starts (targets, batches, checks) while running targets finish; on resume it goes on.
  it('starts nothing while paused', () => {
    const s = rolloutStep(4, [2, 2], 1, { policy: { bakeSeconds: 1 } });
    const r = drive(s, { paused: (round) => round >= 1 && round < 8 });
    expect(r.outcome).toBe('success');
    for (const [, at] of r.started) expect(at < 1000 || at >= 8000).toBe(true);
  });

  // skipUnavailable: unavailable targets are skipped with their reason when the step starts; the others roll.
  it('skips unavailable targets when the step starts', () => {
    const s = rolloutStep(3, [3], 3, { policy: { skipUnavailable: true } });
    const d = plan({ steps: [s], cancelling: false, unavailable: new Map([['t1', 'offline']]) });
    expect(d.targets).toEqual([{ stepIndex: 0, targetId: 't1', state: 'skipped', reason: 'offline' }]);
    expect(d.start.map((x) => x.targetId)).toEqual(['t0', 't2']);
    // Without the policy the same target runs (and fails after the lease TTL if its agent is gone).
    const plain = rolloutStep(3, [3], 3);
    expect(plan({ steps: [plain], cancelling: false, unavailable: new Map([['t1', 'offline']]) }).start).toHaveLength(
      3,
    );
  });
});
