/** Environments and machines: status, health, roles; disable/enable, revoke; create environments. */
import { api, get, type Environment, type Machine } from './api.js';
import { ago, badge, card, clear, errorBox, h } from './dom.js';
import * as live from './live.js';

export async function machinesView(root: HTMLElement) {
  const machinesBox = h('div');
  const envBox = h('div');
  const errors = errorBox('machines-error');
  clear(root, h('h1', null, 'Environments & machines'), errors.el, card('Machines', machinesBox), card('Environments', envBox));

  let envs: Environment[] = [];
  const envName = (id: string) => envs.find((e) => e.id === id)?.name ?? id.slice(0, 8);

  async function loadMachines() {
    const machines = await get<Machine[]>('/api/machines');
    machines.sort((a, b) => a.name.localeCompare(b.name));
    clear(
      machinesBox,
      machines.length === 0
        ? h('p', { class: 'muted' }, 'No machines yet. Create a registration token (POST /api/registration-tokens) and run an agent.')
        : h(
            'table',
            { 'data-testid': 'machines' },
            h('thead', null, h('tr', null, ['Name', 'Status', 'Health', 'Roles', 'Environments', 'Last seen', 'Agent', ''].map((t) => h('th', null, t)))),
            h('tbody', null, machines.map((m) => machineRow(m))),
          ),
    );
  }

  function machineRow(m: Machine) {
    return h(
      'tr',
      { 'data-testid': `machine-${m.name}`, class: m.disabled ? 'disabled' : '' },
      h('td', null, h('strong', null, m.name)),
      h('td', null, badge(m.status), m.disabled ? h('span', { class: 'badge state-cancelled' }, 'disabled') : null),
      h('td', { title: m.healthReason ?? '' }, badge(m.health), m.healthReason ? h('div', { class: 'muted small' }, m.healthReason) : null),
      h('td', null, m.roles.map((r) => h('span', { class: 'tag' }, r))),
      h('td', null, m.environmentIds.map((id) => h('span', { class: 'tag env' }, envName(id)))),
      h('td', { title: m.lastSeenAt ?? '' }, ago(m.lastSeenAt)),
      h('td', null, m.agentVersion ?? '—'),
      h(
        'td',
        { class: 'actions' },
        h('button', { onclick: () => act(() => api('PATCH', `/api/machines/${m.id}`, { disabled: !m.disabled })) }, m.disabled ? 'Enable' : 'Disable'),
        h(
          'button',
          {
            class: 'danger',
            onclick: () => {
              if (confirm(`Revoke machine ${m.name}? Its agent is disconnected and its certificate refused from now on.`)) void act(() => api('DELETE', `/api/machines/${m.id}`));
            },
          },
          'Revoke',
        ),
      ),
    );
  }

  async function act(fn: () => Promise<unknown>) {
    errors.clear();
    try {
      await fn();
      await loadMachines();
    } catch (err) {
      errors.show(err);
    }
  }

  async function loadEnvs() {
    envs = await get<Environment[]>('/api/environments');
    const name = h('input', { name: 'name', placeholder: 'New environment name', required: true, 'data-testid': 'env-name' });
    const guided = h('input', { type: 'checkbox', name: 'guidedFailure' });
    const formErrors = errorBox('env-error');
    clear(
      envBox,
      h('ul', { class: 'plain', 'data-testid': 'environments' }, envs.map((e) => h('li', null, h('span', { class: 'tag env' }, e.name), e.guidedFailure ? h('span', { class: 'muted small' }, ' guided failure by default') : null))),
      h(
        'form',
        {
          class: 'inline',
          onsubmit: async (ev: Event) => {
            ev.preventDefault();
            formErrors.clear();
            try {
              await api('POST', '/api/environments', { name: name.value.trim(), guidedFailure: guided.checked });
              await loadEnvs();
              await loadMachines();
            } catch (err) {
              formErrors.show(err);
            }
          },
        },
        name,
        h('label', { class: 'check' }, guided, ' guided failure by default'),
        h('button', { type: 'submit', class: 'primary' }, 'Create environment'),
        formErrors.el,
      ),
    );
  }

  await loadEnvs();
  await loadMachines();
  let pending = false;
  live.on('machines', () => {
    if (pending) return;
    pending = true;
    setTimeout(() => {
      pending = false;
      if (root.isConnected) void loadMachines().catch((e) => errors.show(e));
    }, 100);
  });
}
