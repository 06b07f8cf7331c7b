/**
 * The planner: given where a deployment stands, decides what happens next. Pure: no I/O, no clock, no randomness,
 * so every rule of execution (docs/architecture.md, "Execution rules") can be tested exhaustively in planner.spec.ts.
 *
 * The dispatcher (dispatcher.ts) loads a deployment's steps and target runs, calls `plan`, applies the
 * decision in one transaction, and takes a lease for each target the planner starts. The planner proposes targets
 * within the window; the lease rows in the database are what make the window hold across server processes (a
 * proposal that loses the race for a slot simply waits for the next round).
 *
 * A step's rollout (docs/architecture.md, "Execution rules"): its targets are cut into batches, in the order they
 * go. A batch runs in the sliding window; once every target of it has ended, the step passes its gates before the
 * next batch starts: the bake (a wait, `gateUntil`), then the bake's health checks (one on each target of the batch
 * that succeeded, in the window too), then a person's approval. The gates are states of the step (`gate`), so a
 * round can be planned from the database alone, after a restart or on another node; the clock comes in as `now`.
 */
export type RunState = 'pending' | 'running' | 'success' | 'failed' | 'skipped' | 'cancelled';
export type StepCondition = 'success' | 'failure' | 'always';
export type StartTrigger = 'afterPrevious' | 'withPrevious';

export type CheckState = 'pending' | 'running' | 'success' | 'failed';
export type Gate = 'bake' | 'health-check' | 'approval';

export interface PlanTarget {
  id: string;
  state: RunState;
  /** Its batch, from 0 (default 0: one batch). */
  batch?: number;
  /** Its health check at the end of its batch's bake. */
  bakeCheck?: CheckState | null;
}

/** What a step does between its batches (all optional: none is a plain rolling step). */
export interface PlanPolicy {
  bakeSeconds?: number;
  healthCheck?: boolean;
  approveEachBatch?: boolean;
  skipUnavailable?: boolean;
}

export interface PlanStep {
  index: number;
  name: string;
  state: RunState;
  condition: StepCondition;
  startTrigger: StartTrigger;
  /** Resolved window: at most this many targets in flight (>= 1 when there are targets). */
  window: number;
  /** Resolved failure budget: the step fails once more than this many targets failed. */
  maxFailures: number;
  /** In the stable order targets are taken (by machine name). */
  targets: PlanTarget[];
  /** An operator aborted the step (guided failure or manual intervention): it fails whatever its budget. */
  aborted?: boolean;
  /** How many batches (default 1). */
  batchCount?: number;
  /** The batch in progress or waited on; null or absent before the step starts. */
  currentBatch?: number | null;
  gate?: Gate | null;
  /** The bake's end (ms), while `gate` is `bake`. */
  gateUntil?: number | null;
  policy?: PlanPolicy;
}

export interface PlanInput {
  steps: PlanStep[];
  /** The operator asked to cancel: nothing new starts; the deployment ends `cancelled` once nothing runs. */
  cancelling: boolean;
  /**
   * Target runs whose machine is busy with another deployment: they cannot start now, and hold no slot; the targets
   * after them take the free slots.
   */
  busy?: ReadonlySet<string>;
  /** The clock (ms): bakes end by it. */
  now?: number;
  /** The operator paused the deployment: nothing new starts (no target, no check, no step, no gate passed). */
  paused?: boolean;
  /**
   * Targets whose machine is offline, disabled or unhealthy, with the reason: a step with `skipUnavailable` skips them
   * when it starts.
   */
  unavailable?: ReadonlyMap<string, string>;
}

export type SkipReason = 'condition' | 'no-targets' | 'cancelled';

/** A step's batch or gate changed: the new values, to store. */
export interface GateChange {
  stepIndex: number;
  currentBatch: number;
  gate: Gate | null;
  gateUntil: number | null;
  /** What happened, for the log. */
  event: 'batch-started' | 'bake-started' | 'checks-started' | 'approval-asked';
}

export interface PlanDecision {
  /** Step state changes, in the order they happened. */
  steps: Array<{ index: number; state: RunState; reason?: SkipReason }>;
  /** Target runs whose state the planner settles without running them (never started: skipped or cancelled). */
  targets: Array<{ stepIndex: number; targetId: string; state: RunState; reason?: string }>;
  /** Target runs to start now, in order; each needs a lease. */
  start: Array<{ stepIndex: number; targetId: string }>;
  /** Batches started and gates entered, in order. */
  gates: GateChange[];
  /** Targets whose bake check is due (marked pending when the health-check gate opens). */
  checksDue: Array<{ stepIndex: number; targetId: string }>;
  /** Bake checks to start now, in order; each needs a lease (they take window slots like targets). */
  checks: Array<{ stepIndex: number; targetId: string }>;
  /** Batch approvals to ask for: the batch they let go and its targets. */
  approvals: Array<{ stepIndex: number; batch: number; targetIds: string[] }>;
  /** Busy target runs the step would have started now: they wait for their machines (and keep their place there). */
  waiting: Array<{ stepIndex: number; targetId: string }>;
  /**
   * Target runs likely to start next (the next window's worth of each running step, and the first window of the
   * steps that would start after them as things stand): their agents can get packages ready ahead of their lease.
   */
  next: Array<{ stepIndex: number; targetId: string }>;
  /** Set when the deployment is over. */
  outcome?: 'success' | 'failed' | 'cancelled';
}

