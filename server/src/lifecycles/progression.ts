/**
 * Where a release may go next under a lifecycle (Octopus semantics), as a pure function of the lifecycle's phases
 * and the environments where the release has succeeded. The server's deployment check, the progression endpoint and
 * their tests all read it from here, so the rule has one definition.
 */

export interface Phase {
  name: string;
  environmentIds: string[];
  /** How many of the phase's environments must succeed before the next phase opens; 0 means all of them. */
  minimumEnvironmentsBeforePromotion: number;
  /** Never blocks the phases after it: a release may skip it (and may still deploy to it once reached). */
  optional: boolean;
}

export interface PhaseProgress {
  /** At least the required number of the phase's environments succeeded. */
  complete: boolean;
  /** Every non-optional phase before it is complete (the first phase always is). */
  reachable: boolean;
  /** The number of its environments that must succeed for it to be complete. */
  required: number;
  /** The number of its environments where the release succeeded. */
  succeeded: number;
  /** When not reachable: the index of the first earlier phase that blocks it. */
  blockedBy?: number;
}

export interface Progression {
  phases: PhaseProgress[];
  /** Environments the release may be deployed to now. */
  allowed: Set<string>;
}

/** The number of a phase's environments that must succeed (0, or more than it has, means all). */
export const requiredOf = (p: Phase) =>
  p.minimumEnvironmentsBeforePromotion > 0 && p.minimumEnvironmentsBeforePromotion <= p.environmentIds.length
    ? p.minimumEnvironmentsBeforePromotion
    : p.environmentIds.length;

/**
 * A release's progression: which phases are complete and reachable, and the environments allowed now: those of
 * reachable phases, plus those where the release already succeeded (a redeploy), as long as they are in a phase.
 * An environment in no phase is never allowed.
 */
export function progression(phases: readonly Phase[], succeeded: ReadonlySet<string>): Progression {
  const out: PhaseProgress[] = [];
  const allowed = new Set<string>();
  let blocker: number | undefined;
  phases.forEach((p, i) => {
    const done = new Set(p.environmentIds.filter((e) => succeeded.has(e))).size;
    const required = requiredOf(p);
    const complete = done >= required;
    const reachable = blocker === undefined;
    out.push({ complete, reachable, required, succeeded: done, ...(reachable ? {} : { blockedBy: blocker }) });
    for (const e of p.environmentIds) if (reachable || succeeded.has(e)) allowed.add(e);
    if (blocker === undefined && !p.optional && !complete) blocker = i;
  });
  return { phases: out, allowed };
}

/** Why an environment is not allowed, for people (the 409 of a deployment and the progression's `reason`). */
export function refusalOf(
  phases: readonly Phase[],
  prog: Progression,
  environmentId: string,
  names: { release: string; environment: string; lifecycle: string },
): string | null {
  if (prog.allowed.has(environmentId)) return null;
  const at = phases.findIndex((p) => p.environmentIds.includes(environmentId));
  if (at < 0)
    return `environment '${names.environment}' is in no phase of lifecycle '${names.lifecycle}': release ${names.release} cannot be deployed there`;
  const b = prog.phases[at].blockedBy!;
  const p = phases[b];
  const how = prog.phases[b];
  return (
    `release ${names.release} must first succeed in phase '${p.name}' (${how.required} of ${p.environmentIds.length} ` +
    `environments; ${how.succeeded} so far) before it can go to '${names.environment}'`
  );
}
