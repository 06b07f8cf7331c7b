/**
 * The deployment process editor: steps and their actions as cards with a summary line and editable fields; add,
 * remove and reorder (up/down); Save sends PUT /api/projects/:id/deployment-process {version, steps} and shows the
 * API's validation messages (400) or the stale-version conflict (409) next to the form.
 *
 * The editor's store holds the process being edited; fields change the steps in place and mark it dirty, and the
 * editor renders again. A field whose text does not map one to one onto the model (roles "web," while typing, a
 * number "1.") keeps the text as typed in `drafts` until the process is saved or reloaded, so typing is never undone.
 */
import {
  api,
  ApiError,
  type Action,
  type Channel,
  type Environment,
  type HealthCheckDraft,
  type Process,
  type Step,
} from './api.js';
import { html, live, nothing, repeat, type TemplateResult } from './lit.js';
import { can } from './me.js';
import { mount, Store } from './store.js';
import { checkedOf, errorBox, problem, valueOf, type Problem } from './ui.js';

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
  if (v === undefined || v === '' || v === false || (Array.isArray(v) && v.length === 0)) delete o[k];
  else (o as Record<keyof T, unknown>)[k] = v;
}
function move<T>(list: T[], i: number, d: number) {
  const j = i + d;
  if (j < 0 || j >= list.length) return;
  [list[i], list[j]] = [list[j], list[i]];
}
const str = (v: unknown) => (v === undefined || v === null ? '' : String(v));
/**
 * A package action's substituteInFiles as one line of comma-separated globs (none: the field goes). A comma inside
 * braces belongs to the glob (`config/{a,b}.conf`).
 */
const globs = (v: unknown) => ((v as string[] | undefined) ?? []).join(', ');
const parseGlobs = (v: string) => {
  const list: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of v) {
    if (ch === '{') depth++;
    else if (ch === '}') depth = Math.max(0, depth - 1);
    if (ch === ',' && depth === 0) {
      list.push(cur);
      cur = '';
    } else cur += ch;
  }
  list.push(cur);
  const out = list.map((g) => g.trim()).filter(Boolean);
  return out.length ? out : undefined;
};
/** Batch sizes as typed, "1, 10%, 100%", and back; an empty list leaves the key out. */
const fmtList = (v: unknown) => (Array.isArray(v) ? v.join(', ') : str(v));
function parseBatches(v: string): Array<number | string> | undefined {
  const list = v
    .split(',')
    .map((x) => countOrPercent(x))
    .filter((x): x is number | string => x !== undefined);
  return list.length ? list : undefined;
}

/** The rollout policy's keys: with any of them set, the rollout fields show even on a step without roles. */
const ROLLOUT_KEYS = [
  'batches',
  'bakeSeconds',
  'healthCheck',
  'approveEachBatch',
  'approvalTimeoutSeconds',
  'approvalDefault',
  'preventSelfApproval',
  'spreadBy',
  'skipUnavailable',
] as const;

/** Stable keys for steps and actions (objects), so moving one moves its DOM, focus included. */
const keys = new WeakMap<object, number>();
let nextKey = 1;
const keyOf = (o: object) => keys.get(o) ?? (keys.set(o, nextKey++), nextKey - 1);

interface EditorState {
  version: number;
  steps: Step[];
  dirty: boolean;
  saved: boolean;
  saving: boolean;
  error: Problem | null;
  envs: Environment[];
  channels: Channel[];
}

export class ProcessEditor {
  readonly store: Store<EditorState>;
  readonly el = document.createElement('div');
  private drafts = new WeakMap<object, Record<string, string>>();
  /**
   * A step's health check while it has no field yet: the fields edit this object, which becomes the step's
   * `healthCheck` with its first field and leaves it with its last, so an empty check is never sent.
   */
  private looseChecks = new WeakMap<Step, HealthCheckDraft>();
  private unmount: () => void;

  constructor(
    private projectId: string,
    initial: Process,
    envs: Environment[],
    channels: Channel[],
  ) {
    this.store = new Store<EditorState>({
      version: initial.version,
      steps: clone(initial.steps ?? []),
      dirty: false,
      saved: false,
      saving: false,
      error: null,
      envs,
      channels,
    });
    this.unmount = mount(this.el, this.store, (s) => this.view(s));
  }

