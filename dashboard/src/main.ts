/** Entry: sign-in, the page's frame (header, navigation, live status, banner), hash routes. */
import { api, auth, setUnauthorizedHandler } from './api.js';
import { html, nothing, render } from './lit.js';
import * as live from './live.js';
import { machinesView } from './machines.js';
import { projectsView, projectView } from './projects.js';
import { deploymentsView } from './deployments.js';
import { deploymentView } from './deployment-view.js';
import { auditView } from './audit.js';
import { currentKey, forgetMe, loadMe } from './me.js';
import { Store } from './store.js';
import { errorBox, problem, tickElapsed, type Problem } from './ui.js';

export type Cleanup = () => void;
/** A page: renders into `root` (an element of its own, dropped when the route changes) and returns its cleanup. */
export type View = (root: HTMLElement, ...params: string[]) => Promise<Cleanup | void> | Cleanup | void;

const routes: Array<[RegExp, View, string]> = [
  [/^#\/machines$/, machinesView, 'machines'],
  [/^#\/projects$/, projectsView, 'projects'],
  [/^#\/projects\/([^/]+)$/, projectView, 'projects'],
  [/^#\/deployments$/, deploymentsView, 'deployments'],
  [/^#\/deployments\/([^/]+)$/, deploymentView, 'deployments'],
  [/^#\/audit$/, auditView, 'audit'],
];

interface Shell {
  signedIn: boolean;
  nav: string;
  live: { connected: boolean; unauthorized?: boolean; known: boolean };
  banner: boolean;
  signIn: { error: Problem | null; busy: boolean };
}

const app = document.getElementById('app')!;
app.replaceChildren(); // the static "Loading…" is not lit-html's to update
const shell = new Store<Shell>({
  signedIn: !!auth.key,
  nav: '',
  live: { connected: false, known: false },
  banner: false,
  signIn: { error: null, busy: false },
});

async function signIn(e: SubmitEvent) {
  e.preventDefault();
  const form = e.target as HTMLFormElement;
  const key = (form.elements.namedItem('apiKey') as HTMLInputElement).value.trim();
  const remember = (form.elements.namedItem('remember') as HTMLInputElement).checked;
  shell.set({ signIn: { error: null, busy: true } });
  try {
    await api('GET', '/api/environments', undefined, key);
    auth.set(key, remember);
    await loadMe();
    if (!location.hash || location.hash === '#/') location.hash = '#/deployments';
    shell.set({ signedIn: true, banner: false, signIn: { error: null, busy: false } });
    void route();
  } catch (err) {
    shell.set({
      signIn: {
        error: problem((err as { status?: number }).status === 401 ? 'That API key was refused.' : err),
        busy: false,
      },
    });
  }
}

function signOut() {
  auth.clear();
  forgetMe();
  live.disconnect();
  leaveView();
  shell.set({ signedIn: false, banner: false, live: { connected: false, known: false } });
}

const signInView = (s: Shell) =>
  html`<main class="center">
    <form class="signin card" @submit=${signIn}>
      <h1>Cuttle</h1>
      <p class="muted">Sign in with an API key (the admin key or one made with POST /api/api-keys).</p>
      <label for="api-key">API key</label>
      <input
        type="password"
        name="apiKey"
        id="api-key"
        autocomplete="current-password"
        required
        placeholder="API key"
        data-testid="api-key"
      />
      <label class="check" for="remember"
        ><input type="checkbox" name="remember" id="remember" data-testid="remember" /> Remember me on this
        computer</label
      >
      ${errorBox('signin-error', s.signIn.error)}
      <button type="submit" class="primary" ?disabled=${s.signIn.busy}>Sign in</button>
    </form>
  </main>`;

const navLink = (s: Shell, name: string, label: string) =>
  html`<a href="#/${name}" data-nav=${name} class=${s.nav === name ? 'active' : ''}>${label}</a>`;

/** Who is signed in: the key's name and role (and that it is limited, when it is). */
function whoami() {
  const me = currentKey();
  if (!me) return nothing;
  const limited = me.environmentIds || me.projectIds ? ' (limited)' : '';
  return html`<span class="whoami muted" data-testid="whoami" data-role=${me.role} title=${me.permissions.join(', ')}
    >${me.name} · ${me.role}${limited}</span
  >`;
}

const layout = (s: Shell) =>
  html`<header>
      <a class="brand" href="#/deployments">Cuttle</a>
      <nav>
        ${navLink(s, 'deployments', 'Deployments')}${navLink(s, 'projects', 'Projects')}${navLink(s, 'machines', 'Environments & machines')}${navLink(s, 'audit', 'Audit')}
      </nav>
      <span class="spacer"></span>
      ${whoami()}
      <span class="live-status ${s.live.known ? (s.live.connected ? 'on' : 'off') : ''}" data-testid="live-status"
        >${!s.live.known ? 'connecting…' : s.live.connected ? 'live' : s.live.unauthorized ? 'refused' : 'offline'}</span
      >
      <button class="ghost" @click=${signOut}>Sign out</button>
    </header>
    <div class="banner" data-testid="banner" ?hidden=${!s.banner}>
      The server refused this API key. <button @click=${signOut}>Sign in again</button>
    </div>
    <main id="view"></main>`;

let wasSignedIn: boolean | undefined;
shell.subscribe(() => queueMicrotask(draw));
function draw() {
  const s = shell.state;
  render(s.signedIn ? layout(s) : signInView(s), app);
  if (!s.signedIn && wasSignedIn !== false) app.querySelector<HTMLInputElement>('#api-key')?.focus();
  wasSignedIn = s.signedIn;
}

live.onStatus((st) => {
  shell.set({ live: { connected: st.connected, unauthorized: st.unauthorized, known: true } });
  if (st.unauthorized) shell.set({ banner: true });
});
setUnauthorizedHandler(() => shell.set({ banner: true }));

let cleanup: Cleanup | void;
let routeToken = 0;

function leaveView() {
  routeToken++;
  if (typeof cleanup === 'function') cleanup();
  cleanup = undefined;
  live.resetHandlers();
}

async function route() {
  if (!auth.key) {
    shell.set({ signedIn: false });
    return;
  }
  leaveView();
  const token = routeToken;
  const hash = location.hash || '#/deployments';
  const found = routes.find(([re]) => re.test(hash));
  if (!found) {
    location.hash = '#/deployments';
    return;
  }
  // What the key may do decides which buttons pages show: known before the first page renders.
  if (!currentKey()) await loadMe();
  if (token !== routeToken) return;
  shell.set({ signedIn: true, nav: found[2] });
  draw(); // the frame (and its <main>) now, not at the next microtask
  void live.connect();
  const main = app.querySelector<HTMLElement>('#view')!;
  // Each page renders into an element of its own: the one before, with whatever lit-html kept on it, is dropped.
  const root = document.createElement('div');
  main.replaceChildren(root);
  try {
    const done = await found[1](root, ...hash.match(found[0])!.slice(1).map(decodeURIComponent));
    // Left while loading: undo at once what the view set up.
    if (token !== routeToken) {
      if (typeof done === 'function') done();
    } else cleanup = done;
  } catch (err) {
    if (token === routeToken) render(errorBox('error', problem(err, 'Could not load this page: ')), root);
  }
}

window.addEventListener('hashchange', () => void route());
setInterval(() => tickElapsed(), 1000);
draw();
void route();
