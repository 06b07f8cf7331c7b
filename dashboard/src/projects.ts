/**
 * Projects: list and create; a project's page: process editor, channels, its lifecycle, releases with their
 * progression through it, deploy (to the environments the release may go to now) with preview.
 */
import {
  api,
  get,
  q,
  type Channel,
  type DeploymentPreview as Preview,
  type Environment,
  type Lifecycle,
  type Process,
  type Progression,
  type Project,
  type Release,
} from './api.js';
import { html, live, nothing } from './lit.js';
import { can } from './me.js';
import { ProcessEditor } from './process.js';
import { mount, Store } from './store.js';
import { badge, card, checkedOf, errorBox, fmtSeconds, fmtTime, problem, valueOf, type Problem } from './ui.js';

const field = (form: HTMLFormElement, name: string) => form.elements.namedItem(name) as HTMLInputElement;

export async function projectsView(root: HTMLElement) {
  const store = new Store<{ projects: Project[]; error: Problem | null }>({
    projects: await get<Project[]>('/api/projects'),
    error: null,
  });
  async function create(e: SubmitEvent) {
    e.preventDefault();
    const form = e.target as HTMLFormElement;
    store.set({ error: null });
    try {
      const p = await api<Project>('POST', '/api/projects', {
        name: field(form, 'name').value.trim(),
        description: field(form, 'description').value.trim() || undefined,
      });
      location.hash = `#/projects/${p.id}`;
    } catch (err) {
      store.set({ error: problem(err) });
    }
  }
  return mount(
    root,
    store,
    (s) =>
      html`<h1>Projects</h1>
        ${card(
          'All projects',
          s.projects.length === 0
            ? html`<p class="muted">No projects yet.</p>`
            : html`<table data-testid="projects">
                <thead>
                  <tr>
                    <th>Name</th>
                    <th>Slug</th>
                    <th>Description</th>
                  </tr>
                </thead>
                <tbody>
                  ${s.projects.map(
                    (p) =>
                      html`<tr>
                        <td><a href="#/projects/${p.id}">${p.name}</a></td>
                        <td class="mono">${p.slug}</td>
                        <td>${p.description ?? ''}</td>
                      </tr>`,
                  )}
                </tbody>
              </table>`,
        )}
        ${
          can('manage-projects')
            ? card(
                'New project',
                html`<form class="inline" @submit=${create}>
                  <input name="name" placeholder="Project name" required data-testid="project-name" />
                  <input name="description" placeholder="Description (optional)" />
                  <button type="submit" class="primary">Create project</button>
                  ${errorBox('project-error', s.error)}
                </form>`,
              )
            : nothing
        }`,
  );
}

interface DeployPanel {
  release: Release;
  environmentId: string;
  guided: boolean;
  /** A `datetime-local` value (the browser's time zone): schedule it then (queueAt); empty: deploy now. */
  at: string;
  preview: Preview | null;
  loading: boolean;
  busy: boolean;
  error: Problem | null;
}

/** Releases whose progression the page reads (the newest): each is one request. */
const PROGRESSION_RELEASES = 20;

interface ProjectState {
  releases: Release[];
  /** By release id: where it went in its lifecycle and where it may go now. */
  progression: Record<string, Progression>;
  lifecycleId: string | null;
  lifecycleError: Problem | null;
  channels: Channel[];
  releaseError: Problem | null;
  channelError: Problem | null;
  deploy: DeployPanel | null;
}