  setChannels(channels: Channel[]) {
    this.store.set({ channels });
  }

  destroy() {
    this.unmount();
  }

  // ---- changes
  private touch() {
    this.store.set((s) => ({ steps: s.steps, dirty: true, saved: false }));
  }
  private change(fn: () => void) {
    fn();
    this.touch();
  }

  private async save() {
    this.store.set({ error: null, saving: true });
    const { version, steps } = this.store.state;
    try {
      const saved = await api<Process>('PUT', `/api/projects/${this.projectId}/deployment-process`, { version, steps });
      this.store.set({ version: saved.version, steps: clone(saved.steps), dirty: false, saved: true, saving: false });
    } catch (err) {
      const prefix =
        err instanceof ApiError && err.code === 'stale_version'
          ? 'Someone else changed the process meanwhile (stale version). Reload to see it: '
          : err instanceof ApiError && err.status === 400
            ? 'The process is not valid: '
            : undefined;
      this.store.set({ error: problem(err, prefix), saving: false });
    }
  }

  private async reload() {
    if (this.store.state.dirty && !confirm('Discard your changes?')) return;
    try {
      const p = await api<Process>('GET', `/api/projects/${this.projectId}/deployment-process`);
      this.store.set({ version: p.version, steps: clone(p.steps), dirty: false, saved: false, error: null });
    } catch (err) {
      this.store.set({ error: problem(err) });
    }
  }

  // ---- fields
  private field(label: string, control: unknown, wide = false) {
    return html`<label class="field${wide ? ' wide' : ''}" data-field=${slug(label)}
      ><span>${label}</span>${control}</label
    >`;
  }

  /** A text input bound to `obj[key]`: shows the typed text while it is being edited, the model's otherwise. */
  private text(
    obj: object,
    key: string,
    format: (v: unknown) => string,
    parse: (raw: string) => unknown,
    o: { testid?: string; placeholder?: string; numeric?: boolean; keepEmpty?: boolean; then?: () => void } = {},
  ) {
    const typed = this.drafts.get(obj)?.[key];
    const value = typed ?? format((obj as Record<string, unknown>)[key]);
    const onInput = (e: Event) => {
      const raw = valueOf(e);
      this.drafts.set(obj, { ...(this.drafts.get(obj) ?? {}), [key]: raw });
      if (o.keepEmpty) (obj as Record<string, unknown>)[key] = parse(raw);
      else setOpt(obj, key as never, parse(raw));
      o.then?.();
      this.touch();
    };
    return html`<input
      .value=${live(value)}
      data-testid=${o.testid ?? nothing}
      placeholder=${o.placeholder ?? nothing}
      inputmode=${o.numeric ? 'numeric' : nothing}
      @input=${onInput}
    />`;
  }

  private textarea(obj: object, key: string, o: { rows: number; mono?: boolean; then?: () => void }) {
    const onInput = (e: Event) => {
      setOpt(obj, key as never, valueOf(e));
      o.then?.();
      this.touch();
    };
    return html`<textarea
      rows=${o.rows}
      spellcheck="false"
      class=${o.mono ? 'mono' : ''}
      .value=${live(str((obj as Record<string, unknown>)[key]))}
      @input=${onInput}
    ></textarea>`;
  }

  private select(
    value: string,
    options: readonly string[],
    onChange: (v: string) => void,
    labels: Record<string, string> = {},
  ) {
    return html`<select @change=${(e: Event) => this.change(() => onChange(valueOf(e)))}>
      ${options.map((o) => html`<option value=${o} .selected=${live(o === value)}>${labels[o] ?? o}</option>`)}
    </select>`;
  }

  /** A checkbox bound to `obj[key]` (unticked leaves the key out); `then` runs after the change. */
  private checkbox<T extends object>(obj: T, key: keyof T & string, then?: (on: boolean) => void) {
    const on = !!(obj as Record<string, unknown>)[key];
    return html`<input
      type="checkbox"
      .checked=${live(on)}
      @change=${(e: Event) =>
        this.change(() => {
          setOpt(obj, key, checkedOf(e));
          then?.(checkedOf(e));
        })}
    />`;
  }

