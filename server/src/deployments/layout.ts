/**
 * How a release lays out in an environment: for each step, its targets (in name order), resolved window and
 * failure budget, and which actions will run there and why not. Pure, so that creating a deployment and previewing
 * one can never disagree.
 */
import { resolveMaxFailures, resolveWindow, type Action, type Step } from '#shared/process/index.js';

export interface LayoutMachine {
  id: string;
  name: string;
  roles: string[];
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
  targets: LayoutMachine[];
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

export function layoutDeployment(
  steps: Step[],
  environmentId: string,
  channelId: string,
  machines: LayoutMachine[],
): LaidOutStep[] {
  return steps.map((step, index) => {
    const runsOn = step.targetRoles?.length ? 'targets' : 'server';
    const targets =
      runsOn === 'targets'
        ? machines.filter((m) => m.roles.some((r) => step.targetRoles!.includes(r))).sort(byName)
        : [];
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
      window: resolveWindow(step.windowSize, count),
      maxFailures: resolveMaxFailures(step.maxFailures, count),
      condition: step.condition ?? 'success',
      startTrigger: step.startTrigger ?? 'afterPrevious',
      actions,
      ...(skipReason ? { skipReason } : {}),
    };
  });
}
