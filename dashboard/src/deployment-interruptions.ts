/**
 * The deployment's pending interruptions (manual interventions, guided failures, batch approvals): what is asked,
 * notes, one button per allowed answer. Keyed by id, so a live update keeps each box, its typed notes and the focus
 * where they are.
 */
import { api, get, q, type Interruption } from './api.js';
import { secondsUntil, type DeploymentState, type DeploymentStore } from './deployment-store.js';
import { html, live, nothing, repeat } from './lit.js';
import { can, currentKey } from './me.js';
import { errorBox, fmtSeconds, problem, valueOf } from './ui.js';

const buttonClass = (r: string) => (r === 'abort' ? 'danger' : r === 'proceed' || r === 'retry' ? 'primary' : '');

/** Loads the pending interruptions into the store; calls while one load runs make one more load after it. */
export function interruptionsLoader(store: DeploymentStore) {
  let busy = false;
  let again = false;
  return async function load(): Promise<void> {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      store.setInterruptions(
        await get<Interruption[]>(
          `/api/interruptions?${q({ deploymentId: store.state.deployment.id, state: 'pending' })}`,
        ),
      );
    } catch (err) {
      store.setError(problem(err));
    } finally {
      busy = false;
      if (again) {
        again = false;
        void load();
      }
    }
  };
}

/** A manual intervention or a guided failure: where, and the instructions. */
const question = (i: Interruption) =>
  html`<h3>
      ${i.kind === 'guided-failure' ? 'Failed: what now?' : 'Manual intervention needed'}
      <span class="muted small">${i.stepName} / ${i.actionName}${i.machineName ? ` on ${i.machineName}` : ''}</span>
    </h3>
    ${i.instructions ? html`<p class="instructions" data-testid="interruption-instructions">${i.instructions}</p>` : nothing}`;

/**
 * A batch approval: which batch of which step, its targets, and with a timeout the default answer and the time left
 * (counted down by the store's clock). The server's instructions say the same in a sentence, so they are not repeated.
 */
const approval = (i: Interruption, s: DeploymentState) => {
  const count = s.deployment.steps.find((st) => st.name === i.stepName)?.batchCount;
  const n = (i.batch ?? 0) + 1;
  return html`<h3>
      Approve batch ${n}${count ? ` of ${count}` : ''}?
      <span class="muted small">${i.stepName}</span>
    </h3>
    <div class="approval-targets" data-testid="approval-targets">
      ${i.targets?.length ? html`Targets: ${i.targets.map((t) => html`<span class="tag mono">${t.machineName}</span>`)}` : html`<span class="muted">no targets left in this batch</span>`}
    </div>
    ${
      i.expiresAt
        ? html`<p class="small" data-testid="approval-timeout" data-expires-at=${i.expiresAt}>
            Default answer <strong data-testid="approval-default">${i.defaultResult ?? 'abort'}</strong>, applied in
            <span data-testid="approval-left">${fmtSeconds(secondsUntil(i.expiresAt, s.now))}</span> without an answer
          </p>`
        : html`<p class="small muted">No timeout: the step waits for an answer.</p>`
    }`;
};

export function interruptionsView(s: DeploymentState, store: DeploymentStore, reload: () => Promise<void>) {
  const answer = async (i: Interruption, result: string) => {
    store.setAnswering(i.id, true);
    try {
      await api('POST', `/api/interruptions/${i.id}/submit`, { result, notes: store.state.notes[i.id] || undefined });
      await reload(); // the answered box goes; its buttons stay disabled until then
      store.setAnswering(i.id, false);
    } catch (err) {
      store.setAnswering(i.id, false, problem(err));
    }
  };
  const d = s.deployment;
  const mayAnswer = can('approve', { environmentId: d.environmentId, projectId: d.projectId });
  // The server refuses the deployment's creator an answer to what prevents self-approval: say so instead of buttons.
  const selfApproval = (i: Interruption) => !!i.preventSelfApproval && d.createdBy?.id === currentKey()?.id;
  const answers = (i: Interruption) =>
    !mayAnswer
      ? html`<p class="small muted" data-testid="may-not-answer">Your API key may not answer this.</p>`
      : selfApproval(i)
        ? html`<p class="small muted" data-testid="self-approval">
            You created this deployment: another key must answer this (it prevents self-approval).
          </p>`
        : html`<div class="inline">
            ${i.allowedResults.map((r) => html`<button class=${buttonClass(r)} data-result=${r} ?disabled=${!!s.answering[i.id]} @click=${() => answer(i, r)}>${r[0].toUpperCase() + r.slice(1)}</button>`)}
          </div>`;
  const box = (i: Interruption) =>
    html`<div
      class="interruption kind-${i.kind}"
      data-testid="interruption"
      data-interruption-id=${i.id}
      data-kind=${i.kind}
    >
      ${i.kind === 'batch-approval' ? approval(i, s) : question(i)}
      ${
        mayAnswer && !selfApproval(i)
          ? html`<textarea
              rows="2"
              placeholder="Notes (recorded with your answer)"
              data-testid="interruption-notes"
              .value=${live(s.notes[i.id] ?? '')}
              @input=${(e: Event) => store.setNote(i.id, valueOf(e))}
            ></textarea>`
          : nothing
      }
      ${answers(i)} ${errorBox('interruption-error', s.interruptionErrors[i.id])}
    </div>`;
  return html`<div class="interruptions" data-testid="interruptions">
    ${repeat(s.interruptions, (i) => i.id, box)}
  </div>`;
}
