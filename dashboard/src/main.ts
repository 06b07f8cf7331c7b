/** Entry: sign-in, header navigation, hash routes, the live connection's status. */
import { api, auth, setUnauthorizedHandler } from './api.js';
import { clear, errorBox, h, tickElapsed } from './dom.js';
import * as live from './live.js';
import { machinesView } from './machines.js';
import { projectsView, projectView } from './projects.js';
import { deploymentsView, deploymentView } from './deployments.js';

export type Cleanup = () => void;
export type View = (root: HTMLElement, ...params: string[]) => Promise<Cleanup | void> | Cleanup | void;

const app = document.getElementById('app')!;
let cleanup: Cleanup | void;
let banner: HTMLElement;

const routes: Array<[RegExp, View]> = [
  [/^#\/machines$/, machinesView],
  [/^#\/projects$/, projectsView],
  [/^#\/projects\/([^/]+)$/, projectView],
  [/^#\/deployments$/, deploymentsView],
  [/^#\/deployments\/([^/]+)$/, deploymentView],
];

function signOut() {
  auth.clear();
  live.disconnect();
  render();
}

function signInView() {
  const input = h('input', { type: 'password', name: 'apiKey', id: 'api-key', autocomplete: 'current-password', required: true, placeholder: 'API key', 'data-testid': 'api-key' });
  const remember = h('input', { type: 'checkbox', name: 'remember', id: 'remember', 'data-testid': 'remember' });
  const errors = errorBox('signin-error');
  const form = h(
    'form',
    {
      class: 'signin card',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        errors.clear();
        const key = input.value.trim();
        try {
          await api('GET', '/api/environments', undefined, key);
          auth.set(key, remember.checked);
          if (!location.hash || location.hash === '#/') location.hash = '#/deployments';
          render();
        } catch (err) {
          errors.show((err as { status?: number }).status === 401 ? 'That API key was refused.' : err);
        }
      },
    },
    h('h1', null, 'Cuttle'),
    h('p', { class: 'muted' }, 'Sign in with an API key (the admin key or one made with POST /api/api-keys).'),
    h('label', { for: 'api-key' }, 'API key'),
    input,
    h('label', { class: 'check', for: 'remember' }, remember, ' Remember me on this computer'),
    errors.el,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  );
  clear(app, h('main', { class: 'center' }, form));
  input.focus();
}

function layout() {
  const nav = h(
    'nav',
    null,
    h('a', { href: '#/deployments', 'data-nav': 'deployments' }, 'Deployments'),
    h('a', { href: '#/projects', 'data-nav': 'projects' }, 'Projects'),
    h('a', { href: '#/machines', 'data-nav': 'machines' }, 'Environments & machines'),
  );
  const status = h('span', { class: 'live-status', 'data-testid': 'live-status' }, 'connecting…');
  banner = h('div', { class: 'banner', hidden: true, 'data-testid': 'banner' });
  const main = h('main', { id: 'view' });
  clear(
    app,
    h('header', null, h('a', { class: 'brand', href: '#/deployments' }, 'Cuttle'), nav, h('span', { class: 'spacer' }), status, h('button', { onclick: signOut, class: 'ghost' }, 'Sign out')),
    banner,
    main,
  );
  live.onStatus((s) => {
    status.textContent = s.connected ? 'live' : s.unauthorized ? 'refused' : 'offline';
    status.className = `live-status ${s.connected ? 'on' : 'off'}`;
    if (s.unauthorized) showSignInAgain();
  });
  void live.connect();
  return main;
}

function showSignInAgain() {
  if (!banner) return;
  clear(banner, 'The server refused this API key. ', h('button', { onclick: signOut }, 'Sign in again'));
  banner.hidden = false;
}

let main: HTMLElement | null = null;

let routeToken = 0;

async function route() {
  const token = ++routeToken;
  if (!auth.key) return signInView();
  if (!main || !main.isConnected) main = layout();
  if (typeof cleanup === 'function') cleanup();
  cleanup = undefined;
  live.resetHandlers();
  const hash = location.hash || '#/deployments';
  for (const a of app.querySelectorAll<HTMLAnchorElement>('nav a')) a.classList.toggle('active', hash.startsWith(`#/${a.dataset.nav}`));
  const view = main;
  clear(view);
  for (const [re, fn] of routes) {
    const m = hash.match(re);
    if (m) {
      try {
        const done = await fn(view, ...m.slice(1).map(decodeURIComponent));
        // Left while loading: undo at once what the view set up.
        if (token !== routeToken) {
          if (typeof done === 'function') done();
        } else cleanup = done;
      } catch (err) {
        const box = errorBox();
        box.show(err, 'Could not load this page: ');
        clear(view, box.el);
      }
      return;
    }
  }
  location.hash = '#/deployments';
}

function render() {
  main = null;
  void route();
}

setUnauthorizedHandler(showSignInAgain);
window.addEventListener('hashchange', () => void route());
setInterval(() => tickElapsed(), 1000);
render();
