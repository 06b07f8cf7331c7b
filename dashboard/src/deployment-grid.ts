/**
 * The deployment's grid: a row per step, a column per target (in name order, the server last), a cell per run. A
 * step rolled in several batches shows its targets grouped by batch instead, in one wide cell: its batches are not
 * runs of neighbouring names (spreadBy deals them round-robin over a label), so the shared columns cannot hold them.
 */
import type { Deployment, StepRun, TargetRun } from './api.js';
import { inFlight, secondsUntil, type DeploymentState } from './deployment-store.js';
import { html, nothing, repeat } from './lit.js';
import { badge, elapsed, fmtSeconds } from './ui.js';

const batched = (s: StepRun) => s.batchCount > 1;

/** The columns: machines of the steps that are not batched, in name order, the server last. */
export function targetsInOrder(d: Deployment) {
  const names = new Set<string>();
  for (const s of d.steps) if (!batched(s)) for (const t of s.targets) names.add(t.machineName);
  const machines = [...names].filter((n) => n !== '(server)').sort((a, b) => a.localeCompare(b));
  return names.has('(server)') ? [...machines, '(server)'] : machines;
}

const WAITING_FOR = {
  machine: 'waiting for the machine (busy with another deployment)',
  person: 'waiting for a person (manual intervention)',
} as const;

/** What a cell says about its run; the same in a column and in a batch group. */
const cellBody = (s: StepRun, t: TargetRun) =>
  html`<div class="cell-head">
      <span class="cell-state">${t.state}</span>${t.startedAt ? elapsed(t.startedAt, t.finishedAt) : nothing}
    </div>
    ${t.waitingFor ? html`<div class="small waiting-for" data-testid="waiting-${s.name}-${t.machineName}" data-waiting-for=${t.waitingFor}>${WAITING_FOR[t.waitingFor]}</div>` : nothing}
    ${t.skipReason ? html`<div class="small muted" data-testid="skip-reason-${s.name}-${t.machineName}">skipped: ${t.skipReason}</div>` : nothing}
    ${t.bakeCheck ? html`<div class="small bake-check check-${t.bakeCheck}" data-testid="bake-check-${s.name}-${t.machineName}">bake check ${t.bakeCheck}</div>` : nothing}
    ${t.attempt && t.attempt > 1 ? html`<div class="small" data-testid="attempt-${s.name}-${t.machineName}">attempt ${t.attempt}</div>` : nothing}
    ${t.error ? html`<div class="small err">${t.failureKind ? `${t.failureKind}: ` : ''}${t.error}</div>` : nothing}
    <ul class="cell-actions">
      ${t.actions.map(
        (a) =>
          html`<li class="state-${a.state}" data-state=${a.state} title=${a.skipReason ?? ''}>
            <span class="dot"></span
            >${a.name}${a.exitCode !== undefined && a.exitCode !== null && a.exitCode !== 0 ? ` (exit ${a.exitCode})` : ''}
          </li>`,
      )}
    </ul>`;

const cell = (s: StepRun, t: TargetRun | undefined) => {
  if (!t) return html`<td class="cell none"></td>`;
  return html`<td
    class="cell state-${t.state}"
    data-testid="cell-${s.name}-${t.machineName}"
    data-state=${t.state}
    data-bake-check=${t.bakeCheck ?? nothing}
    title=${t.error ?? ''}
  >
    ${cellBody(s, t)}
  </td>`;
};

const batchCell = (s: StepRun, t: TargetRun) =>
  html`<div
    class="cell state-${t.state}"
    data-testid="cell-${s.name}-${t.machineName}"
    data-state=${t.state}
    data-bake-check=${t.bakeCheck ?? nothing}
    title=${t.error ?? ''}
  >
    <div class="cell-name mono">${t.machineName}</div>
    ${cellBody(s, t)}
  </div>`;

