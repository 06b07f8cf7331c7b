/**
 * The planner: given where a deployment stands, decides what happens next. Pure: no I/O, no clock, no randomness,
 * so every rule of execution (docs/architecture.md, "Execution rules") can be tested exhaustively in planner.spec.ts.
 *
 * The dispatcher (dispatcher.ts) loads a deployment's steps and target runs, calls `plan`, applies the
 * decision in one transaction, and takes a lease for each target the planner starts. The planner proposes targets
 * within the window; the lease rows in the database are what make the window hold across server processes (a
 * proposal that loses the race for a slot simply waits for the next round).
 */
export type RunState = 'pending' | 'running' | 'success' | 'failed' | 'skipped' | 'cancelled';
export type StepCondition = 'success' | 'failure' | 'always';
export type StartTrigger = 'afterPrevious' | 'withPrevious';

export interface PlanTarget {
  id: string;
  state: RunState;
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
}

export type SkipReason = 'condition' | 'no-targets' | 'cancelled';

export interface PlanDecision {
  /** Step state changes, in the order they happened. */
  steps: Array<{ index: number; state: RunState; reason?: SkipReason }>;
  /** Target runs whose state the planner settles without running them (never started: skipped or cancelled). */
  targets: Array<{ stepIndex: number; targetId: string; state: RunState }>;
  /** Target runs to start now, in order; each needs a lease. */
  start: Array<{ stepIndex: number; targetId: string }>;
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
  const decision: PlanDecision = { steps: [], targets: [], start: [], waiting: [], next: [] };
  // Work on a copy so that a step's changes are visible to the rest of this round (a skipped step lets the next
  // group start in the same round) without touching the caller's data.
  const steps = input.steps.map((s) => ({ ...s, targets: s.targets.map((t) => ({ ...t })) }));
  const setStep = (s: PlanStep, state: RunState, reason?: SkipReason) => {
    s.state = state;
    decision.steps.push(reason ? { index: s.index, state, reason } : { index: s.index, state });
  };
  const settleTarget = (s: PlanStep, t: PlanTarget, state: RunState) => {
    t.state = state;
    decision.targets.push({ stepIndex: s.index, targetId: t.id, state });
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
        setStep(step, 'running');
      }
      if (step.state === 'running') advanceStep(step, input.cancelling, input.busy, decision, setStep, settleTarget);
    }
    for (const step of group) if (step.state === 'failed') failedSoFar = true;
    if (!group.every((s) => isTerminal(s.state))) {
      if (!input.cancelling) {
        for (const step of groups[g + 1] ?? []) {
          if (step.state !== 'pending' || !shouldRun(step.condition, failedSoFar)) continue;
          for (const t of step.targets.filter((x) => x.state === 'pending').slice(0, step.window))
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

function advanceStep(
  step: PlanStep,
  cancelling: boolean,
  busy: ReadonlySet<string> | undefined,
  decision: PlanDecision,
  setStep: (s: PlanStep, state: RunState, reason?: SkipReason) => void,
  settleTarget: (s: PlanStep, t: PlanTarget, state: RunState) => void,
) {
  const running = step.targets.filter((t) => t.state === 'running').length;
  const failed = step.targets.filter((t) => t.state === 'failed').length;
  const pending = step.targets.filter((t) => t.state === 'pending');
  const overBudget = failed > step.maxFailures || !!step.aborted;

  if (cancelling || overBudget) {
    // Runs in flight finish (or are being cancelled); nothing new starts; targets never started are settled.
    if (running > 0) return;
    const leftState: RunState = cancelling ? 'cancelled' : 'skipped';
    pending.forEach((t) => settleTarget(step, t, leftState));
    setStep(step, cancelling && !overBudget ? 'cancelled' : 'failed');
    return;
  }
  // The free slots go to the first pending targets in order whose machines are free; busy ones met on the way wait.
  let free = Math.max(0, step.window - running);
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
  if (pending.length === 0 && running === 0) setStep(step, 'success');
}
