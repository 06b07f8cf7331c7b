/**
 * How a release lays out in an environment: for each step, its targets (in name order), resolved window and
 * failure budget, and which actions will run there and why not. Pure, so that creating a deployment and previewing
 * one can never disagree.
 */
import { resolveBatches, resolveMaxFailures, resolveWindow, type Action, type Step } from '#shared/process/index.js';

export interface LayoutMachine {
  id: string;
  name: string;
  roles: string[];
  labels?: Record<string, string>;
}

export interface LaidOutAction {
  name: string;
  type: Action['type'];
  willRun: boolean;
  skipReason?: string;
}

export interface LaidOutStep {
  index: number;
  name: string;
  runsOn: 'targets' | 'server';
  /** In the order they go: batch by batch (spread over a label's values with `spreadBy`). */
  targets: LayoutMachine[];
  /** The number of targets in each batch, in order; they add up to `targets.length` (none for a server step). */
  batches: number[];
  window: number;
  maxFailures: number;
  condition: 'success' | 'failure' | 'always';
  startTrigger: 'afterPrevious' | 'withPrevious';
  actions: LaidOutAction[];
  /** Set when the step cannot run at all in this deployment. */
  skipReason?: string;
}

/** Why an action will not run in this deployment, or undefined when it will. */
export function actionSkipReason(a: Action, environmentId: string, channelId: string): string | undefined {
  if (a.disabled) return 'disabled';
  if (a.environmentIds?.length && !a.environmentIds.includes(environmentId))
    return 'environment: limited to other environments';
  if (a.excludedEnvironmentIds?.includes(environmentId)) return 'environment: excluded from this environment';
  if (a.channelIds?.length && !a.channelIds.includes(channelId))
    return "channel: limited to other channels than the release's";
  return undefined;
}

const byName = (a: LayoutMachine, b: LayoutMachine) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/**
 * Targets round-robin over the values of a label: one of each value in turn (values in name order, machines of a
 * value in the order given, machines without the label as a value of their own after the others), so any run of
 * consecutive targets, and so every batch, is spread as evenly as the values allow.
 */
export function spreadOver(targets: LayoutMachine[], label: string): LayoutMachine[] {
  const groups = new Map<string, LayoutMachine[]>();
  for (const t of targets) {
    const v = t.labels?.[label];
    const key = v === undefined ? '\uffff' : v;
    groups.set(key, [...(groups.get(key) ?? []), t]);
  }
  const queues = [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, q]) => q);
  const out: LayoutMachine[] = [];
  for (let i = 0; out.length < targets.length; i++) for (const q of queues) if (i < q.length) out.push(q[i]);
  return out;
}

export interface LayoutOptions {
  /**
   * Machine ids in the order targets go (a rollback: newest first); machines it leaves out come after, by name.
   * Without it, machines go in name order.
   */
  order?: string[];
  /**
   * Per step index, the only machines (ids) that step may target (a retry: the targets that did not succeed); a step
   * not in it may target every machine given. Windows, failure budgets and batches resolve over what is left.
   */
  only?: ReadonlyMap<number, ReadonlySet<string>>;
}

export function layoutDeployment(
  steps: Step[],
  environmentId: string,
  channelId: string,
  machines: LayoutMachine[],
  options: LayoutOptions = {},
): LaidOutStep[] {
  const rank = new Map((options.order ?? []).map((id, i) => [id, i]));
  const inOrder = (a: LayoutMachine, b: LayoutMachine) =>
    (rank.get(a.id) ?? Infinity) - (rank.get(b.id) ?? Infinity) || byName(a, b);
  return steps.map((step, index) => {
    const runsOn = step.targetRoles?.length ? 'targets' : 'server';
    const matching =
      runsOn === 'targets'
        ? machines
            .filter(
              (m) =>
                m.roles.some((r) => step.targetRoles!.includes(r)) && (options.only?.get(index)?.has(m.id) ?? true),
            )
            .sort(inOrder)
        : [];
    const targets = step.spreadBy ? spreadOver(matching, step.spreadBy) : matching;
    const actions = step.actions.map((a) => {
      const skipReason = actionSkipReason(a, environmentId, channelId);
      return skipReason
        ? { name: a.name, type: a.type, willRun: false, skipReason }
        : { name: a.name, type: a.type, willRun: true };
    });
    let skipReason: string | undefined;
    if (actions.every((a) => !a.willRun)) skipReason = 'every action is skipped';
    else if (runsOn === 'targets' && targets.length === 0)
      skipReason = `no targets with the role${step.targetRoles!.length > 1 ? 's' : ''} ${step.targetRoles!.join(', ')}`;
    const count = runsOn === 'server' ? 1 : targets.length;
    return {
      index,
      name: step.name,
      runsOn,
      targets,
      batches: runsOn === 'targets' ? resolveBatches(step.batches, targets.length) : [],
      window: resolveWindow(step.windowSize, count),
      maxFailures: resolveMaxFailures(step.maxFailures, count),
      condition: step.condition ?? 'success',
      startTrigger: step.startTrigger ?? 'afterPrevious',
      actions,
      ...(skipReason ? { skipReason } : {}),
    };
  });
}
