/**
 * Environments and machines: status, health, roles, labels; disable/enable, revoke; create environments; create a
 * registration token (shown once, with the command that registers an agent with it).
 */
import { api, get, type Environment, type Machine, type RegistrationToken } from './api.js';
import { html, live, nothing } from './lit.js';
import * as channel from './live.js';
import { can } from './me.js';
import { mount, Store } from './store.js';
import { ago, badge, card, errorBox, fmtTime, problem, valueOf, type Problem } from './ui.js';

interface CreatedToken extends RegistrationToken {
  environmentNames: string[];
  maxUses: number;
  /** For the command line: the machine's name, roles and agent folder, editable after the token is made. */
  machineName: string;
  roles: string;
  home: string;
}

interface MachinesState {
  envs: Environment[];
  machines: Machine[];
  error: Problem | null;
  envError: Problem | null;
  tokenError: Problem | null;
  tokenBusy: boolean;
  created: CreatedToken | null;
  copied: string | null;
}

const EXPIRY: Array<[number, string]> = [
  [900, '15 minutes'],
  [3600, '1 hour'],
  [86400, '1 day'],
  [7 * 86400, '7 days'],
  [30 * 86400, '30 days'],
];

const DEFAULT_HOME = '/var/lib/cuttle-agent';

/** A word for a POSIX shell: as is when plain, else single-quoted. */
export const shellWord = (s: string) => (/^[A-Za-z0-9._,/:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
const list = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

/** A machine's labels as `name=value` tags, by name (read-only: PATCH /api/machines/:id changes them). */
const labelTags = (labels: Record<string, string> | undefined) =>
  Object.entries(labels ?? {})
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => html`<span class="tag label mono">${k}=${v}</span>`);

/** The command that starts an agent on the target machine and registers it with the token. */
export function agentCommand(server: string, t: CreatedToken) {
  const roles = list(t.roles);
  return [
    'npm run agent -- run',
    `--server ${shellWord(server)}`,
    `--token ${shellWord(t.token)}`,
    `--name ${t.machineName.trim() ? shellWord(t.machineName.trim()) : '"$(hostname)"'}`,
    roles.length ? `--roles ${shellWord(roles.join(','))}` : '',
    `--environments ${shellWord(t.environmentNames.join(','))}`,
    `--home ${shellWord(t.home.trim() || DEFAULT_HOME)}`,
  ]
    .filter(Boolean)
    .join(' ');
}

export async function machinesView(root: HTMLElement) {
  const store = new Store<MachinesState>({
    envs: [],
    machines: [],
    error: null,
    envError: null,
    tokenError: null,
    tokenBusy: false,
    created: null,
    copied: null,
  });
  const envName = (id: string) => store.state.envs.find((e) => e.id === id)?.name ?? id.slice(0, 8);

  async function loadMachines() {
    const machines = await get<Machine[]>('/api/machines');
    machines.sort((a, b) => a.name.localeCompare(b.name));
    store.set({ machines });
  }
  async function loadEnvs() {
    store.set({ envs: await get<Environment[]>('/api/environments') });
  }

  async function act(fn: () => Promise<unknown>) {
    store.set({ error: null });
    try {
      await fn();
      await loadMachines();
    } catch (err) {
      store.set({ error: problem(err) });
    }
  }
  const toggle = (m: Machine) => act(() => api('PATCH', `/api/machines/${m.id}`, { disabled: !m.disabled }));
  const revoke = (m: Machine) => {
    if (confirm(`Revoke machine ${m.name}? Its agent is disconnected and its certificate refused from now on.`))
      void act(() => api('DELETE', `/api/machines/${m.id}`));
  };

  async function createEnv(e: SubmitEvent) {
    e.preventDefault();
    const form = e.target as HTMLFormElement;
    const field = (n: string) => form.elements.namedItem(n) as HTMLInputElement;
    store.set({ envError: null });
    try {
      await api('POST', '/api/environments', {
        name: field('name').value.trim(),
        guidedFailure: field('guidedFailure').checked,
      });
      form.reset();
      await loadEnvs();
      await loadMachines();
    } catch (err) {
      store.set({ envError: problem(err) });
    }
  }

  async function createToken(e: SubmitEvent) {
    e.preventDefault();
    const form = e.target as HTMLFormElement;
    const data = new FormData(form);
    const environmentIds = data.getAll('environmentIds').map(String);
    const roles = list(String(data.get('roles') ?? ''));
    const maxUses = Number(data.get('maxUses') || 1);
    const expiresInSeconds = Number(data.get('expiresInSeconds'));
    store.set({ tokenError: null, tokenBusy: true, created: null, copied: null });
    try {
      const t = await api<RegistrationToken>('POST', '/api/registration-tokens', {
        environmentIds,
        ...(roles.length ? { roles } : {}),
        expiresInSeconds,
        maxUses,
      });
      form.reset();
      store.set({
        tokenBusy: false,
        created: {
          ...t,
          environmentNames: environmentIds.map(envName),
          maxUses,
          machineName: '',
          roles: roles.join(','),
          home: DEFAULT_HOME,
        },
      });
    } catch (err) {
      store.set({ tokenBusy: false, tokenError: problem(err) });
    }
  }

  async function copy(what: string, text: string, e: Event) {
    try {
      await navigator.clipboard.writeText(text);
      store.set({ copied: what });
    } catch {
      // No clipboard (permission, insecure context): select the text for Ctrl+C instead.
      ((e.target as HTMLElement).previousElementSibling as HTMLInputElement | null)?.select();
    }
  }
  const selectAll = (e: Event) => (e.target as HTMLInputElement).select();
  const editCreated = (patch: Partial<CreatedToken>) =>
    store.set((s) => (s.created ? { created: { ...s.created, ...patch }, copied: null } : {}));

  const machineRow = (m: Machine) =>
    html`<tr data-testid="machine-${m.name}" data-machine-id=${m.id} class=${m.disabled ? 'disabled' : ''}>
      <td><strong>${m.name}</strong></td>
      <td>
        ${badge(m.status)}${m.disabled ? html`<span class="badge state-cancelled" data-testid="machine-disabled">disabled</span>` : nothing}
      </td>
      <td title=${m.healthReason ?? ''}>
        ${badge(m.health)}${m.healthReason ? html`<div class="muted small">${m.healthReason}</div>` : nothing}${
          m.lastTriggerError
            ? html`<div class="small error-text" data-testid="machine-trigger-error" title=${m.lastTriggerAt ?? ''}>
                target trigger failed: ${m.lastTriggerError}
              </div>`
            : nothing
        }
      </td>
      <td>${m.roles.map((r) => html`<span class="tag">${r}</span>`)}</td>
      <td data-testid="machine-labels">${labelTags(m.labels)}</td>
      <td>${m.environmentIds.map((id) => html`<span class="tag env">${envName(id)}</span>`)}</td>
      <td title=${m.lastSeenAt ?? ''}>${ago(m.lastSeenAt)}</td>
      <td>${m.agentVersion ?? '—'}</td>
      <td class="actions">
        ${
          can('manage-machines')
            ? html`<button data-action=${m.disabled ? 'enable' : 'disable'} @click=${() => toggle(m)}>
                  ${m.disabled ? 'Enable' : 'Disable'}</button
                ><button class="danger" data-action="revoke" @click=${() => revoke(m)}>Revoke</button>`
            : nothing
        }
      </td>
    </tr>`;

  const machinesTable = (s: MachinesState) =>
    s.machines.length === 0
      ? html`<p class="muted">No machines yet. Create a registration token below and run an agent with it.</p>`
      : html`<table data-testid="machines">
          <thead>
            <tr>
              ${['Name', 'Status', 'Health', 'Roles', 'Labels', 'Environments', 'Last seen', 'Agent', ''].map((t) => html`<th>${t}</th>`)}
            </tr>
          </thead>
          <tbody>
            ${s.machines.map(machineRow)}
          </tbody>
        </table>`;

  const created = (t: CreatedToken, s: MachinesState) => {
    const command = agentCommand(location.origin, t);
    return html`<div class="card inner token-created" data-testid="token-created">
      <h3>Registration token</h3>
      <p class="small">
        Shown this once: copy it now. It registers ${t.maxUses === 1 ? 'one machine' : `up to ${t.maxUses} machines`}
        until ${fmtTime(t.expiresAt)}, in ${t.environmentNames.join(', ')}.
      </p>
      <div class="copy-row">
        <input readonly class="mono" data-testid="token-value" .value=${t.token} @focus=${selectAll} /><button
          type="button"
          @click=${(e: Event) => copy('token', t.token, e)}
        >
          ${s.copied === 'token' ? 'Copied' : 'Copy'}
        </button>
      </div>
      <div class="inline">
        <label
          >Machine name
          <input
            data-testid="token-machine-name"
            placeholder="host name"
            .value=${live(t.machineName)}
            @input=${(e: Event) => editCreated({ machineName: valueOf(e) })}
        /></label>
        <label
          >Roles
          <input
            data-testid="token-command-roles"
            placeholder="web,worker"
            .value=${live(t.roles)}
            @input=${(e: Event) => editCreated({ roles: valueOf(e) })}
        /></label>
        <label
          >Agent folder
          <input
            data-testid="token-command-home"
            .value=${live(t.home)}
            @input=${(e: Event) => editCreated({ home: valueOf(e) })}
        /></label>
      </div>
      <p class="small">
        Then run this on the target machine, in a Cuttle checkout (the agent keeps its identity in its folder and needs
        no token after its first start):
      </p>
      <div class="copy-row">
        <textarea
          readonly
          rows="3"
          class="mono"
          data-testid="token-command"
          .value=${command}
          @focus=${selectAll}
        ></textarea
        ><button type="button" @click=${(e: Event) => copy('command', command, e)}>
          ${s.copied === 'command' ? 'Copied' : 'Copy'}
        </button>
      </div>
      <button type="button" class="ghost" @click=${() => store.set({ created: null, copied: null })}>Done</button>
    </div>`;
  };

  const tokenForm = (s: MachinesState) =>
    html`<form class="token-form" data-testid="token-form" @submit=${createToken}>
        <fieldset class="pick">
          <legend>Environments the machine may join</legend>
          ${
            s.envs.length
              ? s.envs.map(
                  (e) =>
                    html`<label class="check"
                      ><input type="checkbox" name="environmentIds" value=${e.id} data-testid="token-env-${e.name}" />
                      ${e.name}</label
                    >`,
                )
              : html`<span class="muted small">Create an environment first.</span>`
          }
        </fieldset>
        <div class="inline">
          <label title="Empty: the agent names its roles"
            >Roles <input name="roles" placeholder="e.g. web,worker" data-testid="token-roles"
          /></label>
          <label
            >Expires in
            <select name="expiresInSeconds" data-testid="token-expires">
              ${EXPIRY.map(([v, n]) => html`<option value=${v} ?selected=${v === 3600}>${n}</option>`)}
            </select></label
          >
          <label
            >Uses
            <input
              type="number"
              name="maxUses"
              min="1"
              max="100000"
              value="1"
              class="narrow"
              data-testid="token-max-uses"
          /></label>
          <button type="submit" class="primary" ?disabled=${s.tokenBusy} data-testid="create-token">
            Create registration token
          </button>
        </div>
        ${errorBox('token-error', s.tokenError)}
      </form>
      ${s.created ? created(s.created, s) : nothing}`;

  const view = (s: MachinesState) =>
    html`<h1>Environments & machines</h1>
      ${errorBox('machines-error', s.error)} ${card('Machines', machinesTable(s))}
      ${can('manage-machines') ? card('Add a machine', tokenForm(s)) : nothing}
      ${card(
        'Environments',
        html`<ul class="plain" data-testid="environments">
            ${s.envs.map((e) => html`<li><span class="tag env">${e.name}</span>${e.guidedFailure ? html`<span class="muted small"> guided failure by default</span>` : nothing}${e.rollbackOnFailure ? html`<span class="muted small"> rolls back on failure by default</span>` : nothing}</li>`)}
          </ul>
          ${
            can('manage-environments')
              ? html`<form class="inline" @submit=${createEnv}>
                  <input name="name" placeholder="New environment name" required data-testid="env-name" />
                  <label class="check"><input type="checkbox" name="guidedFailure" /> guided failure by default</label>
                  <button type="submit" class="primary">Create environment</button>
                  ${errorBox('env-error', s.envError)}
                </form>`
              : nothing
          }`,
      )}`;

  await loadEnvs();
  await loadMachines();
  const unmount = mount(root, store, view);
  let timer: ReturnType<typeof setTimeout> | undefined;
  channel.on('machines', () => {
    timer ??= setTimeout(() => {
      timer = undefined;
      loadMachines().catch((err) => store.set({ error: problem(err) }));
    }, 100);
  });
  return () => {
    clearTimeout(timer);
    unmount();
  };
}
