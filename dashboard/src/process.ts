/**
 * The deployment process editor: steps and their actions as cards with a summary line and editable fields; add,
 * remove and reorder (up/down); Save sends PUT /api/projects/:id/deployment-process {version, steps} and shows the
 * API's validation messages (400) or the stale-version conflict (409) next to the form.
 */
import { api, ApiError, type Action, type Process, type Step } from './api.js';
import { clear, errorBox, h } from './dom.js';

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v));

/** "2" → 2, "25%" → "25%", "" → undefined; anything else is sent as typed, for the API to judge. */
function countOrPercent(v: string): number | string | undefined {
  const t = v.trim();
  if (!t) return undefined;
  return /^\d+$/.test(t) ? Number(t) : t;
}
function optNumber(v: string): number | undefined {
  const t = v.trim();
  if (!t) return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : (t as unknown as number);
}
function setOpt<T extends object>(o: T, k: keyof T, v: unknown) {
  if (v === undefined || v === '') delete o[k];
  else (o as any)[k] = v;
}
function move<T>(list: T[], i: number, d: number) {
  const j = i + d;
  if (j < 0 || j >= list.length) return;
  [list[i], list[j]] = [list[j], list[i]];
}

export function processEditor(projectId: string, initial: Process) {
  let version = initial.version;
  let steps: Step[] = clone(initial.steps ?? []);
  let dirty = false;
  const root = h('div', { class: 'process', 'data-testid': 'process-editor' });
  const list = h('div', { class: 'steps' });
  const errors = errorBox('process-errors');
  const status = h('span', { class: 'muted small', 'data-testid': 'process-status' });
  const saveBtn = h('button', { class: 'primary', 'data-testid': 'save-process' }, 'Save process');

  const markDirty = () => {
    dirty = true;
    status.textContent = `version ${version} · unsaved changes`;
  };

  function field(label: string, input: HTMLElement, wide = false) {
    return h('label', { class: `field${wide ? ' wide' : ''}`, 'data-field': label.split(' (')[0].toLowerCase().replace(/\W+/g, '-') }, h('span', null, label), input);
  }
  function text(value: unknown, onInput: (v: string) => void, attrs: Record<string, string> = {}) {
    const el = h('input', { value: value === undefined || value === null ? '' : String(value), ...attrs });
    el.addEventListener('input', () => {
      onInput(el.value);
      markDirty();
    });
    return el;
  }
  function select(value: string, options: string[], onChange: (v: string) => void, attrs: Record<string, string> = {}) {
    const el = h('select', attrs, options.map((o) => h('option', { value: o, selected: o === value }, o)));
    el.addEventListener('change', () => {
      onChange(el.value);
      markDirty();
      render();
    });
    return el;
  }

  function stepSummary(s: Step) {
    const roles = s.targetRoles?.length ? `roles ${s.targetRoles.join(', ')}` : 'runs on the server';
    return [roles, `window ${s.windowSize ?? 'all'}`, `max failures ${s.maxFailures ?? 0}`, `condition ${s.condition ?? 'success'}`, `start ${s.startTrigger ?? 'afterPrevious'}`].join(' · ');
  }
  function actionSummary(a: Action) {
    if (a.type === 'manual-intervention') return a.instructions ? `instructions: ${a.instructions}` : 'waits for a person';
    const script = (a.script ?? '').trim().split('\n')[0] ?? '';
    const bits = [a.type === 'package' ? `package ${a.packageId ?? '?'}` : '', script ? `$ ${script.length > 70 ? `${script.slice(0, 70)}…` : script}` : ''];
    return bits.filter(Boolean).join(' · ') || 'no script';
  }

  function actionCard(s: Step, a: Action, i: number) {
    const isScript = a.type !== 'manual-intervention';
    return h(
      'div',
      { class: 'action', 'data-testid': `action-${s.name}-${a.name}` },
      h(
        'div',
        { class: 'row-head' },
        h('span', { class: 'tag type' }, a.type),
        h('strong', null, a.name || '(unnamed action)'),
        h('span', { class: 'muted small summary' }, actionSummary(a)),
        h('span', { class: 'spacer' }),
        h('button', { class: 'icon', title: 'Move action up', onclick: () => change(() => move(s.actions, i, -1)), disabled: i === 0 }, '↑ Up'),
        h('button', { class: 'icon', title: 'Move action down', onclick: () => change(() => move(s.actions, i, 1)), disabled: i === s.actions.length - 1 }, '↓ Down'),
        h('button', { class: 'icon danger', title: 'Remove action', onclick: () => change(() => s.actions.splice(i, 1)) }, 'Remove action'),
      ),
      h(
        'div',
        { class: 'fields' },
        field('Action name', text(a.name, (v) => (a.name = v), { 'data-testid': 'action-name' })),
        field('Type', select(a.type, ['script', 'package', 'manual-intervention'], (v) => (a.type = v as Action['type']))),
        a.type === 'package' ? field('Package id', text(a.packageId, (v) => setOpt(a, 'packageId', v.trim()))) : null,
        isScript ? field('Timeout (s)', text(a.timeoutSeconds, (v) => setOpt(a, 'timeoutSeconds', optNumber(v)), { inputmode: 'numeric' })) : null,
        isScript ? field('Retries', text(a.retries, (v) => setOpt(a, 'retries', optNumber(v)), { inputmode: 'numeric' })) : null,
        isScript
          ? field(
              'Script (bash)',
              (() => {
                const ta = h('textarea', { rows: Math.min(12, Math.max(3, (a.script ?? '').split('\n').length + 1)), spellcheck: 'false', class: 'mono' });
                ta.value = a.script ?? '';
                ta.addEventListener('input', () => {
                  setOpt(a, 'script', ta.value);
                  markDirty();
                });
                return ta;
              })(),
              true,
            )
          : field(
              'Instructions',
              (() => {
                const ta = h('textarea', { rows: 3 });
                ta.value = a.instructions ?? '';
                ta.addEventListener('input', () => {
                  setOpt(a, 'instructions', ta.value);
                  markDirty();
                });
                return ta;
              })(),
              true,
            ),
      ),
    );
  }

  function stepCard(s: Step, i: number) {
    return h(
      'div',
      { class: 'step', 'data-testid': `step-${s.name}` },
      h(
        'div',
        { class: 'row-head' },
        h('span', { class: 'step-no' }, String(i + 1)),
        h('strong', null, s.name || '(unnamed step)'),
        h('span', { class: 'muted small summary' }, stepSummary(s)),
        h('span', { class: 'spacer' }),
        h('button', { class: 'icon', title: 'Move step up', onclick: () => change(() => move(steps, i, -1)), disabled: i === 0 }, '↑ Up'),
        h('button', { class: 'icon', title: 'Move step down', onclick: () => change(() => move(steps, i, 1)), disabled: i === steps.length - 1 }, '↓ Down'),
        h('button', { class: 'icon danger', title: 'Remove step', onclick: () => change(() => steps.splice(i, 1)) }, 'Remove step'),
      ),
      h(
        'div',
        { class: 'fields' },
        field('Step name', text(s.name, (v) => (s.name = v), { 'data-testid': 'step-name' })),
        field(
          'Target roles (comma separated)',
          text((s.targetRoles ?? []).join(', '), (v) => {
            const roles = v.split(',').map((r) => r.trim()).filter(Boolean);
            setOpt(s, 'targetRoles', roles.length ? roles : undefined);
          }, { placeholder: 'none: runs on the server' }),
        ),
        field('Window size', text(s.windowSize, (v) => setOpt(s, 'windowSize', countOrPercent(v)), { placeholder: 'all, 2 or 25%' })),
        field('Max failures', text(s.maxFailures, (v) => setOpt(s, 'maxFailures', countOrPercent(v)), { placeholder: '0, 1 or 10%' })),
        field('Condition', select(s.condition ?? 'success', ['success', 'failure', 'always'], (v) => (s.condition = v))),
        field('Start trigger', select(s.startTrigger ?? 'afterPrevious', ['afterPrevious', 'withPrevious'], (v) => (s.startTrigger = v))),
      ),
      h('div', { class: 'actions-list' }, s.actions.map((a, j) => actionCard(s, a, j))),
      h(
        'button',
        {
          onclick: () =>
            change(() => s.actions.push({ name: `Action ${s.actions.length + 1}`, type: s.targetRoles?.length ? 'script' : 'manual-intervention', ...(s.targetRoles?.length ? { script: 'echo hello' } : { instructions: 'Check, then proceed' }) })),
        },
        '+ Add action',
      ),
    );
  }

  function change(fn: () => void) {
    fn();
    markDirty();
    render();
  }

  function render() {
    clear(list, steps.length ? steps.map((s, i) => stepCard(s, i)) : h('p', { class: 'muted' }, 'No steps yet.'));
  }

  saveBtn.addEventListener('click', async () => {
    errors.clear();
    saveBtn.disabled = true;
    try {
      const saved = await api<Process>('PUT', `/api/projects/${projectId}/deployment-process`, { version, steps });
      version = saved.version;
      steps = clone(saved.steps);
      dirty = false;
      status.textContent = `version ${version} · saved`;
      render();
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) errors.show(err, 'Someone else changed the process meanwhile (stale version). Reload to see it: ');
      else if (err instanceof ApiError && err.status === 400) errors.show(err, 'The process is not valid: ');
      else errors.show(err);
    } finally {
      saveBtn.disabled = false;
    }
  });

  async function reload() {
    const p = await api<Process>('GET', `/api/projects/${projectId}/deployment-process`);
    version = p.version;
    steps = clone(p.steps);
    dirty = false;
    status.textContent = `version ${version}`;
    errors.clear();
    render();
  }

  status.textContent = `version ${version}`;
  render();
  clear(
    root,
    list,
    h(
      'div',
      { class: 'toolbar' },
      h('button', { onclick: () => change(() => steps.push({ name: `Step ${steps.length + 1}`, targetRoles: [], actions: [] })) }, '+ Add step'),
      h('span', { class: 'spacer' }),
      status,
      h('button', { class: 'ghost', onclick: () => (!dirty || confirm('Discard your changes?')) && void reload() }, 'Reload'),
      saveBtn,
    ),
    errors.el,
  );
  return root;
}
