/**
 * How long a deployment will take, from how long its steps' target runs took before (the preview's
 * `estimatedSeconds`). Pure: the history is read by the repository (`stepDurationMedians`), the layout by
 * `layoutDeployment`; this only does the arithmetic, so that estimate.spec.ts can pin it down.
 */
import { groupSteps } from '../orchestration/planner.js';

export interface EstimatedStep {
  name: string;
  willRun: boolean;
  startTrigger: 'afterPrevious' | 'withPrevious';
  runsOn: 'targets' | 'server';
  /** The resolved window: at most this many targets of the step in flight. */
  window: number;
  /** The number of targets in each batch, in order (none for a step on the server). */
  batches: number[];
  /** Waited after each batch but the last. */
  bakeSeconds?: number;
}

/**
 * Each step's estimate and the whole deployment's, in seconds (rounded up), from the median duration of a target run
 * of each step (by step name).
 *
 * - A step that will not run: 0.
 * - A step without a median: null (nothing to go by).
 * - Otherwise: per batch, its targets go a window at a time, each pass taking the median:
 *   ceil(batch size / window) × median, summed over the batches, plus the bake between batches. A step on the server
 *   is one pass.
 * - The deployment: steps that start together (a `withPrevious` run, see `groupSteps`) take as long as the longest of
 *   them; groups add up. Null when a step that will run has no estimate.
 */
export function estimateDeployment(
  steps: EstimatedStep[],
  medians: ReadonlyMap<string, number>,
): { steps: Array<number | null>; total: number | null } {
  const exact = steps.map((s) => stepSeconds(s, medians.get(s.name)));
  let total: number | null = 0;
  for (const group of groupSteps(steps.map((s, i) => ({ startTrigger: s.startTrigger, seconds: exact[i] })))) {
    if (group.some((s) => s.seconds === null)) {
      total = null;
      break;
    }
    total += Math.max(...group.map((s) => s.seconds!));
  }
  return {
    steps: exact.map((s) => (s === null ? null : Math.ceil(s))),
    total: total === null ? null : Math.ceil(total),
  };
}

function stepSeconds(s: EstimatedStep, median: number | undefined): number | null {
  if (!s.willRun) return 0;
  if (median === undefined || !Number.isFinite(median)) return null;
  const sizes = s.runsOn === 'server' ? [1] : s.batches;
  const window = Math.max(1, s.window);
  const passes = sizes.reduce((n, size) => n + Math.ceil(size / window), 0);
  return passes * Math.max(0, median) + (s.bakeSeconds ?? 0) * Math.max(0, sizes.length - 1);
}
