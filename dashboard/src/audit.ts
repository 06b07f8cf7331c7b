/**
 * The audit log: every change and every refused request, newest first, with who made it. Filters by actor, resource
 * and outcome and time are the API's (GET /api/events); "Older" pages back with its `before` cursor. Clicking an
 * actor or a resource filters by it.
 */
import { get, q, type AuditEvent, type Environment, type Project } from './api.js';
import { html, live, nothing } from './lit.js';
import { mount, Store } from './store.js';
import { card, errorBox, fmtTime, problem, valueOf, type Problem } from './ui.js';

const PAGE = 50;

interface Filters {
  actor: string;
  resourceType: string;
  resourceId: string;
  outcome: string;
  /** A datetime-local value (the browser's time zone); sent as ISO-8601. */
  since: string;
}

interface AuditState {
  filters: Filters;
  events: AuditEvent[];
  /** Whether there may be older events than those shown. */
  more: boolean;
  busy: boolean;
  error: Problem | null;
  names: Map<string, string>;
}

const NO_FILTERS: Filters = { actor: '', resourceType: '', resourceId: '', outcome: '', since: '' };
const OUTCOMES = ['', 'ok', 'denied', 'failed'];
const TYPES = [
  '',
  'project',
  'deployment',
  'release',
  'environment',
  'machine',
  'package',
  'interruption',
  'api-key',
  'registration-token',
];

// The outcome's badge reuses the state colours: ok is a success, denied and failed are failures.
const outcomeBadge = (o: string) =>
  html`<span class="badge state-${o === 'ok' ? 'success' : o === 'denied' ? 'failed' : 'waiting'}" data-outcome=${o}
    >${o}</span
  >`;

