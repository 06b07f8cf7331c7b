/**
 * A tiny DOM builder. Text always goes in as text nodes (never parsed as HTML), so names, scripts and log lines
 * are escaped by construction; `esc` is there for the rare string that must end up in markup.
 */
export type Child = Node | string | number | null | undefined | false | Child[];
export type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs | null = null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v as EventListener);
    else if (k === 'value' && 'value' in el) (el as unknown as { value: string }).value = String(v);
    else if (k === 'checked' && el instanceof HTMLInputElement) el.checked = Boolean(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

export function clear(el: Element, ...children: Child[]) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const esc = (s: unknown) => String(s ?? '').replace(/[&<>"']/g, (c) => ESC[c]);

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

export function ago(iso?: string | null) {
  if (!iso) return 'never';
  return `${fmtDuration(Date.now() - new Date(iso).getTime())} ago`;
}

/** An element showing the time between `since` and `until` (or now), refreshed by `tickElapsed`. */
export function elapsed(since?: string | null, until?: string | null, testid?: string) {
  return h('span', { class: 'elapsed', 'data-since': since ?? '', 'data-until': until ?? '', 'data-testid': testid }, elapsedText(since, until));
}

function elapsedText(since?: string | null, until?: string | null) {
  if (!since) return '';
  const end = until ? new Date(until).getTime() : Date.now();
  return fmtDuration(end - new Date(since).getTime());
}

export function tickElapsed(root: ParentNode = document) {
  root.querySelectorAll<HTMLElement>('.elapsed[data-since]').forEach((el) => {
    if (el.dataset.until) return;
    el.textContent = elapsedText(el.dataset.since, null);
  });
}

export const badge = (state: string, testid?: string) => h('span', { class: `badge state-${state}`, 'data-state': state, 'data-testid': testid }, state);

export function card(title: Child, ...body: Child[]) {
  return h('section', { class: 'card' }, h('h2', null, title), ...body);
}

export function messages(err: unknown): string[] {
  if (err && typeof err === 'object' && 'messages' in err) return (err as { messages: string[] }).messages;
  return [String((err as Error)?.message ?? err)];
}

/** A box for an operation's errors, with `show(err)` and `clear()`. */
export function errorBox(testid = 'error') {
  const el = h('div', { class: 'errors', 'data-testid': testid, role: 'alert', hidden: true });
  return {
    el,
    show(err: unknown, prefix = '') {
      const list = messages(err);
      clear(el, prefix ? h('strong', null, prefix) : null, h('ul', null, list.map((m) => h('li', null, m))));
      el.hidden = false;
    },
    clear() {
      clear(el);
      el.hidden = true;
    },
  };
}
