/**
 * The live view of one deployment: a header (state, times, cancel), the interruptions, the grid and the log, each a
 * component rendering from one DeploymentStore. After the first REST load every change arrives over the live socket
 * (`deployment` snapshots, `log` entries, `interruptions` notices) into the store; nothing polls.
 */
import { api, get, type Deployment, type LogEntry } from './api.js';
import { gridView } from './deployment-grid.js';
import { interruptionsLoader, interruptionsView } from './deployment-interruptions.js';
import { followLog, logView } from './deployment-log.js';
import { DeploymentStore, FINISHED, type DeploymentState } from './deployment-store.js';
import { lookups, type Lookups } from './deployments.js';
import { html, nothing } from './lit.js';
import * as live from './live.js';
import { mount } from './store.js';
import { badge, card, elapsed, errorBox, fmtTime, problem } from './ui.js';

function header(s: DeploymentState, store: DeploymentStore, names: Lookups) {
  const d = s.deployment;
  const release = names.release(d.releaseId);
  const project = names.project(d.projectId ?? release?.projectId);
  const cancel = async () => {
    if (!confirm('Cancel this deployment? No new target starts and running scripts are stopped.')) return;
    store.setError(null);
    try {
      await api('POST', `/api/deployments/${d.id}/cancel`);
    } catch (err) {
      store.setError(problem(err));
    }
  };
  return html`<div class="dep-head">
    <div>
      <h1>
        ${project ? html`<a href="#/projects/${project.id}">${project.name}</a>` : 'Deployment'}
        <span class="muted">${d.releaseVersion ?? release?.version ?? ''}</span> → ${names.env(d.environmentId)}
      </h1>
      <div class="dep-meta">
        <span class="dep-state"
          >${badge(d.state, 'deployment-state')}${d.guidedFailure ? html`<span class="tag">guided failure</span>` : nothing}${
            d.queuedBehind
              ? html`<span class="small muted" data-testid="queued-behind">
                  queued behind
                  <a href="#/deployments/${d.queuedBehind}" class="mono">${d.queuedBehind.slice(0, 8)}</a> (one
                  deployment at a time per project and environment)</span
                >`
              : nothing
          }</span
        >
        <span class="muted">
          created
          ${fmtTime(d.createdAt)}${d.startedAt ? html` · elapsed ${elapsed(d.startedAt, d.finishedAt, 'deployment-elapsed')}` : ' · not started'}</span
        >
      </div>
    </div>
    <span class="spacer"></span>
    <button
      class="danger"
      data-testid="cancel-deployment"
      ?hidden=${FINISHED.has(d.state)}
      ?disabled=${d.state === 'cancelling'}
      @click=${cancel}
    >
      Cancel deployment
    </button>
  </div>`;
}

export async function deploymentView(root: HTMLElement, id: string) {
  const first = await get<Deployment>(`/api/deployments/${encodeURIComponent(id)}`);
  const names = await lookups();
  const store = new DeploymentStore(first);
  const loadInterruptions = interruptionsLoader(store);
  const unmount = mount(
    root,
    store,
    (s) =>
      html`${header(s, store, names)} ${errorBox('deployment-error', s.error)}
      ${interruptionsView(s, store, loadInterruptions)} ${card('Progress', gridView(s))} ${logView(s, store)}`,
    followLog,
  );
  await loadInterruptions();

  live.on('deployment', (d: Deployment) => d.id === first.id && store.applySnapshot(d));
  live.on(
    'log',
    (p: { deploymentId: string; entries: LogEntry[] }) => p.deploymentId === first.id && store.addLog(p.entries),
  );
  live.on('interruptions', (p: { deploymentId: string }) => p.deploymentId === first.id && void loadInterruptions());
  const unwatch = live.watch(first.id, () => store.state.lastSeq);
  return () => {
    unwatch();
    unmount();
  };
}