  /** Checkboxes picking ids by name; ids the list does not know (a deleted environment) stay shown and kept. */
  private pick(
    label: string,
    whenNone: string,
    options: Array<{ id: string; name: string }>,
    selected: string[] | undefined,
    onChange: (ids: string[]) => void,
  ) {
    const sel = selected ?? [];
    const all = [
      ...options,
      ...sel
        .filter((id) => !options.some((o) => o.id === id))
        .map((id) => ({ id, name: `${id.slice(0, 8)} (unknown)` })),
    ];
    const toggle = (id: string, on: boolean) =>
      this.change(() => onChange(on ? [...sel.filter((x) => x !== id), id] : sel.filter((x) => x !== id)));
    return html`<div class="field pick" role="group" aria-label=${label} data-field=${slug(label)}>
      <span>${label}</span>
      <div class="choices">
        ${
          all.length
            ? all.map(
                (o) =>
                  html`<label class="check"
                    ><input
                      type="checkbox"
                      value=${o.id}
                      .checked=${live(sel.includes(o.id))}
                      @change=${(e: Event) => toggle(o.id, checkedOf(e))}
                    />
                    ${o.name}</label
                  >`,
              )
            : html`<span class="muted">none yet</span>`
        }
        ${all.length && !sel.length && whenNone ? html`<span class="muted">${whenNone}</span>` : nothing}
      </div>
    </div>`;
  }

  /**
   * Changes an action's type and drops the fields the new type's card does not show (a manual intervention's
   * script, a script's package): what is saved is what the person sees.
   */
  private retype(a: Action, type: Action['type']) {
    a.type = type;
    const email: Array<keyof Action> = ['to', 'subject', 'body'];
    const hidden: Array<keyof Action> =
      type === 'manual-intervention'
        ? ['script', 'packageId', 'substituteInFiles', 'timeoutSeconds', 'retries', 'retryDelaySeconds', ...email]
        : type === 'email'
          ? [
              'script',
              'packageId',
              'substituteInFiles',
              'timeoutSeconds',
              'retries',
              'retryDelaySeconds',
              'instructions',
              'preventSelfApproval',
            ]
          : type === 'script'
            ? ['packageId', 'substituteInFiles', 'instructions', 'preventSelfApproval', ...email]
            : ['instructions', 'preventSelfApproval', ...email];
    const typed = this.drafts.get(a);
    for (const k of hidden) {
      delete a[k];
      if (typed) delete typed[k as string];
    }
  }

  // ---- cards
  private stepSummary(s: Step) {
    const roles = s.targetRoles?.length ? `roles ${s.targetRoles.join(', ')}` : 'runs on the server';
    return [
      roles,
      `window ${s.windowSize ?? 'all'}`,
      `max failures ${s.maxFailures ?? 0}`,
      `condition ${s.condition ?? 'success'}`,
      `start ${s.startTrigger ?? 'afterPrevious'}`,
      s.batches?.length ? `batches ${fmtList(s.batches)}` : '',
      s.bakeSeconds !== undefined ? `bake ${s.bakeSeconds} s` : '',
      s.healthCheck ? 'health check' : '',
      s.approveEachBatch
        ? `approve each batch${s.approvalTimeoutSeconds !== undefined ? ` (${s.approvalDefault ?? 'abort'} after ${s.approvalTimeoutSeconds} s)` : ''}${s.preventSelfApproval ? ', not by the deployer' : ''}`
        : '',
      s.spreadBy ? `spread by ${s.spreadBy}` : '',
      s.skipUnavailable ? 'skip unavailable' : '',
    ]
      .filter(Boolean)
      .join(' · ');
  }

  /** The step's health check object, attached to the step or waiting for its first field (`looseChecks`). */
  private healthCheckOf(s: Step): HealthCheckDraft {
    if (s.healthCheck) return s.healthCheck;
    const loose = this.looseChecks.get(s) ?? {};
    this.looseChecks.set(s, loose);
    return loose;
  }

