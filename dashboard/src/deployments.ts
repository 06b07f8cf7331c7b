/** The recent deployments, refreshed when the live socket says the list changed. */
import { get, q, type Deployment, type Environment, type Project, type Release } from './api.js';
import { html } from './lit.js';
import * as live from './live.js';
import { mount, Store } from './store.js';
import { badge, card, elapsed, fmtTime } from './ui.js';

export interface Lookups {
  project: (id?: string) => Project | undefined;
  env: (id: string) => string;
  release: (id: string) => Release | undefined;
}

/** Names for the ids a deployment carries: its project, environment and release. */
export async function lookups(): Promise<Lookups> {
  const [projects, envs, releases] = await Promise.all([
    get<Project[]>('/api/projects'),
    get<Environment[]>('/api/environments'),
    get<Release[]>('/api/releases'),
  ]);
  return {
    project: (id?: string) => projects.find((p) => p.id === id),
    env: (id: string) => envs.find((e) => e.id === id)?.name ?? id.slice(0, 8),
    release: (id: string) => releases.find((r) => r.id === id),
  };
}

interface ListState {
  list: Deployment[];
  names: Lookups;
}

/** A scheduled deployment's time, a trigger's mark, and why one ended without running. */
export const note = (d: Deployment) =>
  html`${
    d.state === 'scheduled' && d.queueAt
      ? html`<span class="small muted dep-note" data-testid="scheduled-at" title=${d.queueAt}
          >at ${fmtTime(d.queueAt)}${d.queueExpiresAt ? html`, expires ${fmtTime(d.queueExpiresAt)}` : ''}</span
        >`
      : ''
  }${
    d.trigger
      ? html`<span class="tag dep-note" data-testid="trigger" title="made by a target trigger for a new machine"
          >${d.trigger}</span
        >`
      : ''
  }${d.error ? html`<div class="small muted" data-testid="deployment-error">${d.error}</div>` : ''}`;

const row = (d: Deployment, names: Lookups) => {
  const rel = names.release(d.releaseId);
  const project = names.project(d.projectId ?? rel?.projectId);
  return html`<tr data-testid="deployment-${d.id}">
    <td><a href="#/deployments/${d.id}">${project?.name ?? 'deployment'}</a></td>
    <td>${rel?.version ?? d.releaseId.slice(0, 8)}</td>
    <td>${names.env(d.environmentId)}</td>
    <td>
      <a href="#/deployments/${d.id}">${badge(d.state)}</a
      >${d.queuedBehind ? html`<span class="small muted"> behind ${d.queuedBehind.slice(0, 8)}</span>` : ''}${note(d)}
    </td>
    <td>${fmtTime(d.createdAt)}</td>
    <td>${d.startedAt ? elapsed(d.startedAt, d.finishedAt) : '—'}</td>
  </tr>`;
};

const view = (s: ListState) =>
  html`<h1>Deployments</h1>
    ${card(
      'Recent deployments',
      s.list.length === 0
        ? html`<p class="muted">No deployments yet. Open a project, create a release and deploy it.</p>`
        : html`<table data-testid="deployments">
            <thead>
              <tr>
                ${['Project', 'Release', 'Environment', 'State', 'Created', 'Duration'].map((t) => html`<th>${t}</th>`)}
              </tr>
            </thead>
            <tbody>
              ${s.list.map((d) => row(d, s.names))}
            </tbody>
          </table>`,
    )}`;

export async function deploymentsView(root: HTMLElement) {
  const store = new Store<ListState>({ list: [], names: await lookups() });
  async function load() {
    const list = await get<Deployment[]>(`/api/deployments?${q({ limit: 50 })}`);
    const names = list.some((d) => !store.state.names.release(d.releaseId)) ? await lookups() : store.state.names;
    store.set({ list, names });
  }
  await load();
  const unmount = mount(root, store, view);
  let timer: ReturnType<typeof setTimeout> | undefined;
  live.on('deployments', () => {
    timer ??= setTimeout(() => {
      timer = undefined;
      void load().catch(() => undefined);
    }, 100);
  });
  return () => {
    clearTimeout(timer);
    unmount();
  };
}
