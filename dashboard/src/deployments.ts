/**
 * Deployments: the recent list, and the live view of one deployment (grid of steps × targets, log, interruptions).
 * After the first REST load, every change arrives over the live socket: `deployment` snapshots, `log` entries
 * (deduplicated by seq), `interruptions` notices; nothing polls.
 */
import { api, get, q, type Deployment, type Environment, type Interruption, type LogEntry, type Project, type Release, type StepRun } from './api.js';
import { badge, card, clear, elapsed, errorBox, fmtTime, h } from './dom.js';
import * as live from './live.js';

const FINISHED = new Set(['success', 'failed', 'cancelled']);

async function lookups() {
  const [projects, envs, releases] = await Promise.all([get<Project[]>('/api/projects'), get<Environment[]>('/api/environments'), get<Release[]>('/api/releases')]);
  return {
    project: (id?: string) => projects.find((p) => p.id === id),
    env: (id: string) => envs.find((e) => e.id === id)?.name ?? id.slice(0, 8),
    release: (id: string) => releases.find((r) => r.id === id),
  };
}

export async function deploymentsView(root: HTMLElement) {
  const box = h('div');
  clear(root, h('h1', null, 'Deployments'), card('Recent deployments', box));
  let names = await lookups();
  async function load() {
    const list = await get<Deployment[]>(`/api/deployments?${q({ limit: 50 })}`);
    if (list.some((d) => !names.release(d.releaseId))) names = await lookups();
    clear(
      box,
      list.length === 0
        ? h('p', { class: 'muted' }, 'No deployments yet. Open a project, create a release and deploy it.')
        : h(
            'table',
            { 'data-testid': 'deployments' },
            h('thead', null, h('tr', null, ['Project', 'Release', 'Environment', 'State', 'Created', 'Duration'].map((t) => h('th', null, t)))),
            h(
              'tbody',
              null,
              list.map((d) => {
                const rel = names.release(d.releaseId);
                const project = names.project(d.projectId ?? rel?.projectId);
                return h(
                  'tr',
                  { 'data-testid': `deployment-${d.id}` },
                  h('td', null, h('a', { href: `#/deployments/${d.id}` }, project?.name ?? 'deployment')),
                  h('td', null, rel?.version ?? d.releaseId.slice(0, 8)),
                  h('td', null, names.env(d.environmentId)),
                  h('td', null, h('a', { href: `#/deployments/${d.id}` }, badge(d.state)), d.queuedBehind ? h('span', { class: 'small muted' }, ` behind ${d.queuedBehind.slice(0, 8)}`) : null),
                  h('td', null, fmtTime(d.createdAt)),
                  h('td', null, d.startedAt ? elapsed(d.startedAt, d.finishedAt) : '—'),
                );
              }),
            ),
          ),
    );
  }
  await load();
  let timer: ReturnType<typeof setTimeout> | undefined;
  live.on('deployments', () => {
    timer ??= setTimeout(() => {
      timer = undefined;
      if (root.isConnected) void load();
    }, 100);
  });
  return () => clearTimeout(timer);
}

