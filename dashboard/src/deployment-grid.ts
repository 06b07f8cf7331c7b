/** The deployment's grid: a row per step, a column per target (in name order, the server last), a cell per run. */
import type { Deployment, StepRun, TargetRun } from './api.js';
import { inFlight, type DeploymentState } from './deployment-store.js';
import { html, nothing, repeat } from './lit.js';
import { badge, elapsed } from './ui.js';

export function targetsInOrder(d: Deployment) {
  const names = new Set<string>();
  for (const s of d.steps) for (const t of s.targets) names.add(t.machineName);
  const machines = [...names].filter((n) => n !== '(server)').sort((a, b) => a.localeCompare(b));
  return names.has('(server)') ? [...machines, '(server)'] : machines;
}

const cell = (s: StepRun, t: TargetRun | undefined) => {
  if (!t) return html`<td class="cell none"></td>`;
  return html`<td
    class="cell state-${t.state}"
    data-testid="cell-${s.name}-${t.machineName}"
    data-state=${t.state}
    title=${t.error ?? ''}
  >
    <div class="cell-head">
      <span class="cell-state">${t.state}</span>${t.startedAt ? elapsed(t.startedAt, t.finishedAt) : nothing}
    </div>
    ${t.waitingFor ? html`<div class="small muted" data-testid="waiting-${s.name}-${t.machineName}">waiting for the ${t.waitingFor} (busy with another deployment)</div>` : nothing}
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
    </ul>
  </td>`;
};

const stepRow = (s: StepRun, cols: string[], maxSeen: number) => {
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
      ${s.maxFailures ? html`<div class="small muted">failure budget ${s.maxFailures}</div>` : nothing}
      ${s.skipReason ? html`<div class="small muted">${s.skipReason}</div>` : nothing}
    </th>
    ${cols.map((c) =>
      cell(
        s,
        s.targets.find((t) => t.machineName === c),
      ),
    )}
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
          ${cols.map((c) => html`<th class="mono">${c}</th>`)}
        </tr>
      </thead>
      <tbody>
        ${repeat(
          d.steps,
          (s) => s.name,
          (s) => stepRow(s, cols, state.maxInFlight[s.name] ?? 0),
        )}
      </tbody>
    </table>
  </div>`;
}
