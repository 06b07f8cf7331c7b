/**
 * Small template pieces shared by the views (badges, cards, error boxes, elapsed times) and formatting. Everything
 * goes through lit-html, which puts data in as text or attribute values, escaped: no data is ever parsed as HTML.
 */
import { html, nothing, type TemplateResult } from './lit.js';

export function fmtTime(iso?: string | null) {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d.getTime()) ? '—' : d.toLocaleString();
}

export function fmtDuration(ms: number) {
  if (!isFinite(ms) || ms < 0) return '—';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** A countdown's seconds for people: "42 s", "3 min 05 s", "2 h 05 min". */
export function fmtSeconds(total: number) {
  const s = Math.max(0, Math.round(total));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

export function ago(iso?: string | null) {
  if (!iso) return 'never';
  return `${fmtDuration(Date.now() - new Date(iso).getTime())} ago`;
}

function elapsedText(since?: string | null, until?: string | null) {
  if (!since) return '';
  const end = until ? new Date(until).getTime() : Date.now();
  return fmtDuration(end - new Date(since).getTime());
}

/**
 * The time between `since` and `until` (or now). Its text is a property binding, not a child part, so that
 * `tickElapsed` may rewrite it every second between renders without disturbing lit-html's markers.
 */
export const elapsed = (since?: string | null, until?: string | null, testid?: string) =>
  html`<span
    class="elapsed"
    data-since=${since ?? ''}
    data-until=${until ?? ''}
    data-testid=${testid ?? nothing}
    .textContent=${elapsedText(since, until)}
  ></span>`;

/** Moves the running clocks on (every second, from main.ts). */
export function tickElapsed(root: ParentNode = document) {
  root.querySelectorAll<HTMLElement>('.elapsed[data-since]').forEach((el) => {
    if (el.dataset.until || !el.dataset.since) return;
    el.textContent = elapsedText(el.dataset.since, null);
  });
}

export const badge = (state: string, testid?: string) =>
  html`<span class="badge state-${state}" data-state=${state} data-testid=${testid ?? nothing}>${state}</span>`;

export const card = (title: unknown, ...body: unknown[]) =>
  html`<section class="card">
    <h2>${title}</h2>
    ${body}
  </section>`;

/** What went wrong, as a list of messages (the API's validation messages, one each), with an optional lead-in. */
export interface Problem {
  messages: string[];
  prefix?: string;
}

export function messages(err: unknown): string[] {
  if (err && typeof err === 'object' && 'messages' in err) return (err as { messages: string[] }).messages;
  return [String((err as Error)?.message ?? err)];
}

export const problem = (err: unknown, prefix?: string): Problem => ({ messages: messages(err), prefix });

/** A box for an operation's errors; present but hidden while there are none (tests wait for `[hidden]`). */
export const errorBox = (testid: string, p: Problem | null | undefined): TemplateResult =>
  html`<div class="errors" data-testid=${testid} role="alert" ?hidden=${!p}>
    ${
      p
        ? html`${p.prefix ? html`<strong>${p.prefix}</strong>` : nothing}
            <ul>
              ${p.messages.map((m) => html`<li>${m}</li>`)}
            </ul>`
        : nothing
    }
  </div>`;

/** The value of an event's target (input, select, textarea). */
export const valueOf = (e: Event) => (e.target as HTMLInputElement).value;
export const checkedOf = (e: Event) => (e.target as HTMLInputElement).checked;
