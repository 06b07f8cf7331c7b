/** Projects: list and create; a project's page: process editor, channels, releases, deploy with preview. */
import { api, get, q, type Channel, type Environment, type Process, type Project, type Release } from './api.js';
import { badge, card, clear, errorBox, fmtTime, h } from './dom.js';
import { processEditor } from './process.js';

export async function projectsView(root: HTMLElement) {
  const list = h('div');
  const name = h('input', { name: 'name', placeholder: 'Project name', required: true, 'data-testid': 'project-name' });
  const description = h('input', { name: 'description', placeholder: 'Description (optional)' });
  const errors = errorBox('project-error');
  async function load() {
    const projects = await get<Project[]>('/api/projects');
    clear(
      list,
      projects.length === 0
        ? h('p', { class: 'muted' }, 'No projects yet.')
        : h(
            'table',
            { 'data-testid': 'projects' },
            h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'Slug'), h('th', null, 'Description'))),
            h('tbody', null, projects.map((p) => h('tr', null, h('td', null, h('a', { href: `#/projects/${p.id}` }, p.name)), h('td', { class: 'mono' }, p.slug), h('td', null, p.description ?? '')))),
          ),
    );
  }
  clear(
    root,
    h('h1', null, 'Projects'),
    card('All projects', list),
    card(
      'New project',
      h(
        'form',
        {
          class: 'inline',
          onsubmit: async (e: Event) => {
            e.preventDefault();
            errors.clear();
            try {
              const p = await api<Project>('POST', '/api/projects', { name: name.value.trim(), description: description.value.trim() || undefined });
              location.hash = `#/projects/${p.id}`;
            } catch (err) {
              errors.show(err);
            }
          },
        },
        name,
        description,
        h('button', { type: 'submit', class: 'primary' }, 'Create project'),
        errors.el,
      ),
    ),
  );
  await load();
}