const TERMINAL: ReadonlySet<RunState> = new Set(['success', 'failed', 'skipped', 'cancelled']);
export const isTerminal = (s: RunState) => TERMINAL.has(s);

/** Consecutive steps joined by `withPrevious` start together; the next `afterPrevious` step waits for all of them. */
export function groupSteps<T extends Pick<PlanStep, 'startTrigger'>>(steps: T[]): T[][] {
  const groups: T[][] = [];
  for (const s of steps) {
    if (s.startTrigger === 'withPrevious' && groups.length) groups[groups.length - 1].push(s);
    else groups.push([s]);
  }
  return groups;
}

export function shouldRun(condition: StepCondition, failedSoFar: boolean): boolean {
  if (condition === 'always') return true;
  return condition === 'failure' ? failedSoFar : !failedSoFar;
}

export function plan(input: PlanInput): PlanDecision {
  const decision: PlanDecision = {
    steps: [],
    targets: [],
    start: [],
    gates: [],
    checksDue: [],
    checks: [],
    approvals: [],
    waiting: [],
    next: [],
  };
  // Work on a copy so that a step's changes are visible to the rest of this round (a skipped step lets the next
  // group start in the same round) without touching the caller's data.
  const steps = input.steps.map((s) => ({ ...s, targets: s.targets.map((t) => ({ ...t })) }));
  const setStep = (s: PlanStep, state: RunState, reason?: SkipReason) => {
    s.state = state;
    decision.steps.push(reason ? { index: s.index, state, reason } : { index: s.index, state });
  };
  const settleTarget = (s: PlanStep, t: PlanTarget, state: RunState, reason?: string) => {
    t.state = state;
    decision.targets.push(
      reason ? { stepIndex: s.index, targetId: t.id, state, reason } : { stepIndex: s.index, targetId: t.id, state },
    );
  };

  let failedSoFar = false;
  const groups = groupSteps(steps);
  for (const [g, group] of groups.entries()) {
    // Conditions of steps that start together are judged on what happened before the group, not on each other.
    const failedBeforeGroup = failedSoFar;
    for (const step of group) {
      if (step.state === 'pending') {
        if (input.cancelling) {
          setStep(step, 'cancelled', 'cancelled');
          step.targets.forEach((t) => settleTarget(step, t, 'cancelled'));
          continue;
        }
        if (!shouldRun(step.condition, failedBeforeGroup)) {
          setStep(step, 'skipped', 'condition');
          step.targets.forEach((t) => settleTarget(step, t, 'skipped'));
          continue;
        }
        if (step.targets.length === 0) {
          setStep(step, 'skipped', 'no-targets');
          continue;
        }
        if (input.paused) continue;
        setStep(step, 'running');
        if (step.policy?.skipUnavailable)
          for (const t of step.targets) {
            const why = input.unavailable?.get(t.id);
            if (why && t.state === 'pending') settleTarget(step, t, 'skipped', why);
          }
        openBatch(step, 0, decision);
      }
      if (step.state === 'running') advanceStep(step, input, decision, setStep, settleTarget);
    }
    for (const step of group) if (step.state === 'failed') failedSoFar = true;
    if (!group.every((s) => isTerminal(s.state))) {
      if (!input.cancelling) {
        for (const step of groups[g + 1] ?? []) {
          if (step.state !== 'pending' || !shouldRun(step.condition, failedSoFar)) continue;
          for (const t of step.targets
            .filter((x) => x.state === 'pending' && (x.batch ?? 0) === 0)
            .slice(0, step.window))
            decision.next.push({ stepIndex: step.index, targetId: t.id });
        }
      }
      return decision;
    }
  }
  if (input.cancelling) decision.outcome = 'cancelled';
  else decision.outcome = failedSoFar ? 'failed' : 'success';
  return decision;
}

/** The step's batch `batch` starts now (its gates are behind it). */
function openBatch(step: PlanStep, batch: number, decision: PlanDecision) {
  step.currentBatch = batch;
  step.gate = null;
  step.gateUntil = null;
  decision.gates.push({
    stepIndex: step.index,
    currentBatch: batch,
    gate: null,
    gateUntil: null,
    event: 'batch-started',
  });
}

function enterGate(step: PlanStep, gate: Gate, until: number | null, decision: PlanDecision) {
  step.gate = gate;
  step.gateUntil = until;
  decision.gates.push({
    stepIndex: step.index,
    currentBatch: step.currentBatch ?? 0,
    gate,
    gateUntil: until,
    event: gate === 'bake' ? 'bake-started' : gate === 'health-check' ? 'checks-started' : 'approval-asked',
  });
}

