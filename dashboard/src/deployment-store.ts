/**
 * The live deployment view's store: the latest deployment snapshot, the log entries (deduplicated by seq, in seq
 * order), the pending interruptions with the notes typed into them, the log's filter and follow switch, and the
 * steering buttons' request. The components (header, grid, log, interruptions) render from it; live events and
 * people's actions change it.
 *
 * It also keeps a clock (`now`) for the countdowns (a bake's end, a batch approval's timeout): it ticks once a second
 * only while the snapshot or the interruptions show something counting down, so a page with nothing to count renders
 * only when something changes.
 */
import type { Deployment, Interruption, LogEntry, StepRun } from './api.js';
import { Store } from './store.js';
import type { Problem } from './ui.js';

export interface DeploymentState {
  deployment: Deployment;
  /** The most targets seen running at once, per step, since the view opened (the grid shows it as data). */
  maxInFlight: Record<string, number>;
  /** Machine names by id, from the snapshot: the log names who said what. */
  machineNames: Record<string, string>;
  log: LogEntry[];
  lastSeq: number;
  /** '' all targets, 'server' the server's own lines, or a machine id. */
  filter: string;
  follow: boolean;
  interruptions: Interruption[];
  /** What was typed into each interruption's notes, by interruption id, kept until it is answered. */
  notes: Record<string, string>;
  /** Interruptions whose answer is on its way. */
  answering: Record<string, boolean>;
  interruptionErrors: Record<string, Problem | undefined>;
  error: Problem | null;
  /** The steering request on its way (pause, resume, retry failed, roll back): its buttons wait for it. */
  steering: Steer | null;
  /** Why the last steering request was refused, shown next to its buttons. */
  steerError: Problem | null;
  /** The clock the countdowns read (ms); moved on every second while one is shown (`ticking`). */
  now: number;
  ticking: boolean;
}

export type Steer = 'pause' | 'resume' | 'retry-failed' | 'rollback';

export const FINISHED = new Set(['success', 'failed', 'cancelled']);

/**
 * Whether something on the page still counts down at `now`: a step baking, or a pending batch approval with a
 * timeout. A deadline that has passed counts no more (the server moves on within a round; a paused deployment stays
 * at its bake's end until it is resumed).
 */
export const countsDown = (s: Pick<DeploymentState, 'deployment' | 'interruptions'>, now: number) => {
  const ahead = (iso?: string) => !!iso && new Date(iso).getTime() > now;
  return (
    s.deployment.steps.some((st) => st.gate === 'bake' && ahead(st.bakeUntil)) ||
    s.interruptions.some((i) => i.kind === 'batch-approval' && ahead(i.expiresAt))
  );
};

/** Whole seconds from `now` until `iso` (0 once it has passed). */
export const secondsUntil = (iso: string, now: number) =>
  Math.max(0, Math.ceil((new Date(iso).getTime() - now) / 1000));

export const inFlight = (s: StepRun) => s.targets.filter((t) => t.state === 'running').length;

export class DeploymentStore extends Store<DeploymentState> {
  private seen = new Set<number>();
  private clock: ReturnType<typeof setInterval> | undefined;

  constructor(deployment: Deployment) {
    super({
      deployment,
      maxInFlight: {},
      machineNames: {},
      log: [],
      lastSeq: 0,
      filter: '',
      follow: true,
      interruptions: [],
      notes: {},
      answering: {},
      interruptionErrors: {},
      error: null,
      steering: null,
      steerError: null,
      now: Date.now(),
      ticking: false,
    });
    this.applySnapshot(deployment);
  }

  /** Starts the clock when a countdown appeared, stops it when none is left (after every snapshot, list and tick). */
  private syncClock() {
    const now = Date.now();
    // Without the clock `now` is as old as the last tick: read it afresh for what this change shows.
    if (!this.clock) this.set({ now });
    const needed = countsDown(this.state, now);
    if (needed && !this.clock) {
      this.clock = setInterval(() => {
        this.set({ now: Date.now() });
        this.syncClock();
      }, 1000);
      this.set({ ticking: true });
    } else if (!needed && this.clock) this.stopClock();
  }

  /** Stops the clock (when the countdowns are gone, and when the view is left). */
  stopClock() {
    clearInterval(this.clock);
    this.clock = undefined;
    if (this.state.ticking) this.set({ ticking: false });
  }

  applySnapshot(d: Deployment) {
    this.set((s) => {
      const maxInFlight = { ...s.maxInFlight };
      for (const step of d.steps) maxInFlight[step.name] = Math.max(maxInFlight[step.name] ?? 0, inFlight(step));
      const names: Record<string, string> = {};
      for (const step of d.steps) for (const t of step.targets) if (t.machineId) names[t.machineId] = t.machineName;
      // The same object while nothing changed: the log is rendered again only when its inputs change.
      const same =
        Object.keys(names).length === Object.keys(s.machineNames).length &&
        Object.entries(names).every(([k, v]) => s.machineNames[k] === v);
      return { deployment: d, maxInFlight, machineNames: same ? s.machineNames : names };
    });
    this.syncClock();
  }

  addLog(entries: LogEntry[]) {
    const fresh = entries.filter((e) => !this.seen.has(e.seq));
    if (!fresh.length) return;
    for (const e of fresh) this.seen.add(e.seq);
    this.set((s) => {
      const inOrder = fresh.every((e, i) => e.seq > (i ? fresh[i - 1].seq : s.lastSeq));
      const log = s.log.concat(fresh);
      if (!inOrder) log.sort((a, b) => a.seq - b.seq);
      return { log, lastSeq: Math.max(s.lastSeq, ...fresh.map((e) => e.seq)) };
    });
  }

  setInterruptions(list: Interruption[]) {
    this.set((s) => {
      // Notes of interruptions that are gone (answered here or elsewhere) are dropped with them.
      const notes: Record<string, string> = {};
      for (const i of list) if (s.notes[i.id] !== undefined) notes[i.id] = s.notes[i.id];
      return { interruptions: list, notes };
    });
    this.syncClock();
  }

  setNote(id: string, text: string) {
    this.set((s) => ({ notes: { ...s.notes, [id]: text } }));
  }

  setAnswering(id: string, busy: boolean, error?: Problem) {
    this.set((s) => ({
      answering: { ...s.answering, [id]: busy },
      interruptionErrors: { ...s.interruptionErrors, [id]: error },
    }));
  }

  setFilter(filter: string) {
    this.set({ filter });
  }

  setFollow(follow: boolean) {
    if (follow !== this.state.follow) this.set({ follow });
  }

  setError(error: Problem | null) {
    this.set({ error });
  }

  setSteering(steering: Steer | null, steerError: Problem | null = null) {
    this.set({ steering, steerError });
  }
}

/** Whether a log entry passes the filter. */
export const matches = (filter: string, e: LogEntry) =>
  !filter || (filter === 'server' ? !e.machineId : e.machineId === filter);