export async function projectView(root: HTMLElement, id: string) {
  const [project, process, channels, envs] = await Promise.all([
    get<Project>(`/api/projects/${encodeURIComponent(id)}`),
    get<Process>(`/api/projects/${encodeURIComponent(id)}/deployment-process`),
    get<Channel[]>(`/api/projects/${encodeURIComponent(id)}/channels`),
    get<Environment[]>('/api/environments'),
  ]);
  const releasesBox = h('div', { 'data-testid': 'releases' });
  const deployBox = h('div', { 'data-testid': 'deploy-panel' });
  const channelName = (cid: string) => channels.find((c) => c.id === cid)?.name ?? cid.slice(0, 8);

  const editor = processEditor(project.id, process);

  // Channels
  const channelsList = h('ul', { class: 'plain' });
  const renderChannels = () => clear(channelsList, channels.map((c) => h('li', null, h('span', { class: 'tag' }, c.name), c.id === project.defaultChannelId ? h('span', { class: 'muted small' }, ' default') : null)));
  renderChannels();
  const chName = h('input', { placeholder: 'New channel name', required: true });
  const chErrors = errorBox('channel-error');

  // Releases
  const version = h('input', { name: 'version', placeholder: 'Version, e.g. 1.0.0', required: true, 'data-testid': 'release-version' });
  const channelSelect = h('select', { name: 'channel', 'data-testid': 'release-channel' });
  const renderChannelSelect = () => clear(channelSelect, channels.map((c) => h('option', { value: c.id, selected: c.id === project.defaultChannelId }, c.name)));
  renderChannelSelect();
  const relErrors = errorBox('release-error');

  async function loadReleases() {
    const releases = await get<Release[]>(`/api/releases?${q({ projectId: project.id })}`);
    clear(
      releasesBox,
      releases.length === 0
        ? h('p', { class: 'muted' }, 'No releases yet.')
        : h(
            'table',
            null,
            h('thead', null, h('tr', null, ['Version', 'Channel', 'Packages', 'Created', ''].map((t) => h('th', null, t)))),
            h(
              'tbody',
              null,
              releases.map((r) =>
                h(
                  'tr',
                  { 'data-testid': `release-${r.version}` },
                  h('td', null, h('strong', null, r.version)),
                  h('td', null, channelName(r.channelId)),
                  h('td', null, r.packages.length ? r.packages.map((p) => h('span', { class: 'tag mono', title: `sha256 ${p.sha256}, ${p.sizeBytes} bytes` }, `${p.packageId} ${p.version}`)) : h('span', { class: 'muted' }, 'none')),
                  h('td', null, fmtTime(r.createdAt)),
                  h('td', null, h('button', { onclick: () => openDeploy(r) }, 'Deploy…')),
                ),
              ),
            ),
          ),
    );
  }

  function openDeploy(r: Release) {
    const envSelect = h('select', { 'data-testid': 'deploy-environment' }, h('option', { value: '' }, 'Choose an environment…'), envs.map((e) => h('option', { value: e.id }, e.name)));
    const guided = h('input', { type: 'checkbox', 'data-testid': 'guided-failure' });
    const preview = h('div', { 'data-testid': 'preview' });
    const errors = errorBox('deploy-error');
    const deployBtn = h('button', { class: 'primary', disabled: true, 'data-testid': 'deploy-button' }, 'Deploy');
    envSelect.addEventListener('change', async () => {
      errors.clear();
      deployBtn.disabled = true;
      clear(preview);
      const env = envs.find((e) => e.id === envSelect.value);
      if (!env) return;
      guided.checked = Boolean(env.guidedFailure);
      clear(preview, h('p', { class: 'muted' }, 'Loading preview…'));
      try {
        const p = await get<any>(`/api/deployments/preview?${q({ releaseId: r.id, environmentId: env.id })}`);
        clear(preview, renderPreview(p));
        deployBtn.disabled = false;
      } catch (err) {
        clear(preview);
        errors.show(err, 'Preview failed: ');
      }
    });
    deployBtn.addEventListener('click', async () => {
      errors.clear();
      deployBtn.disabled = true;
      try {
        const d = await api<{ id: string }>('POST', '/api/deployments', { releaseId: r.id, environmentId: envSelect.value, guidedFailure: guided.checked });
        location.hash = `#/deployments/${d.id}`;
      } catch (err) {
        deployBtn.disabled = false;
        errors.show(err);
      }
    });
    clear(
      deployBox,
      h(
        'div',
        { class: 'deploy card inner' },
        h('h3', null, `Deploy ${project.name} ${r.version}`),
        h('div', { class: 'inline' }, h('label', null, 'Environment ', envSelect), h('label', { class: 'check' }, guided, ' Guided failure (a failed target waits for retry, skip or abort)')),
        preview,
        errors.el,
        h('div', { class: 'inline' }, deployBtn, h('button', { class: 'ghost', onclick: () => clear(deployBox) }, 'Close')),
      ),
    );
    deployBox.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
  }

  clear(
    root,
    h('h1', null, project.name, ' ', h('span', { class: 'muted small mono' }, project.slug)),
    project.description ? h('p', { class: 'muted' }, project.description) : null,
    h(
      'div',
      { class: 'columns' },
      h(
        'div',
        { class: 'col-main' },
        card('Deployment process', editor),
      ),
      h(
        'div',
        { class: 'col-side' },
        card(
          'Releases',
          h(
            'form',
            {
              class: 'inline',
              onsubmit: async (e: Event) => {
                e.preventDefault();
                relErrors.clear();
                try {
                  const rel = await api<Release>('POST', '/api/releases', { projectId: project.id, version: version.value.trim(), channelId: channelSelect.value || undefined });
                  version.value = '';
                  await loadReleases();
                  openDeploy(rel);
                } catch (err) {
                  relErrors.show(err);
                }
              },
            },
            version,
            channelSelect,
            h('button', { type: 'submit', class: 'primary' }, 'Create release'),
          ),
          relErrors.el,
          deployBox,
          releasesBox,
        ),
        card(
          'Channels',
          channelsList,
          h(
            'form',
            {
              class: 'inline',
              onsubmit: async (e: Event) => {
                e.preventDefault();
                chErrors.clear();
                try {
                  channels.push(await api<Channel>('POST', `/api/projects/${project.id}/channels`, { name: chName.value.trim() }));
                  chName.value = '';
                  renderChannels();
                  renderChannelSelect();
                } catch (err) {
                  chErrors.show(err);
                }
              },
            },
            chName,
            h('button', { type: 'submit' }, 'Add channel'),
          ),
          chErrors.el,
        ),
      ),
    ),
  );
  await loadReleases();
}

function renderPreview(p: { steps: any[] }) {
  return h(
    'div',
    { class: 'preview' },
    h('h4', null, 'Preview: what will run where'),
    h(
      'ol',
      { class: 'preview-steps' },
      p.steps.map((s) =>
        h(
          'li',
          { class: s.willRun === false ? 'skipped' : '', 'data-testid': `preview-step-${s.name}` },
          h('div', null, h('strong', null, s.name), ' ', s.willRun === false ? badge('skipped') : null, s.skipReason ? h('span', { class: 'muted' }, ` ${s.skipReason}`) : null),
          h(
            'div',
            { class: 'small' },
            s.runsOn === 'server' ? 'runs on the server' : h('span', { 'data-testid': `preview-window-${s.name}` }, `window ${s.windowSize ?? 'all'}`),
            ` · failure budget ${s.maxFailures ?? 0}`,
            s.condition && s.condition !== 'success' ? ` · condition ${s.condition}` : '',
            s.startTrigger === 'withPrevious' ? ' · with previous' : '',
          ),
          s.targets?.length
            ? h('div', { class: 'targets', 'data-testid': `preview-targets-${s.name}` }, 'Targets in order: ', (s.targets as any[]).map((t, i) => h('span', { class: 'tag' }, `${i + 1}. ${t.machineName}`)))
            : null,
          h(
            'ul',
            { class: 'preview-actions' },
            (s.actions as any[]).map((a) => h('li', { class: a.willRun ? '' : 'skipped' }, `${a.name} (${a.type ?? 'action'})`, a.willRun ? '' : h('span', { class: 'muted' }, ` — skipped: ${a.skipReason ?? ''}`))),
          ),
        ),
      ),
    ),
  );
}