export async function auditView(root: HTMLElement) {
  const store = new Store<AuditState>({
    filters: { ...NO_FILTERS },
    events: [],
    more: false,
    busy: false,
    error: null,
    names: new Map(),
  });

  /** Names of projects and environments, for resources given by id. */
  async function loadNames() {
    const [projects, envs] = await Promise.all([
      get<Project[]>('/api/projects').catch(() => [] as Project[]),
      get<Environment[]>('/api/environments').catch(() => [] as Environment[]),
    ]);
    store.set({ names: new Map([...projects, ...envs].map((x) => [x.id, x.name])) });
  }

  function query(before?: string) {
    const f = store.state.filters;
    const since = f.since ? new Date(f.since) : undefined;
    return q({
      actor: f.actor.trim(),
      resourceType: f.resourceType,
      resourceId: f.resourceId.trim(),
      outcome: f.outcome,
      since: since && !isNaN(since.getTime()) ? since.toISOString() : undefined,
      before,
      limit: PAGE,
    });
  }

  /** The newest page for the filters; with `older`, the page after the last event shown. */
  async function load(older = false) {
    store.set({ busy: true, error: null });
    try {
      const last = store.state.events.at(-1);
      const page = await get<AuditEvent[]>(`/api/events?${query(older ? last?.id : undefined)}`);
      store.set((s) => ({ events: older ? [...s.events, ...page] : page, more: page.length === PAGE }));
    } catch (err) {
      store.set({ error: problem(err) });
    } finally {
      store.set({ busy: false });
    }
  }

  const filter = (patch: Partial<Filters>) => {
    store.set((s) => ({ filters: { ...s.filters, ...patch } }));
    void load();
  };
  const onSubmit = (e: SubmitEvent) => {
    e.preventDefault();
    void load();
  };

  const resource = (e: AuditEvent, s: AuditState) => {
    const name = e.resourceId ? s.names.get(e.resourceId) : undefined;
    const label = e.resourceId ? `${e.resourceType} ${name ?? e.resourceId.slice(0, 36)}` : e.resourceType;
    return e.resourceId
      ? html`<a
          href="#/audit"
          title=${`${e.resourceType} ${e.resourceId}: show only its events`}
          data-testid="audit-resource"
          @click=${(ev: Event) => {
            ev.preventDefault();
            filter({ resourceType: e.resourceType, resourceId: e.resourceId ?? '' });
          }}
          >${label}</a
        >`
      : label;
  };

  const row = (e: AuditEvent, s: AuditState) =>
    html`<tr data-testid="audit-event" data-id=${e.id} data-action=${e.action} data-outcome=${e.outcome}>
      <td class="small" title=${e.at}>${fmtTime(e.at)}</td>
      <td>
        <a
          href="#/audit"
          title="show only this actor's events"
          data-testid="audit-actor"
          @click=${(ev: Event) => {
            ev.preventDefault();
            filter({ actor: e.actor });
          }}
          >${e.actor}</a
        >
      </td>
      <td class="mono">${e.action}</td>
      <td>${resource(e, s)}</td>
      <td>${outcomeBadge(e.outcome)} <span class="small muted">${e.status}</span></td>
      <td data-testid="audit-summary">${e.summary}</td>
    </tr>`;

  const filters = (s: AuditState) =>
    html`<form class="inline" data-testid="audit-filters" @submit=${onSubmit}>
      <label
        >Actor
        <input
          data-testid="audit-filter-actor"
          placeholder="key name"
          .value=${live(s.filters.actor)}
          @input=${(e: Event) => store.set((st) => ({ filters: { ...st.filters, actor: valueOf(e) } }))}
      /></label>
      <label
        >Resource
        <select data-testid="audit-filter-type" @change=${(e: Event) => filter({ resourceType: valueOf(e) })}>
          ${TYPES.map((t) => html`<option value=${t} ?selected=${t === s.filters.resourceType}>${t || 'any'}</option>`)}
        </select></label
      >
      <label
        >Id
        <input
          data-testid="audit-filter-id"
          class="mono"
          placeholder="resource id"
          .value=${live(s.filters.resourceId)}
          @input=${(e: Event) => store.set((st) => ({ filters: { ...st.filters, resourceId: valueOf(e) } }))}
      /></label>
      <label
        >Outcome
        <select data-testid="audit-filter-outcome" @change=${(e: Event) => filter({ outcome: valueOf(e) })}>
          ${OUTCOMES.map((o) => html`<option value=${o} ?selected=${o === s.filters.outcome}>${o || 'any'}</option>`)}
        </select></label
      >
      <label
        >Since
        <input
          type="datetime-local"
          data-testid="audit-filter-since"
          .value=${live(s.filters.since)}
          @change=${(e: Event) => filter({ since: valueOf(e) })}
      /></label>
      <button type="submit" class="primary" ?disabled=${s.busy} data-testid="audit-apply">Apply</button>
      <button
        type="button"
        class="ghost"
        data-testid="audit-clear"
        @click=${() => filter({ ...NO_FILTERS })}
        ?disabled=${s.busy}
      >
        Clear
      </button>
    </form>`;

  const view = (s: AuditState) =>
    html`<h1>Audit log</h1>
      ${card(
        'Every change and every refused request, newest first',
        filters(s),
        errorBox('audit-error', s.error),
        s.events.length === 0
          ? html`<p class="muted" data-testid="audit-empty">${s.busy ? 'Loading…' : 'No events match.'}</p>`
          : html`<table data-testid="audit-events">
              <thead>
                <tr>
                  ${['When', 'Actor', 'Action', 'Resource', 'Outcome', 'Summary'].map((t) => html`<th>${t}</th>`)}
                </tr>
              </thead>
              <tbody>
                ${s.events.map((e) => row(e, s))}
              </tbody>
            </table>`,
        s.more
          ? html`<div class="toolbar">
              <button data-testid="audit-older" ?disabled=${s.busy} @click=${() => void load(true)}>Older</button>
            </div>`
          : nothing,
      )}`;

  await Promise.all([loadNames(), load()]);
  return mount(root, store, view);
}