export async function projectView(root: HTMLElement, id: string) {
  const [project, process, channels, envs, lifecycles] = await Promise.all([
    get<Project>(`/api/projects/${encodeURIComponent(id)}`),
    get<Process>(`/api/projects/${encodeURIComponent(id)}/deployment-process`),
    get<Channel[]>(`/api/projects/${encodeURIComponent(id)}/channels`),
    get<Environment[]>('/api/environments'),
    get<Lifecycle[]>('/api/lifecycles'),
  ]);
  const store = new Store<ProjectState>({
    releases: [],
    progression: {},
    lifecycleId: project.lifecycleId ?? null,
    lifecycleError: null,
    channels,
    releaseError: null,
    channelError: null,
    deploy: null,
  });
  const editor = new ProcessEditor(project.id, process, envs, channels);
  // The environments this key may deploy this project to; none: no Deploy button at all.
  const deployTo = envs.filter((e) => can('deploy', { environmentId: e.id, projectId: project.id }));
  const channelName = (cid: string) => store.state.channels.find((c) => c.id === cid)?.name ?? cid.slice(0, 8);
  const setDeploy = (patch: Partial<DeployPanel>) =>
    store.set((s) => (s.deploy ? { deploy: { ...s.deploy, ...patch } } : {}));

  async function loadReleases() {
    const releases = await get<Release[]>(`/api/releases?${q({ projectId: project.id })}`);
    const progs = await Promise.all(
      releases
        .slice(0, PROGRESSION_RELEASES)
        .map((r) => get<Progression>(`/api/releases/${r.id}/progression`).catch(() => null)),
    );
    const progression: Record<string, Progression> = {};
    for (const p of progs) if (p) progression[p.releaseId] = p;
    store.set({ releases, progression });
  }

  /** The environments this key may deploy the release to now (its lifecycle permitting, when its progression is known). */
  const allowedEnvs = (r: Release) => {
    const p = store.state.progression[r.id];
    return p ? deployTo.filter((e) => p.allowedEnvironmentIds.includes(e.id)) : deployTo;
  };

  /** A channel's own lifecycle ("" : it follows the project's). */
  async function setChannelLifecycle(c: Channel, lifecycleId: string) {
    store.set({ channelError: null });
    try {
      const updated = await api<Channel>('PATCH', `/api/projects/${project.id}/channels/${c.id}`, {
        lifecycleId: lifecycleId || null,
      });
      store.set((s) => ({ channels: s.channels.map((x) => (x.id === updated.id ? updated : x)) }));
      await loadReleases();
    } catch (err) {
      store.set({ channelError: problem(err) });
    }
  }

  async function setLifecycle(lifecycleId: string) {
    store.set({ lifecycleError: null });
    try {
      const p = await api<Project>('PATCH', `/api/projects/${project.id}`, { lifecycleId: lifecycleId || null });
      store.set({ lifecycleId: p.lifecycleId ?? null });
      await loadReleases();
    } catch (err) {
      store.set({ lifecycleError: problem(err) });
    }
  }

  function openDeploy(r: Release) {
    store.set({
      deploy: {
        release: r,
        environmentId: '',
        guided: false,
        at: '',
        preview: null,
        loading: false,
        busy: false,
        error: null,
      },
    });
    requestAnimationFrame(() =>
      root.querySelector('[data-testid="deploy-panel"]')?.scrollIntoView({ behavior: 'smooth', block: 'nearest' }),
    );
  }

  async function chooseEnvironment(environmentId: string) {
    const d = store.state.deploy;
    if (!d) return;
    const env = envs.find((e) => e.id === environmentId);
    setDeploy({ environmentId, guided: Boolean(env?.guidedFailure), preview: null, error: null, loading: !!env });
    if (!env) return;
    try {
      const preview = await get<Preview>(
        `/api/deployments/preview?${q({ releaseId: d.release.id, environmentId: env.id })}`,
      );
      if (store.state.deploy?.environmentId === environmentId) setDeploy({ preview, loading: false });
    } catch (err) {
      if (store.state.deploy?.environmentId === environmentId)
        setDeploy({ loading: false, error: problem(err, 'Preview failed: ') });
    }
  }

  async function deploy() {
    const d = store.state.deploy;
    if (!d) return;
    setDeploy({ busy: true, error: null });
    try {
      const created = await api<{ id: string }>('POST', '/api/deployments', {
        releaseId: d.release.id,
        environmentId: d.environmentId,
        guidedFailure: d.guided,
        ...(d.at ? { queueAt: new Date(d.at).toISOString() } : {}),
      });
      location.hash = `#/deployments/${created.id}`;
    } catch (err) {
      setDeploy({ busy: false, error: problem(err) });
    }
  }

  async function createRelease(e: SubmitEvent) {
    e.preventDefault();
    const form = e.target as HTMLFormElement;
    store.set({ releaseError: null });
    try {
      const rel = await api<Release>('POST', '/api/releases', {
        projectId: project.id,
        version: field(form, 'version').value.trim(),
        channelId: field(form, 'channel').value || undefined,
      });
      field(form, 'version').value = '';
      await loadReleases();
      openDeploy(rel);
    } catch (err) {
      store.set({ releaseError: problem(err) });
    }
  }

  async function addChannel(e: SubmitEvent) {
    e.preventDefault();
    const form = e.target as HTMLFormElement;
    store.set({ channelError: null });
    try {
      const c = await api<Channel>('POST', `/api/projects/${project.id}/channels`, {
        name: field(form, 'name').value.trim(),
      });
      form.reset();
      store.set((s) => ({ channels: [...s.channels, c] }));
      editor.setChannels(store.state.channels);
    } catch (err) {
      store.set({ channelError: problem(err) });
    }
  }

  const releasesTable = (s: ProjectState) =>
    s.releases.length === 0
      ? html`<p class="muted">No releases yet.</p>`
      : html`<table>
          <thead>
            <tr>
              ${['Version', 'Channel', 'Packages', 'Created', ''].map((t) => html`<th>${t}</th>`)}
            </tr>
          </thead>
          <tbody>
            ${s.releases.map(
              (r) =>
                html`<tr data-testid="release-${r.version}">
                    <td><strong>${r.version}</strong></td>
                    <td>${channelName(r.channelId)}</td>
                    <td>
                      ${r.packages.length ? r.packages.map((p) => html`<span class="tag mono" title="sha256 ${p.sha256}, ${p.sizeBytes} bytes">${p.packageId} ${p.version}</span>`) : html`<span class="muted">none</span>`}
                    </td>
                    <td>${fmtTime(r.createdAt)}</td>
                    <td>
                      ${deployTo.length ? html`<button data-testid="open-deploy" @click=${() => openDeploy(r)}>Deploy…</button>` : nothing}
                    </td>
                  </tr>
                  ${
                    // Under its release, across the table: the phases read left to right, as promotion goes.
                    s.progression[r.id]
                      ? html`<tr class="progression-row">
                          <td colspan="5">${progressionView(s.progression[r.id], r.version)}</td>
                        </tr>`
                      : nothing
                  }`,
            )}
          </tbody>
        </table>`;

  const deployPanel = (d: DeployPanel) =>
    html`<div class="deploy card inner">
      <h3>Deploy ${project.name} ${d.release.version}</h3>
      <div class="inline">
        <label
          >Environment
          <select data-testid="deploy-environment" @change=${(e: Event) => void chooseEnvironment(valueOf(e))}>
            <option value="" .selected=${live(d.environmentId === '')}>Choose an environment…</option>
            ${allowedEnvs(d.release).map((e) => html`<option value=${e.id} .selected=${live(d.environmentId === e.id)}>${e.name}</option>`)}
          </select></label
        >
        ${notYet(store.state.progression[d.release.id])}
        <label class="check"
          ><input
            type="checkbox"
            data-testid="guided-failure"
            .checked=${live(d.guided)}
            @change=${(e: Event) => setDeploy({ guided: checkedOf(e) })}
          />
          Guided failure (a failed target waits for retry, skip or abort)</label
        >
        <label title="leave empty to deploy now; scheduled, it is queued at this time (your browser's time zone)"
          >Start at (optional)
          <input
            type="datetime-local"
            data-testid="deploy-at"
            .value=${live(d.at)}
            @change=${(e: Event) => setDeploy({ at: valueOf(e) })}
        /></label>
      </div>
      <div data-testid="preview">
        ${d.loading ? html`<p class="muted">Loading preview…</p>` : d.preview ? previewView(d.preview) : nothing}
      </div>
      ${errorBox('deploy-error', d.error)}
      <div class="inline">
        <button
          class="primary"
          data-testid="deploy-button"
          ?disabled=${!d.preview || d.busy}
          @click=${() => void deploy()}
        >
          ${d.at ? 'Schedule' : 'Deploy'}
        </button>
        <button class="ghost" @click=${() => store.set({ deploy: null })}>Close</button>
      </div>
    </div>`;

  const view = (s: ProjectState) =>
    html`<h1>${project.name} <span class="muted small mono">${project.slug}</span></h1>
      ${project.description ? html`<p class="muted">${project.description}</p>` : nothing}
      <div class="columns">
        <div class="col-main">${card('Deployment process', editor.el)}</div>
        <div class="col-side">
          ${card(
            'Releases',
            html`${
                can('create-release', { projectId: project.id })
                  ? html`<form class="inline" @submit=${createRelease}>
                      <input name="version" placeholder="Version, e.g. 1.0.0" required data-testid="release-version" />
                      <select name="channel" data-testid="release-channel">
                        ${s.channels.map((c) => html`<option value=${c.id} ?selected=${c.id === project.defaultChannelId}>${c.name}</option>`)}
                      </select>
                      <button type="submit" class="primary">Create release</button>
                    </form>`
                  : nothing
              }
              ${errorBox('release-error', s.releaseError)}
              <div data-testid="deploy-panel">${s.deploy ? deployPanel(s.deploy) : nothing}</div>
              <div data-testid="releases">${releasesTable(s)}</div>`,
          )}
          ${card(
            'Lifecycle',
            html`<label
                >Releases are promoted through
                <select
                  data-testid="project-lifecycle"
                  ?disabled=${!can('manage-projects')}
                  @change=${(e: Event) => void setLifecycle(valueOf(e))}
                >
                  <option value="" .selected=${live(s.lifecycleId === null)}>no lifecycle (any environment)</option>
                  ${lifecycles.map((l) => html`<option value=${l.id} .selected=${live(s.lifecycleId === l.id)}>${l.name}: ${l.phases.map((p) => p.name).join(' → ')}</option>`)}
                </select></label
              >
              ${s.channels.some((c) => c.lifecycleId) ? html`<p class="muted small">Channels with their own lifecycle: ${s.channels.filter((c) => c.lifecycleId).map((c) => html`<span class="tag">${c.name}: ${lifecycles.find((l) => l.id === c.lifecycleId)?.name ?? '?'}</span>`)}</p>` : nothing}
              ${errorBox('lifecycle-error', s.lifecycleError)}`,
          )}
          ${card(
            'Channels',
            html`<ul class="plain" data-testid="channels">
                ${s.channels.map(
                  (c) =>
                    html`<li>
                      <span class="tag">${c.name}</span
                      >${c.id === project.defaultChannelId ? html`<span class="muted small"> default</span>` : nothing}
                      <select
                        class="small"
                        title="The lifecycle of this channel's releases"
                        data-testid="channel-lifecycle-${c.name}"
                        ?disabled=${!can('manage-projects')}
                        @change=${(e: Event) => void setChannelLifecycle(c, valueOf(e))}
                      >
                        <option value="" .selected=${live(!c.lifecycleId)}>project's lifecycle</option>
                        ${lifecycles.map((l) => html`<option value=${l.id} .selected=${live(c.lifecycleId === l.id)}>${l.name}</option>`)}
                      </select>
                    </li>`,
                )}
              </ul>
              ${
                can('manage-projects')
                  ? html`<form class="inline" @submit=${addChannel}>
                      <input name="name" placeholder="New channel name" required data-testid="channel-name" />
                      <button type="submit">Add channel</button>
                    </form>`
                  : nothing
              }
              ${errorBox('channel-error', s.channelError)}`,
          )}
        </div>
      </div>`;

  await loadReleases();
  const unmount = mount(root, store, view);
  return () => {
    unmount();
    editor.destroy();
  };
}

