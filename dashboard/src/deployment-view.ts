/**
 * The live view of one deployment: a header (state, times, links to related deployments, the steering buttons and
 * cancel), the interruptions, the grid and the log, each a component rendering from one DeploymentStore. After the
 * first REST load every change arrives over the live socket (`deployment` snapshots, `log` entries, `interruptions`
 * notices) into the store; nothing polls.
 */
import { api, get, type Deployment, type LogEntry, type SteerAccepted } from './api.js';
import { gridView } from './deployment-grid.js';
import { interruptionsLoader, interruptionsView } from './deployment-interruptions.js';
import { followLog, logView } from './deployment-log.js';
import { DeploymentStore, FINISHED, type DeploymentState, type Steer } from './deployment-store.js';
import { lookups, note, type Lookups } from './deployments.js';
import { html, nothing } from './lit.js';
import * as live from './live.js';
import { can } from './me.js';
import { mount } from './store.js';
import { badge, card, elapsed, errorBox, fmtTime, problem } from './ui.js';

/** States a deployment can be paused in (the server refuses the others). */
const PAUSABLE = new Set(['queued', 'executing', 'waiting']);

/**
 * Sends a steering request. Pause and resume change this deployment: the state the server answered is shown at once
 * (unless a live snapshot has moved it on meanwhile), and the snapshot that follows brings the rest (pausedAt).
 * Retry failed and roll back make a new deployment, whose page opens.
 */
async function steer(store: DeploymentStore, what: Steer) {
  const before = store.state.deployment;
  store.setSteering(what);
  try {
    if (what === 'pause' || what === 'resume') {
      const r = await api<SteerAccepted>('POST', `/api/deployments/${before.id}/${what}`);
      store.set((s) =>
        s.deployment.state === before.state ? { deployment: { ...s.deployment, state: r.state } } : undefined,
      );
      store.setSteering(null);
    } else {
      const created = await api<Deployment>('POST', `/api/deployments/${before.id}/${what}`);
      store.setSteering(null);
      location.hash = `#/deployments/${created.id}`;
    }
  } catch (err) {
    store.setSteering(null, problem(err));
  }
}

const shortLink = (id: string) => html`<a href="#/deployments/${id}" class="mono">${id.slice(0, 8)}</a>`;

/** Deployments this one is tied to: the failed one it retries, the one it rolls back, the one rolling it back. */
const related = (d: Deployment) =>
  d.retryOf || d.rollbackOf || d.rolledBackBy
    ? html`<div class="dep-related small">
        ${d.retryOf ? html`<span data-testid="retry-of">retry of ${shortLink(d.retryOf)}</span>` : nothing}
        ${d.rollbackOf ? html`<span data-testid="rollback-of">rollback of ${shortLink(d.rollbackOf)}</span>` : nothing}
        ${d.rolledBackBy ? html`<span data-testid="rolled-back-by">rolled back by ${shortLink(d.rolledBackBy)}</span>` : nothing}
      </div>`
    : nothing;

/** Pause, Resume, Retry failed and Roll back, each shown when the deployment's state allows it, and their errors. */
function steering(s: DeploymentState, store: DeploymentStore) {
  const d = s.deployment;
  const busy = s.steering !== null;
  const where = { environmentId: d.environmentId, projectId: d.projectId };
  const rollback = () => {
    if (!confirm("Roll back? The environment's previous successful release is deployed again, as a new deployment."))
      return;
    void steer(store, 'rollback');
  };
  return html`<div class="steer">
    <div class="inline">
      <button
        data-testid="pause-deployment"
        ?hidden=${!PAUSABLE.has(d.state) || !can('pause', where)}
        ?disabled=${busy}
        @click=${() => void steer(store, 'pause')}
      >
        Pause
      </button>
      <button
        class="primary"
        data-testid="resume-deployment"
        ?hidden=${d.state !== 'paused' || !can('resume', where)}
        ?disabled=${busy}
        @click=${() => void steer(store, 'resume')}
      >
        Resume
      </button>
      <button
        data-testid="retry-failed"
        ?hidden=${d.state !== 'failed' || !can('retry', where)}
        ?disabled=${busy}
        @click=${() => void steer(store, 'retry-failed')}
      >
        Retry failed
      </button>
      <button
        data-testid="rollback-deployment"
        ?hidden=${!FINISHED.has(d.state) || !can('rollback', where)}
        ?disabled=${busy}
        @click=${rollback}
      >
        Roll back
      </button>
    </div>
    ${errorBox('steer-error', s.steerError)}
  </div>`;
}

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
  // data-ticking: whether the countdown clock runs (tests read it; it must stop once nothing counts down).
  return html`<div class="dep-head" data-testid="deployment-head" data-ticking=${s.ticking ? 'true' : 'false'}>
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
          }${note(d)}${
            d.state === 'paused'
              ? html`<span class="small muted" data-testid="paused-since"
                  >${d.pausedAt ? html`since ${fmtTime(d.pausedAt)} (${elapsed(d.pausedAt, null)}): ` : nothing}no new
                  target starts, running ones finish</span
                >`
              : nothing
          }</span
        >
        <span class="muted">
          created
          ${fmtTime(d.createdAt)}${d.startedAt ? html` · elapsed ${elapsed(d.startedAt, d.finishedAt, 'deployment-elapsed')}` : ' · not started'}</span
        >
      </div>
      ${related(d)}
    </div>
    <span class="spacer"></span>
    ${steering(s, store)}
    <button
      class="danger"
      data-testid="cancel-deployment"
      ?hidden=${FINISHED.has(d.state) || !can('cancel', { environmentId: d.environmentId, projectId: d.projectId })}
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
    store.stopClock();
  };
}
