/**
 * The live deployment view's store: the latest deployment snapshot, the log entries (deduplicated by seq, in seq
 * order), the pending interruptions with the notes typed into them, and the log's filter and follow switch. The
 * components (grid, log, interruptions) render from it; live events and people's actions change it.
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
}

export const FINISHED = new Set(['success', 'failed', 'cancelled']);

export const inFlight = (s: StepRun) => s.targets.filter((t) => t.state === 'running').length;

export class DeploymentStore extends Store<DeploymentState> {
  private seen = new Set<number>();

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
    });
    this.applySnapshot(deployment);
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
}

/** Whether a log entry passes the filter. */
export const matches = (filter: string, e: LogEntry) =>
  !filter || (filter === 'server' ? !e.machineId : e.machineId === filter);