export async function deploymentView(root: HTMLElement, id: string) {
  let dep = await get<Deployment>(`/api/deployments/${encodeURIComponent(id)}`);
  const names = await lookups();
  const release = names.release(dep.releaseId);
  const project = names.project(dep.projectId ?? release?.projectId);

  const stateEl = h('span', { class: 'dep-state' });
  const timesEl = h('span', { class: 'muted' });
  const gridBox = h('div', { class: 'grid-wrap' });
  const interruptionsBox = h('div', { class: 'interruptions', 'data-testid': 'interruptions' });
  const errors = errorBox('deployment-error');
  const cancelBtn = h('button', { class: 'danger', 'data-testid': 'cancel-deployment' }, 'Cancel deployment');
  const filter = h('select', { 'data-testid': 'log-filter' });
  const follow = h('input', { type: 'checkbox', checked: true, 'data-testid': 'log-follow' });
  const logEl = h('div', { class: 'log', 'data-testid': 'log', role: 'log', 'aria-live': 'polite' });
  const maxInFlight = new Map<string, number>();

  cancelBtn.addEventListener('click', async () => {
    if (!confirm('Cancel this deployment? No new target starts and running scripts are stopped.')) return;
    errors.clear();
    try {
      await api('POST', `/api/deployments/${dep.id}/cancel`);
    } catch (err) {
      errors.show(err);
    }
  });

  clear(
    root,
    h(
      'div',
      { class: 'dep-head' },
      h(
        'div',
        null,
        h('h1', null, project ? h('a', { href: `#/projects/${project.id}` }, project.name) : 'Deployment', ' ', h('span', { class: 'muted' }, dep.releaseVersion ?? release?.version ?? ''), ' → ', names.env(dep.environmentId)),
        h('div', { class: 'dep-meta' }, stateEl, timesEl),
      ),
      h('span', { class: 'spacer' }),
      cancelBtn,
    ),
    errors.el,
    interruptionsBox,
    card('Progress', gridBox),
    card(
      h('span', null, 'Log'),
      h('div', { class: 'toolbar' }, h('label', null, 'Target ', filter), h('label', { class: 'check' }, follow, ' follow'), h('span', { class: 'spacer' }), h('span', { class: 'muted small', 'data-testid': 'log-count' })),
      logEl,
    ),
  );

  // ---- deployment snapshot → header and grid
  function targetsInOrder(d: Deployment) {
    const names: string[] = [];
    for (const s of d.steps) for (const t of s.targets) if (!names.includes(t.machineName)) names.push(t.machineName);
    return names.filter((n) => n !== '(server)').sort((a, b) => a.localeCompare(b)).concat(names.includes('(server)') ? ['(server)'] : []);
  }

  function renderHeader(d: Deployment) {
    clear(
      stateEl,
      badge(d.state, 'deployment-state'),
      d.guidedFailure ? h('span', { class: 'tag' }, 'guided failure') : null,
      d.queuedBehind
        ? h('span', { class: 'small muted', 'data-testid': 'queued-behind' }, ' queued behind ', h('a', { href: `#/deployments/${d.queuedBehind}`, class: 'mono' }, d.queuedBehind.slice(0, 8)), ' (one deployment at a time per project and environment)')
        : null,
    );
    clear(timesEl, ` created ${fmtTime(d.createdAt)}`, d.startedAt ? [' · elapsed ', elapsed(d.startedAt, d.finishedAt, 'deployment-elapsed')] : ' · not started');
    cancelBtn.hidden = FINISHED.has(d.state);
    cancelBtn.disabled = d.state === 'cancelling';
  }

  function inFlight(s: StepRun) {
    return s.targets.filter((t) => t.state === 'running').length;
  }

  function renderGrid(d: Deployment) {
    const cols = targetsInOrder(d);
    clear(
      gridBox,
      h(
        'table',
        { class: 'grid', 'data-testid': 'grid' },
        h('thead', null, h('tr', null, h('th', null, 'Step'), cols.map((c) => h('th', { class: 'mono' }, c)))),
        h(
          'tbody',
          null,
          d.steps.map((s) => {
            const x = inFlight(s);
            const seen = Math.max(maxInFlight.get(s.name) ?? 0, x);
            maxInFlight.set(s.name, seen);
            const w = s.windowSize ?? s.targets.length;
            return h(
              'tr',
              { 'data-testid': `step-row-${s.name}` },
              h(
                'th',
                { class: 'step-cell' },
                h('div', null, h('strong', null, s.name), ' ', badge(s.state, `step-state-${s.name}`)),
                h('div', { class: 'small muted', 'data-testid': `inflight-${s.name}`, 'data-inflight': x, 'data-window': w, 'data-max-inflight': seen }, `in flight ${x} / window ${w}`),
                s.maxFailures ? h('div', { class: 'small muted' }, `failure budget ${s.maxFailures}`) : null,
                s.skipReason ? h('div', { class: 'small muted' }, s.skipReason) : null,
              ),
              cols.map((c) => {
                const t = s.targets.find((x) => x.machineName === c);
                if (!t) return h('td', { class: 'cell none' }, '');
                return h(
                  'td',
                  { class: `cell state-${t.state}`, 'data-testid': `cell-${s.name}-${t.machineName}`, 'data-state': t.state, title: t.error ?? '' },
                  h('div', { class: 'cell-head' }, h('span', { class: 'cell-state' }, t.state), t.startedAt ? elapsed(t.startedAt, t.finishedAt) : null),
                  t.waitingFor ? h('div', { class: 'small muted', 'data-testid': `waiting-${s.name}-${t.machineName}` }, `waiting for the ${t.waitingFor} (busy with another deployment)`) : null,
                  t.attempt && t.attempt > 1 ? h('div', { class: 'small' }, `attempt ${t.attempt}`) : null,
                  t.error ? h('div', { class: 'small err' }, t.failureKind ? `${t.failureKind}: ` : '', t.error) : null,
                  h(
                    'ul',
                    { class: 'cell-actions' },
                    t.actions.map((a) => h('li', { class: `state-${a.state}`, 'data-state': a.state, title: a.skipReason ?? '' }, h('span', { class: 'dot' }), a.name, a.exitCode !== undefined && a.exitCode !== null && a.exitCode !== 0 ? ` (exit ${a.exitCode})` : '')),
                  ),
                );
              }),
            );
          }),
        ),
      ),
    );
  }

  function renderFilter(d: Deployment) {
    const current = filter.value;
    const opts: Array<[string, string]> = [['', 'All targets']];
    for (const s of d.steps) for (const t of s.targets) if (t.machineId && !opts.some(([v]) => v === t.machineId)) opts.push([t.machineId, t.machineName]);
    opts.push(['server', 'Server only']);
    opts.sort((a, b) => (a[0] === '' ? -1 : b[0] === '' ? 1 : a[0] === 'server' ? 1 : b[0] === 'server' ? -1 : a[1].localeCompare(b[1])));
    if (filter.options.length === opts.length && [...filter.options].every((o, i) => o.value === opts[i][0])) return;
    clear(filter, opts.map(([v, n]) => h('option', { value: v, selected: v === current }, n)));
  }

  function applySnapshot(d: Deployment) {
    dep = d;
    renderHeader(d);
    renderGrid(d);
    renderFilter(d);
    machineNames.clear();
    for (const s of d.steps) for (const t of s.targets) if (t.machineId) machineNames.set(t.machineId, t.machineName);
  }

  // ---- log: dedupe by seq, keep order, tail
  const entries: LogEntry[] = [];
  const seen = new Set<number>();
  const machineNames = new Map<string, string>();
  let lastSeq = 0;
  const matches = (e: LogEntry) => !filter.value || (filter.value === 'server' ? !e.machineId : e.machineId === filter.value);
  const logLine = (e: LogEntry) =>
    h(
      'div',
      { class: `line level-${e.level}`, 'data-seq': e.seq, 'data-machine': e.machineId ?? '' },
      h('span', { class: 'ts' }, new Date(e.at).toLocaleTimeString()),
      h('span', { class: 'who' }, e.machineId ? (machineNames.get(e.machineId) ?? e.machineId.slice(0, 8)) : 'server'),
      e.stepName ? h('span', { class: 'where' }, e.actionName ? `${e.stepName}/${e.actionName}` : e.stepName) : null,
      h('span', { class: 'text' }, e.text),
    );
  const logCount = () => {
    const el = root.querySelector('[data-testid="log-count"]');
    if (el) el.textContent = `${entries.length} lines`;
  };
  function addLog(list: LogEntry[]) {
    const fresh = list.filter((e) => !seen.has(e.seq));
    if (!fresh.length) return;
    for (const e of fresh) seen.add(e.seq);
    const inOrder = fresh.every((e, i) => e.seq > (i ? fresh[i - 1].seq : lastSeq));
    entries.push(...fresh);
    if (!inOrder) {
      entries.sort((a, b) => a.seq - b.seq);
      renderLog();
    } else {
      for (const e of fresh) if (matches(e)) logEl.appendChild(logLine(e));
    }
    lastSeq = Math.max(lastSeq, ...fresh.map((e) => e.seq));
    logCount();
    if (follow.checked) logEl.scrollTop = logEl.scrollHeight;
  }
  function renderLog() {
    clear(logEl, entries.filter(matches).map(logLine));
    if (follow.checked) logEl.scrollTop = logEl.scrollHeight;
  }
  filter.addEventListener('change', renderLog);
  follow.addEventListener('change', () => follow.checked && (logEl.scrollTop = logEl.scrollHeight));
  // Scrolling up stops following; back at the bottom follows again.
  logEl.addEventListener('scroll', () => {
    follow.checked = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 8;
  });

  // ---- interruptions
  const notesDraft = new Map<string, string>();
  let intrBusy = false;
  let intrAgain = false;
  async function loadInterruptions() {
    if (intrBusy) {
      intrAgain = true;
      return;
    }
    intrBusy = true;
    try {
      const list = await get<Interruption[]>(`/api/interruptions?${q({ deploymentId: dep.id, state: 'pending' })}`);
      renderInterruptions(list);
    } catch (err) {
      errors.show(err);
    } finally {
      intrBusy = false;
      if (intrAgain) {
        intrAgain = false;
        void loadInterruptions();
      }
    }
  }
  function renderInterruptions(list: Interruption[]) {
    const shown = [...interruptionsBox.querySelectorAll<HTMLElement>('[data-interruption-id]')].map((e) => e.dataset.interruptionId).join(',');
    if (shown === list.map((i) => i.id).join(',')) return; // keep typed notes and focus
    clear(
      interruptionsBox,
      list.map((i) => {
        const notes = h('textarea', { rows: 2, placeholder: 'Notes (recorded with your answer)', 'data-testid': 'interruption-notes' });
        notes.value = notesDraft.get(i.id) ?? '';
        notes.addEventListener('input', () => notesDraft.set(i.id, notes.value));
        const box = errorBox('interruption-error');
        const buttons = i.allowedResults.map((r) =>
          h(
            'button',
            {
              class: r === 'abort' ? 'danger' : r === 'proceed' || r === 'retry' ? 'primary' : '',
              'data-result': r,
              onclick: async () => {
                box.clear();
                buttons.forEach((b) => (b.disabled = true));
                try {
                  await api('POST', `/api/interruptions/${i.id}/submit`, { result: r, notes: notes.value || undefined });
                  notesDraft.delete(i.id);
                  void loadInterruptions();
                } catch (err) {
                  buttons.forEach((b) => (b.disabled = false));
                  box.show(err);
                }
              },
            },
            r[0].toUpperCase() + r.slice(1),
          ),
        );
        return h(
          'div',
          { class: `interruption kind-${i.kind}`, 'data-testid': 'interruption', 'data-interruption-id': i.id },
          h('h3', null, i.kind === 'guided-failure' ? 'Failed: what now?' : 'Manual intervention needed', ' ', h('span', { class: 'muted small' }, `${i.stepName} / ${i.actionName}${i.machineName ? ` on ${i.machineName}` : ''}`)),
          i.instructions ? h('p', { class: 'instructions', 'data-testid': 'interruption-instructions' }, i.instructions) : null,
          notes,
          h('div', { class: 'inline' }, buttons),
          box.el,
        );
      }),
    );
  }

  applySnapshot(dep);
  await loadInterruptions();

  live.on('deployment', (d: Deployment) => d.id === dep.id && applySnapshot(d));
  live.on('log', (p: { deploymentId: string; entries: LogEntry[] }) => p.deploymentId === dep.id && addLog(p.entries));
  live.on('interruptions', (p: { deploymentId: string }) => p.deploymentId === dep.id && void loadInterruptions());
  const unwatch = live.watch(dep.id, () => lastSeq);
  return () => unwatch();
}