function advanceStep(
  step: PlanStep,
  input: PlanInput,
  decision: PlanDecision,
  setStep: (s: PlanStep, state: RunState, reason?: SkipReason) => void,
  settleTarget: (s: PlanStep, t: PlanTarget, state: RunState) => void,
) {
  const { cancelling, busy, paused } = input;
  const now = input.now ?? 0;
  const policy = step.policy ?? {};
  const batches = Math.max(1, step.batchCount ?? 1);
  const inBatch = (t: PlanTarget, b: number) => (t.batch ?? 0) === b;
  const running = step.targets.filter((t) => t.state === 'running').length;
  const checking = step.targets.filter((t) => t.bakeCheck === 'running').length;
  const failed = step.targets.filter((t) => t.state === 'failed').length;
  const overBudget = failed > step.maxFailures || !!step.aborted;

  if (cancelling || overBudget) {
    // Runs and checks in flight finish (or are being cancelled); nothing new starts; targets never started settle.
    if (running > 0 || checking > 0) return;
    const leftState: RunState = cancelling ? 'cancelled' : 'skipped';
    step.targets.filter((t) => t.state === 'pending').forEach((t) => settleTarget(step, t, leftState));
    setStep(step, cancelling && !overBudget ? 'cancelled' : 'failed');
    return;
  }

  // A batch that ends passes its gates in the same round when they are open (no bake, no check, no approval).
  for (let guard = 0; guard <= batches * 4; guard++) {
    const current = step.currentBatch ?? 0;
    const gate = step.gate ?? null;
    if (gate === 'approval') return; // a person (or the approval's timeout) moves the step on
    if (gate === null) {
      const pending = step.targets.filter((t) => t.state === 'pending' && inBatch(t, current));
      const runningHere = step.targets.filter((t) => t.state === 'running' && inBatch(t, current)).length;
      if (pending.length || runningHere) {
        if (!paused) startWithin(step, pending, step.window - running - checking, busy, decision);
        return;
      }
      // The batch has ended.
      if (current >= batches - 1) {
        setStep(step, 'success');
        return;
      }
      if (paused) return;
      if (policy.bakeSeconds) enterGate(step, 'bake', now + policy.bakeSeconds * 1000, decision);
      else if (!passedGates(step, decision)) return;
      continue;
    }
    if (paused) return;
    if (gate === 'bake') {
      if (now < (step.gateUntil ?? 0)) return;
      const checked = step.targets.filter((t) => inBatch(t, current) && t.state === 'success');
      if (policy.healthCheck && checked.length) {
        enterGate(step, 'health-check', null, decision);
        for (const t of checked) {
          t.bakeCheck = 'pending';
          decision.checksDue.push({ stepIndex: step.index, targetId: t.id });
        }
        continue;
      }
      if (!passedGates(step, decision)) return;
      continue;
    }
    // gate === 'health-check': the batch's checks run in the window; a failed one fails its target (counted above).
    const due = step.targets.filter((t) => inBatch(t, current) && t.bakeCheck === 'pending');
    if (due.length || checking) {
      let free = step.window - running - checking;
      for (const t of due) {
        if (free <= 0) break;
        if (busy?.has(t.id)) continue;
        decision.checks.push({ stepIndex: step.index, targetId: t.id });
        free--;
      }
      return;
    }
    if (!passedGates(step, decision)) return;
  }
}

/**
 * After the bake and its checks: the approval when the step asks for one (the step waits on it), else the next batch
 * opens. Returns whether the step may go on in this round.
 */
function passedGates(step: PlanStep, decision: PlanDecision): boolean {
  const next = (step.currentBatch ?? 0) + 1;
  if (step.policy?.approveEachBatch) {
    enterGate(step, 'approval', null, decision);
    decision.approvals.push({
      stepIndex: step.index,
      batch: next,
      targetIds: step.targets.filter((t) => (t.batch ?? 0) === next && t.state === 'pending').map((t) => t.id),
    });
    return false;
  }
  openBatch(step, next, decision);
  return true;
}

/** The free slots go to the first pending targets in order whose machines are free; busy ones met on the way wait. */
function startWithin(
  step: PlanStep,
  pending: PlanTarget[],
  free: number,
  busy: ReadonlySet<string> | undefined,
  decision: PlanDecision,
) {
  let i = 0;
  for (; i < pending.length && free > 0; i++) {
    const t = pending[i];
    if (busy?.has(t.id)) decision.waiting.push({ stepIndex: step.index, targetId: t.id });
    else {
      decision.start.push({ stepIndex: step.index, targetId: t.id });
      free--;
    }
  }
  for (const t of pending.slice(i, i + step.window)) decision.next.push({ stepIndex: step.index, targetId: t.id });
}