/**
 * A release's progression: its lifecycle's phases in order, each environment with its last deployment's state,
 * allowed ones marked, blocked ones saying (on hover) which phase must succeed first.
 */
function progressionView(p: Progression, version: string) {
  return html`<div class="progression" data-testid="progression-${version}">
    ${p.lifecycle ? nothing : html`<span class="muted small">no lifecycle</span>`}
    ${p.phases.map(
      (ph, i) =>
        html`${i ? html`<span class="arrow">→</span>` : nothing}<span
            class="phase ${ph.complete ? 'complete' : ph.reachable ? 'reachable' : 'blocked'}"
            data-testid="phase-${version}-${ph.name}"
            title=${`${ph.name}${ph.optional ? ' (optional)' : ''}: ${ph.complete ? 'complete' : ph.reachable ? 'reachable' : 'not reached yet'}`}
            >${p.lifecycle ? html`<span class="phase-name">${ph.name}${ph.optional ? '?' : ''}</span>` : nothing}
            ${ph.environments.map(
              (e) =>
                html`<span
                  class="tag env ${e.allowed ? 'allowed' : 'blocked'}"
                  data-testid="progression-${version}-${e.environmentName}"
                  data-allowed=${e.allowed ? 'yes' : 'no'}
                  title=${e.reason ?? (e.allowed ? 'may be deployed here now' : '')}
                  >${e.environmentName} ${e.lastDeployment ? badge(e.lastDeployment.status) : nothing}</span
                >`,
            )}</span
          >`,
    )}
  </div>`;
}