  /**
   * The rollout policy's fields (shared/src/process): shown for a step with target roles, since a step on the server
   * refuses them, or for any step that has one set (so it can be seen and cleared). Empty fields leave their key out.
   */
  private rollout(s: Step) {
    if (!s.targetRoles?.length && !ROLLOUT_KEYS.some((k) => s[k] !== undefined)) return nothing;
    const hc = this.healthCheckOf(s);
    // A health check with no field left goes from the step; its first field puts it (back) on the step.
    const attach = () => {
      if (Object.keys(hc).length) s.healthCheck = hc;
      else delete s.healthCheck;
    };
    const num = (v: unknown) => str(v);
    const numeric = (placeholder?: string, then?: () => void) => ({ numeric: true, placeholder, then });
    const approvalOff = (on: boolean) => {
      if (on) return;
      // Without approvals, their timeout and default mean nothing (the API refuses them): they go too.
      delete s.approvalTimeoutSeconds;
      delete s.approvalDefault;
      delete s.preventSelfApproval;
      const typed = this.drafts.get(s);
      if (typed) {
        delete typed.approvalTimeoutSeconds;
        delete typed.approvalDefault;
        delete typed.preventSelfApproval;
      }
    };
    return html`<div class="rollout" data-testid="rollout-${s.name}">
      <h4 class="small muted">Rollout</h4>
      <div class="fields">
        ${this.field('Batches (comma separated)', this.text(s, 'batches', fmtList, parseBatches, { placeholder: 'all at once; or 1, 10%, 100%' }))}
        ${this.field('Bake (s)', this.text(s, 'bakeSeconds', num, optNumber, numeric('none')))}
        ${this.field(
          'Spread by (label)',
          this.text(s, 'spreadBy', str, (v) => v.trim(), { placeholder: 'zone' }),
        )}
        ${this.field('Skip unavailable', this.checkbox(s, 'skipUnavailable'))}
        ${this.field('Approve each batch', this.checkbox(s, 'approveEachBatch', approvalOff))}
        ${
          s.approveEachBatch
            ? html`${this.field('Approval timeout (s)', this.text(s, 'approvalTimeoutSeconds', num, optNumber, numeric('none: waits')))}
              ${this.field(
                'Approval default',
                this.select(s.approvalDefault ?? '', ['', 'abort', 'proceed'], (v) => setOpt(s, 'approvalDefault', v), {
                  '': 'not set (abort)',
                }),
              )}
              ${this.field('Prevent self-approval (not by who deployed)', this.checkbox(s, 'preventSelfApproval'))}`
            : nothing
        }
        ${this.field('Check timeout (s)', this.text(hc, 'timeoutSeconds', num, optNumber, numeric('60', attach)))}
        ${this.field('Check retries', this.text(hc, 'retries', num, optNumber, numeric('0', attach)))}
        ${this.field('Check interval (s)', this.text(hc, 'intervalSeconds', num, optNumber, numeric('5', attach)))}
        ${this.field(
          'Health check script (bash, after the actions and at the end of the bake)',
          this.textarea(hc, 'script', {
            rows: Math.min(8, Math.max(2, (hc.script ?? '').split('\n').length + 1)),
            mono: true,
            then: attach,
          }),
          true,
        )}
      </div>
    </div>`;
  }

  private actionSummary(a: Action, st: EditorState) {
    const envName = (id: string) => st.envs.find((e) => e.id === id)?.name ?? id.slice(0, 8);
    const chName = (id: string) => st.channels.find((c) => c.id === id)?.name ?? id.slice(0, 8);
    const what =
      a.type === 'email'
        ? `email to ${(a.to ?? []).join(', ') || '?'}${a.subject ? `: ${a.subject}` : ''}`
        : a.type === 'manual-intervention'
          ? a.instructions
            ? `instructions: ${a.instructions}`
            : 'waits for a person'
          : (() => {
              const script = (a.script ?? '').trim().split('\n')[0] ?? '';
              const bits = [
                a.type === 'package' ? `package ${a.packageId ?? '?'}` : '',
                script ? `$ ${script.length > 70 ? `${script.slice(0, 70)}…` : script}` : '',
              ];
              return bits.filter(Boolean).join(' · ') || 'no script';
            })();
    const limits = [
      a.environmentIds?.length ? `only in ${a.environmentIds.map(envName).join(', ')}` : '',
      a.excludedEnvironmentIds?.length ? `not in ${a.excludedEnvironmentIds.map(envName).join(', ')}` : '',
      a.channelIds?.length ? `channels ${a.channelIds.map(chName).join(', ')}` : '',
    ];
    return [what, ...limits].filter(Boolean).join(' · ');
  }

