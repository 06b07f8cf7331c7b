/**
 * The deployment's log: a target filter, the follow switch and the lines. Lines are keyed by seq, so new ones are
 * appended and nothing already shown is rebuilt, and they are looked at again only when the log, the filter or the
 * machines' names changed (guard), not on every snapshot; the filter is the store's, so a live update never resets it.
 */
import type { Deployment, LogEntry } from './api.js';
import { matches, type DeploymentState, type DeploymentStore } from './deployment-store.js';
import { guard, html, live, nothing, repeat } from './lit.js';
import { card, checkedOf, valueOf } from './ui.js';

/** The filter's choices: all, each machine of the deployment by name, the server. */
function filterOptions(d: Deployment): Array<[string, string]> {
  const machines = new Map<string, string>();
  for (const s of d.steps)
    for (const t of s.targets) if (t.machineId && !machines.has(t.machineId)) machines.set(t.machineId, t.machineName);
  const sorted = [...machines].sort((a, b) => a[1].localeCompare(b[1]));
  return [['', 'All targets'], ...sorted, ['server', 'Server only']];
}

/** Times as shown, formatted once per line (toLocaleTimeString is slow enough to matter over thousands of lines). */
const times = new WeakMap<LogEntry, string>();
const timeOf = (e: LogEntry) => times.get(e) ?? (times.set(e, new Date(e.at).toLocaleTimeString()), times.get(e)!);

const line = (e: LogEntry, names: Record<string, string>) =>
  html`<div class="line level-${e.level}" data-seq=${e.seq} data-machine=${e.machineId ?? ''}>
    <span class="ts">${timeOf(e)}</span
    ><span class="who">${e.machineId ? (names[e.machineId] ?? e.machineId.slice(0, 8)) : 'server'}</span
    >${e.stepName ? html`<span class="where">${e.actionName ? `${e.stepName}/${e.actionName}` : e.stepName}</span>` : nothing}<span
      class="text"
      >${e.text}</span
    >
  </div>`;

const visible = (s: DeploymentState) => (s.filter ? s.log.filter((e) => matches(s.filter, e)) : s.log);

export function logView(s: DeploymentState, store: DeploymentStore) {
  const onScroll = (e: Event) => {
    // Scrolling up stops following; back at the bottom follows again.
    const el = e.currentTarget as HTMLElement;
    store.setFollow(el.scrollTop + el.clientHeight >= el.scrollHeight - 8);
  };
  return card(
    html`<span>Log</span>`,
    html`<div class="toolbar">
        <label
          >Target
          <select data-testid="log-filter" @change=${(e: Event) => store.setFilter(valueOf(e))}>
            ${repeat(
              filterOptions(s.deployment),
              ([v]) => v,
              ([v, n]) => html`<option value=${v} .selected=${live(v === s.filter)}>${n}</option>`,
            )}
          </select></label
        >
        <label class="check"
          ><input
            type="checkbox"
            data-testid="log-follow"
            .checked=${live(s.follow)}
            @change=${(e: Event) => store.setFollow(checkedOf(e))}
          />
          follow</label
        >
        <span class="spacer"></span>
        <span class="muted small" data-testid="log-count">${s.log.length} lines</span>
      </div>
      <div class="log" data-testid="log" role="log" aria-live="polite" @scroll=${onScroll}>
        ${guard([s.log, s.filter, s.machineNames], () =>
          repeat(
            visible(s),
            (e) => e.seq,
            (e) => line(e, s.machineNames),
          ),
        )}
      </div>`,
  );
}

/** After each render: keep the newest line in sight while following. */
export function followLog(root: HTMLElement, s: DeploymentState) {
  if (!s.follow) return;
  const el = root.querySelector<HTMLElement>('[data-testid="log"]');
  if (el) el.scrollTop = el.scrollHeight;
}