/** Under the environment choice: the environments the release may not go to yet, and why. */
function notYet(p: Progression | undefined) {
  const blocked = p?.phases.flatMap((ph) => ph.environments).filter((e) => !e.allowed) ?? [];
  return blocked.length
    ? html`<p class="muted small" data-testid="deploy-not-yet">
        Not yet (lifecycle ${p!.lifecycle?.name}):
        ${blocked.map((e) => html`<span class="tag env blocked" title=${e.reason ?? ''}>${e.environmentName}</span>`)}
        ${blocked[0].reason ? html`<br />${blocked[0].reason}` : nothing}
      </p>`
    : nothing;
}

/** An estimated duration (from earlier deployments of the project), or that there is none yet. */
const estimate = (seconds: number | null, testid: string) =>
  html`<span data-testid=${testid} data-seconds=${seconds ?? nothing}
    >${seconds === null ? 'no estimate yet' : `about ${fmtSeconds(seconds)}`}</span
  >`;

function previewView(p: Preview) {
  return html`<div class="preview">
    <h4>Preview: what will run where</h4>
    <p class="small">Estimated duration: ${estimate(p.estimatedSeconds, 'preview-estimate')}</p>
    <ol class="preview-steps">
      ${p.steps.map(
        (s) =>
          html`<li class=${s.willRun === false ? 'skipped' : ''} data-testid="preview-step-${s.name}">
            <div>
              <strong>${s.name}</strong>
              ${s.willRun === false ? badge('skipped') : nothing}${s.skipReason ? html`<span class="muted"> ${s.skipReason}</span>` : nothing}
            </div>
            <div class="small">
              ${s.runsOn === 'server' ? 'runs on the server' : html`<span data-testid="preview-window-${s.name}">window ${s.windowSize ?? 'all'}</span>`}
              · failure budget
              ${s.maxFailures ?? 0}${s.condition && s.condition !== 'success' ? ` · condition ${s.condition}` : ''}${s.startTrigger === 'withPrevious' ? ' · with previous' : ''}
              ${s.willRun === false ? nothing : html`· ${s.estimatedSeconds === null ? '' : 'estimated '}${estimate(s.estimatedSeconds, `preview-estimate-${s.name}`)}`}
            </div>
            ${
              s.targets?.length
                ? html`<div class="targets" data-testid="preview-targets-${s.name}">
                    Targets in order:
                    ${s.targets.map((t, i) => html`<span class="tag">${i + 1}. ${t.machineName}</span>`)}
                  </div>`
                : nothing
            }
            ${
              s.batches.length > 1
                ? html`<div class="targets" data-testid="preview-batches-${s.name}">
                    In ${s.batches.length} batches:
                    ${s.batches.map((b, i) => html`<span class="tag" data-testid="preview-batch-${s.name}-${i + 1}">batch ${i + 1}: ${b.join(', ')}</span>`)}
                  </div>`
                : nothing
            }
            <ul class="preview-actions">
              ${s.actions.map((a) => html`<li class=${a.willRun ? '' : 'skipped'} data-testid="preview-action-${s.name}-${a.name}">${a.name} (${a.type ?? 'action'})${a.willRun ? '' : html`<span class="muted"> — skipped: ${a.skipReason ?? ''}</span>`}</li>`)}
            </ul>
          </li>`,
      )}
    </ol>
  </div>`;
}