/** A batched step's targets, a group per batch ("Batch 2 of 3"), the one in progress or waited on marked current. */
const batchGroups = (s: StepRun, span: number) => {
  const groups = Array.from({ length: s.batchCount }, (_, b) => s.targets.filter((t) => t.batch === b));
  return html`<td class="batches-cell" colspan=${span}>
    <div class="batches">
      ${groups.map((targets, b) => {
        const current = s.currentBatch === b;
        const done = targets.filter((t) => !['pending', 'running'].includes(t.state)).length;
        return html`<div
          class="batch${current ? ' current' : ''}"
          data-testid="batch-${s.name}-${b + 1}"
          data-current=${current ? 'true' : nothing}
        >
          <div class="batch-head">
            <strong>Batch ${b + 1} of ${s.batchCount}</strong>
            ${current ? html`<span class="tag current">current</span>` : nothing}
            <span class="muted small">${done}/${targets.length} done</span>
          </div>
          <div class="batch-cells">
            ${repeat(
              targets,
              (t) => t.machineId ?? t.machineName,
              (t) => batchCell(s, t),
            )}
          </div>
        </div>`;
      })}
    </div>
  </td>`;
};

/**
 * What the step waits for before its next batch, counting a bake down to its end. A paused deployment passes no gate,
 * so a bake that ended while paused says so rather than "0 s left".
 */
const gateLine = (s: StepRun, now: number, paused: boolean) => {
  if (!s.gate) return nothing;
  const left = s.bakeUntil ? secondsUntil(s.bakeUntil, now) : null;
  const text =
    s.gate === 'bake'
      ? left === null
        ? 'baking'
        : left === 0 && paused
          ? 'baked; the next batch waits for resume'
          : `baking — ${fmtSeconds(left)} left`
      : s.gate === 'health-check'
        ? 'health checks'
        : 'waiting for approval';
  return html`<div
    class="small gate gate-${s.gate}"
    data-testid="gate-${s.name}"
    data-gate=${s.gate}
    data-bake-until=${s.bakeUntil ?? nothing}
  >
    ${text}
  </div>`;
};

const stepRow = (s: StepRun, cols: string[], maxSeen: number, now: number, paused: boolean) => {
  const x = inFlight(s);
  const w = s.windowSize ?? s.targets.length;
  return html`<tr data-testid="step-row-${s.name}">
    <th class="step-cell">
      <div><strong>${s.name}</strong> ${badge(s.state, `step-state-${s.name}`)}</div>
      <div
        class="small muted"
        data-testid="inflight-${s.name}"
        data-inflight=${x}
        data-window=${w}
        data-max-inflight=${Math.max(maxSeen, x)}
      >
        in flight ${x} / window ${w}
      </div>
      ${
        batched(s)
          ? html`<div class="small muted" data-testid="batches-${s.name}">
              ${s.currentBatch === null ? `${s.batchCount} batches` : `batch ${s.currentBatch + 1} of ${s.batchCount}`}
            </div>`
          : nothing
      }
      ${gateLine(s, now, paused)}
      ${s.maxFailures ? html`<div class="small muted">failure budget ${s.maxFailures}</div>` : nothing}
      ${s.skipReason ? html`<div class="small muted">${s.skipReason}</div>` : nothing}
    </th>
    ${
      batched(s)
        ? batchGroups(s, Math.max(1, cols.length))
        : cols.map((c) =>
            cell(
              s,
              s.targets.find((t) => t.machineName === c),
            ),
          )
    }
  </tr>`;
};

export function gridView(state: DeploymentState) {
  const d = state.deployment;
  const cols = targetsInOrder(d);
  return html`<div class="grid-wrap">
    <table class="grid" data-testid="grid">
      <thead>
        <tr>
          <th>Step</th>
          ${cols.length ? cols.map((c) => html`<th class="mono">${c}</th>`) : html`<th>Targets</th>`}
        </tr>
      </thead>
      <tbody>
        ${repeat(
          d.steps,
          (s) => s.name,
          (s) => stepRow(s, cols, state.maxInFlight[s.name] ?? 0, state.now, d.state === 'paused'),
        )}
      </tbody>
    </table>
  </div>`;
}