  private actionCard(s: Step, a: Action, i: number, st: EditorState): TemplateResult {
    const isScript = a.type === 'script' || a.type === 'package';
    const list = (v: unknown) => ((v as string[] | undefined) ?? []).join(', ');
    const parseList = (v: string) => {
      const out = v
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);
      return out.length ? out : undefined;
    };
    const num = (v: unknown) => str(v);
    return html`<div class="action${a.disabled ? ' is-disabled' : ''}" data-testid="action-${s.name}-${a.name}">
      <div class="row-head">
        <span class="tag type">${a.type}</span>
        <strong>${a.name || '(unnamed action)'}</strong>
        ${a.disabled ? html`<span class="tag off">disabled</span>` : nothing}
        <span class="muted small summary">${this.actionSummary(a, st)}</span>
        <span class="spacer"></span>
        <button
          class="icon"
          title="Move action up"
          ?disabled=${i === 0}
          @click=${() => this.change(() => move(s.actions, i, -1))}
        >
          ↑ Up
        </button>
        <button
          class="icon"
          title="Move action down"
          ?disabled=${i === s.actions.length - 1}
          @click=${() => this.change(() => move(s.actions, i, 1))}
        >
          ↓ Down
        </button>
        <button class="icon danger" title="Remove action" @click=${() => this.change(() => s.actions.splice(i, 1))}>
          Remove action
        </button>
      </div>
      <div class="fields">
        ${this.field(
          'Action name',
          this.text(a, 'name', str, (v) => v, { testid: 'action-name', keepEmpty: true }),
        )}
        ${this.field(
          'Type',
          this.select(a.type, ['script', 'package', 'manual-intervention', 'email'], (v) =>
            this.retype(a, v as Action['type']),
          ),
        )}
        ${
          a.type === 'package'
            ? this.field(
                'Package id',
                this.text(a, 'packageId', str, (v) => v.trim()),
              )
            : nothing
        }
        ${
          a.type === 'package'
            ? this.field(
                'Substitute variables in files (globs, comma separated)',
                this.text(a, 'substituteInFiles', globs, parseGlobs, {
                  testid: 'substitute-in-files',
                  placeholder: 'none, e.g. config/*.conf, index.html',
                }),
              )
            : nothing
        }
        ${isScript ? this.field('Timeout (s)', this.text(a, 'timeoutSeconds', num, optNumber, { numeric: true })) : nothing}
        ${isScript ? this.field('Retries', this.text(a, 'retries', num, optNumber, { numeric: true })) : nothing}
        ${isScript ? this.field('Retry delay (s)', this.text(a, 'retryDelaySeconds', num, optNumber, { numeric: true, placeholder: '0' })) : nothing}
        ${this.field('Disabled', html`<input type="checkbox" .checked=${live(!!a.disabled)} @change=${(e: Event) => this.change(() => setOpt(a, 'disabled', checkedOf(e)))} />`)}
        ${this.pick('Environments', 'none ticked: every one', st.envs, a.environmentIds, (ids) => setOpt(a, 'environmentIds', ids))}
        ${this.pick('Excluded environments', '', st.envs, a.excludedEnvironmentIds, (ids) => setOpt(a, 'excludedEnvironmentIds', ids))}
        ${this.pick('Channels', 'none ticked: every one', st.channels, a.channelIds, (ids) => setOpt(a, 'channelIds', ids))}
        ${
          a.type === 'email'
            ? html`${this.field('To (comma separated)', this.text(a, 'to', list, parseList))}
              ${this.field(
                'Subject',
                this.text(a, 'subject', str, (v) => v),
              )}
              ${this.field('Body', this.textarea(a, 'body', { rows: 6 }), true)}`
            : isScript
              ? this.field(
                  'Script (bash)',
                  this.textarea(a, 'script', {
                    rows: Math.min(12, Math.max(3, (a.script ?? '').split('\n').length + 1)),
                    mono: true,
                  }),
                  true,
                )
              : this.field('Instructions', this.textarea(a, 'instructions', { rows: 3 }), true)
        }
        ${
          a.type === 'manual-intervention'
            ? this.field('Prevent self-approval (not by who deployed)', this.checkbox(a, 'preventSelfApproval'))
            : nothing
        }
      </div>
    </div>`;
  }

  private stepCard(s: Step, i: number, st: EditorState): TemplateResult {
    const roles = (v: unknown) => ((v as string[] | undefined) ?? []).join(', ');
    const parseRoles = (v: string) => {
      const list = v
        .split(',')
        .map((r) => r.trim())
        .filter(Boolean);
      return list.length ? list : undefined;
    };
    const addAction = () =>
      this.change(() =>
        s.actions.push({
          name: `Action ${s.actions.length + 1}`,
          type: s.targetRoles?.length ? 'script' : 'manual-intervention',
          ...(s.targetRoles?.length ? { script: 'echo hello' } : { instructions: 'Check, then proceed' }),
        }),
      );
    return html`<div class="step" data-testid="step-${s.name}">
      <div class="row-head">
        <span class="step-no">${i + 1}</span>
        <strong>${s.name || '(unnamed step)'}</strong>
        <span class="muted small summary">${this.stepSummary(s)}</span>
        <span class="spacer"></span>
        <button
          class="icon"
          title="Move step up"
          ?disabled=${i === 0}
          @click=${() => this.change(() => move(st.steps, i, -1))}
        >
          ↑ Up
        </button>
        <button
          class="icon"
          title="Move step down"
          ?disabled=${i === st.steps.length - 1}
          @click=${() => this.change(() => move(st.steps, i, 1))}
        >
          ↓ Down
        </button>
        <button class="icon danger" title="Remove step" @click=${() => this.change(() => st.steps.splice(i, 1))}>
          Remove step
        </button>
      </div>
      <div class="fields">
        ${this.field(
          'Step name',
          this.text(s, 'name', str, (v) => v, { testid: 'step-name', keepEmpty: true }),
        )}
        ${this.field('Target roles (comma separated)', this.text(s, 'targetRoles', roles, parseRoles, { placeholder: 'none: runs on the server' }))}
        ${this.field('Window size', this.text(s, 'windowSize', str, countOrPercent, { placeholder: 'all, 2 or 25%' }))}
        ${this.field('Max failures', this.text(s, 'maxFailures', str, countOrPercent, { placeholder: '0, 1 or 10%' }))}
        ${this.field(
          'Condition',
          this.select(s.condition ?? 'success', ['success', 'failure', 'always'], (v) => (s.condition = v)),
        )}
        ${this.field(
          'Start trigger',
          this.select(
            s.startTrigger ?? 'afterPrevious',
            ['afterPrevious', 'withPrevious'],
            (v) => (s.startTrigger = v),
          ),
        )}
      </div>
      ${this.rollout(s)}
      <div class="actions-list">${repeat(s.actions, keyOf, (a, j) => this.actionCard(s, a, j, st))}</div>
      <button @click=${addAction}>+ Add action</button>
    </div>`;
  }

  private view(st: EditorState) {
    // Editing the process is admin's (docs/api.md, "Roles"): other keys see it without the means to save it.
    const editable = can('edit-process');
    const status = `version ${st.version}${st.dirty ? ' · unsaved changes' : st.saved ? ' · saved' : ''}`;
    return html`<div class="process" data-testid="process-editor">
      <div class="steps">
        ${st.steps.length ? repeat(st.steps, keyOf, (s, i) => this.stepCard(s, i, st)) : html`<p class="muted">No steps yet.</p>`}
      </div>
      <div class="toolbar">
        ${
          editable
            ? html`<button
                @click=${() => this.change(() => st.steps.push({ name: `Step ${st.steps.length + 1}`, targetRoles: [], actions: [] }))}
              >
                + Add step
              </button>`
            : html`<span class="muted small" data-testid="process-read-only"
                >Your API key may not edit the process.</span
              >`
        }
        <span class="spacer"></span>
        <span class="muted small" data-testid="process-status">${status}</span>
        <button class="ghost" @click=${() => void this.reload()}>Reload</button>
        <button
          class="primary"
          data-testid="save-process"
          ?hidden=${!editable}
          ?disabled=${st.saving}
          @click=${() => void this.save()}
        >
          Save process
        </button>
      </div>
      ${errorBox('process-errors', st.error)}
    </div>`;
  }
}

/** "Target roles (comma separated)" → "target-roles": the field's data-field, for tests and styles. */
const slug = (label: string) => label.split(' (')[0].toLowerCase().replace(/\W+/g, '-');
