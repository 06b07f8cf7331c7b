/**
 * The web dashboard end to end, in a real browser (Chromium through playwright-core) against a real server and three
 * real agents: sign in, see the process, create a release, preview and deploy it, watch the rolling grid over the
 * live socket, answer a manual intervention, read and filter the log. Nothing is mocked.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import {
  createProject,
  ROOT,
  startFleet,
  startServer,
  stopAll,
  waitOnline,
  type TestFleet,
  type TestServer,
} from './support/fixtures.js';

const ADMIN_KEY = 'integration-admin-key-0123456789';
// Debian's chromium (CI installs it; `apt-get install chromium` locally). Without it the browser test is skipped with
// a warning, unless CUTTLE_REQUIRE_BROWSER=1 (as in CI) makes that a failure.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser && process.env.CUTTLE_REQUIRE_BROWSER === '1')
  throw new Error(`no browser at ${CHROMIUM}: install Debian's chromium`);
if (!haveBrowser) process.stderr.write(`\nskipping the browser test: no ${CHROMIUM} (apt-get install chromium)\n`);
const browserIt = haveBrowser ? it : it.skip;
const MARKER = 'dashboard-e2e-marker';
const SHOT = join(ROOT, 'test-artifacts', 'live-deployment.png');

let srv: TestServer;
let fleet: TestFleet;
let browser: Browser;
let page: Page;
let projectId: string;
const requests: Array<{ url: string; at: number }> = [];
/** What the browser said about the Content-Security-Policy while the dashboard ran (nothing, if it holds). */
const cspReports: string[] = [];
/** Uncaught errors of the page's scripts (none, if the views render as they should). */
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!haveBrowser) return;
  srv = await startServer();
  const env = await srv.must('POST', '/api/environments', { name: 'Demo' });
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [env.id],
    roles: ['web'],
    maxUses: 10,
  });
  fleet = startFleet(srv, { prefix: 'web', count: 3, roles: ['web'], environments: ['Demo'], token });
  const project = await createProject(srv, 'Storefront', [
    {
      name: 'Web',
      targetRoles: ['web'],
      windowSize: 2,
      actions: [{ name: 'Roll', type: 'script', script: `echo "${MARKER} on #{Cuttle.Machine.Name}"\nsleep 1.2` }],
    },
    {
      name: 'Approve',
      actions: [
        { name: 'Sign-off', type: 'manual-intervention', instructions: 'Check the <b>shop</b> pages, then proceed' },
      ],
    },
    { name: 'Finish', targetRoles: ['web'], actions: [{ name: 'Done', type: 'script', script: 'echo finished' }] },
  ]);
  projectId = project.id;
  await waitOnline(srv, fleet.names, 60_000);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 1000 } });
  page = await context.newPage();
  page.on('request', (r) => requests.push({ url: r.url(), at: Date.now() }));
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) cspReports.push(m.text());
  });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await fleet?.stop();
  await srv?.stop();
  await stopAll();
});

const el = (testid: string) => `[data-testid="${testid}"]`;

browserIt(
  'signs in, deploys a release with a preview, and follows it live to success',
  async () => {
    // Sign-in goes through the form, and a wrong key is refused before anything is stored.
    await page.goto(srv.base);
    await page.fill(el('api-key'), 'not-the-right-key-000000');
    await page.click('button:has-text("Sign in")');
    await page.waitForSelector(`${el('signin-error')}:has-text("refused")`);
    await page.fill(el('api-key'), ADMIN_KEY);
    await page.click('button:has-text("Sign in")');
    await page.waitForSelector('button:has-text("Sign out")');
    await page.waitForSelector(`${el('live-status')}:has-text("live")`);

    // The project page shows the process as steps and actions, with the script text escaped (shown, never parsed).
    await page.goto(`${srv.base}/#/projects/${projectId}`);
    await page.waitForSelector(el('step-Web'));
    expect(await page.textContent(el('step-Web'))).toContain('window 2');
    expect(await page.locator(`${el('step-Approve')} textarea`).inputValue()).toBe(
      'Check the <b>shop</b> pages, then proceed',
    );
    expect(await page.locator('b:has-text("shop")').count()).toBe(0);

    // An invalid edit is refused by the API and its message is shown next to the form; Reload restores the saved process.
    await page.fill(`${el('step-Web')} [data-field="window-size"] input`, 'lots');
    await page.click(el('save-process'));
    await page.waitForSelector(`${el('process-errors')}:has-text("windowSize")`);
    page.once('dialog', (d) => void d.accept()); // "Discard your changes?"
    await page.click('button:has-text("Reload")');
    await page.waitForSelector(`${el('process-errors')}[hidden]`, { state: 'attached' });
    expect(await page.locator(`${el('step-Web')} [data-field="window-size"] input`).inputValue()).toBe('2');

    // A release made in the UI; the preview lists targets in name order and the window before anything runs.
    await page.fill(el('release-version'), '1.0.0');
    await page.click('button:has-text("Create release")');
    await page.waitForSelector(el('release-1.0.0'));
    await page.selectOption(el('deploy-environment'), { label: 'Demo' });
    await page.waitForSelector(el('preview-targets-Web'));
    expect(await page.textContent(el('preview-targets-Web'))).toMatch(/1\. web-01.*2\. web-02.*3\. web-03/);
    expect(await page.textContent(el('preview-window-Web'))).toBe('window 2');
    expect(await page.textContent(el('preview-step-Approve'))).toContain('runs on the server');
    mkdirSync(join(ROOT, 'test-artifacts'), { recursive: true });
    await page.screenshot({ path: join(ROOT, 'test-artifacts', 'project.png'), fullPage: true });

    // Record every state the grid cells and in-flight indicators go through, from the page itself.
    await page.evaluate(() => {
      const g = globalThis as any;
      g.__seen = { cells: {} as Record<string, string[]>, inflight: [] as number[] };
      const scan = () => {
        for (const c of g.document.querySelectorAll('[data-testid^="cell-"]')) {
          const list = (g.__seen.cells[c.dataset.testid] ??= []);
          if (list[list.length - 1] !== c.dataset.state) list.push(c.dataset.state);
        }
        for (const c of g.document.querySelectorAll('[data-testid="inflight-Web"]'))
          g.__seen.inflight.push(Number(c.dataset.inflight));
      };
      new g.MutationObserver(scan).observe(g.document.body, { subtree: true, childList: true, attributes: true });
    });

    const liveFrom = Date.now();
    await page.click(el('deploy-button'));
    await page.waitForURL(/#\/deployments\/[0-9a-f-]{36}$/);
    const deploymentId = page.url().split('/').pop()!;

    // The rolling step: every cell reaches success, each having been seen running; at most 2 in flight (window 2).
    for (const m of fleet.names)
      await page.waitForSelector(`${el(`cell-Web-${m}`)}[data-state="success"]`, { timeout: 30_000 });
    const seen: { cells: Record<string, string[]>; inflight: number[] } = await page.evaluate(
      () => (globalThis as any).__seen,
    );
    for (const m of fleet.names)
      expect(seen.cells[`cell-Web-${m}`]).toEqual(expect.arrayContaining(['running', 'success']));
    expect(Math.max(...seen.inflight)).toBeGreaterThanOrEqual(1);
    expect(Math.max(...seen.inflight)).toBeLessThanOrEqual(2);
    expect(Number(await page.getAttribute(el('inflight-Web'), 'data-max-inflight'))).toBeLessThanOrEqual(2);
    expect(await page.textContent(el('inflight-Web'))).toMatch(/in flight 0 \/ window 2/);

    // The manual intervention shows its instructions (escaped) prominently; notes and Proceed answer it.
    await page.waitForSelector(el('interruption'), { timeout: 30_000 });
    expect(await page.textContent(el('interruption-instructions'))).toBe('Check the <b>shop</b> pages, then proceed');
    await page.waitForSelector(`${el('deployment-state')}[data-state="waiting"]`);
    await page.fill(el('interruption-notes'), 'shop looks fine');
    await page.click(`${el('interruption')} button:has-text("Proceed")`);
    await page.waitForSelector(`${el('deployment-state')}[data-state="success"]`, { timeout: 30_000 });
    await page.waitForSelector(el('interruption'), { state: 'detached' });
    for (const m of fleet.names) await page.waitForSelector(`${el(`cell-Finish-${m}`)}[data-state="success"]`);
    await page.waitForSelector(`${el('cell-Approve-(server)')}[data-state="success"]`);

    // The log tails live: the echoed line of each target, the logged answer with its notes; the filter narrows to one.
    await page.waitForSelector(`${el('log')} :text("${MARKER} on web-03")`);
    await page.waitForSelector(`${el('log')} :text("shop looks fine")`);
    await page.selectOption(el('log-filter'), { label: 'web-02' });
    const filtered = (await page.textContent(el('log')))!;
    expect(filtered).toContain(`${MARKER} on web-02`);
    expect(filtered).not.toContain(`${MARKER} on web-01`);
    expect(filtered).not.toContain(`${MARKER} on web-03`);
    await page.selectOption(el('log-filter'), { label: 'All targets' });
    const all = (await page.textContent(el('log')))!;
    for (const m of fleet.names) expect(all.split(`${MARKER} on ${m}`).length - 1).toBe(1); // once each: deduplicated by seq

    // Updates came over the socket: only the first load asked REST for this deployment, however many states it went through.
    const restHits = requests.filter((r) => r.at >= liveFrom && r.url.includes(`/api/deployments/${deploymentId}`));
    expect(restHits.length).toBeLessThanOrEqual(3);
    expect(requests.some((r) => r.url.includes('/socket.io/socket.io.esm.min.js'))).toBe(true);
    expect(requests.some((r) => r.url.endsWith('/assets/vendor/lit-html/lit-html.js'))).toBe(true);

    // A screenshot of the finished live view for people to look at.
    mkdirSync(join(ROOT, 'test-artifacts'), { recursive: true });
    await page.screenshot({ path: SHOT, fullPage: true });
    expect(existsSync(SHOT) && statSync(SHOT).size > 0).toBe(true);

    // The recent list links to the live view; the machines page shows the fleet online with its roles.
    await page.click('nav a:has-text("Deployments")');
    await page.waitForSelector(`${el(`deployment-${deploymentId}`)} :text("success")`);
    await page.click('nav a:has-text("Environments")');
    for (const m of fleet.names) await page.waitForSelector(`${el(`machine-${m}`)} :text("online")`);
    expect(await page.textContent(el('machine-web-01'))).toContain('Demo');
    await page.screenshot({ path: join(ROOT, 'test-artifacts', 'machines.png'), fullPage: true });
  },
  90_000,
);

// Defence in depth for a page that holds a key able to deploy to Production: every response (the page, its module,
// the API, an error, the OpenAPI page) carries a CSP without inline script and with no framing, nosniff and HSTS;
// the whole live deployment above ran without a CSP report; and the key lives only as long as the browser session,
// unless "remember me" was ticked (a new context from the saved state is the browser started again).
browserIt(
  'sends security headers everywhere and keeps the key for the session unless remembered',
  async () => {
    for (const [path, key] of [
      ['/', null],
      ['/assets/main.js', null],
      ['/assets/vendor/lit-html/lit-html.js', null],
      ['/api/health', null],
      ['/api/environments', null],
      ['/api/environments', ADMIN_KEY],
      ['/api/docs', null],
      ['/api/nothing-here', ADMIN_KEY],
    ] as const) {
      const r = await srv.request('GET', path, undefined, { key });
      const csp = String(r.headers['content-security-policy']);
      expect([path, csp]).toEqual([path, expect.stringContaining("script-src 'self'")]);
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).not.toMatch(/script-src[^;]*unsafe-inline/);
      expect(r.headers['x-content-type-options']).toBe('nosniff');
      expect(r.headers['x-frame-options']).toBe('DENY');
      expect(String(r.headers['strict-transport-security'])).toMatch(/max-age=\d{7,}/);
    }
    // The OpenAPI page works under its policy too (Swagger UI's scripts are files; only its styles are inline).
    await page.goto(`${srv.base}/api/docs`);
    await page.waitForSelector('.swagger-ui .info :text("Cuttle")');
    expect(cspReports).toEqual([]);
    expect(pageErrors).toEqual([]);

    const signIn = async (remember: boolean) => {
      const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
      const p = await ctx.newPage();
      await p.goto(srv.base);
      await p.fill(el('api-key'), ADMIN_KEY);
      if (remember) await p.check(el('remember'));
      await p.click('button:has-text("Sign in")');
      await p.waitForSelector('button:has-text("Sign out")');
      const stored = await p.evaluate(() => {
        const g = globalThis as any;
        return { session: g.sessionStorage.length, local: g.localStorage.length };
      });
      const state = await ctx.storageState(); // what survives the browser: cookies and localStorage, not sessionStorage
      await ctx.close();
      return { stored, state };
    };
    const reopen = async (state: Awaited<ReturnType<typeof signIn>>['state']) => {
      const ctx = await browser.newContext({ ignoreHTTPSErrors: true, storageState: state });
      const p = await ctx.newPage();
      await p.goto(srv.base);
      await p.waitForSelector(`${el('api-key')}, button:has-text("Sign out")`);
      return { ctx, p, signedIn: await p.locator('button:has-text("Sign out")').count() };
    };

    const once = await signIn(false);
    expect(once.stored).toEqual({ session: 1, local: 0 });
    const after = await reopen(once.state);
    expect(after.signedIn).toBe(0);
    expect(JSON.stringify(once.state)).not.toContain(ADMIN_KEY);
    await after.ctx.close();

    const kept = await signIn(true);
    expect(kept.stored).toEqual({ session: 0, local: 1 });
    const back = await reopen(kept.state);
    expect(back.signedIn).toBe(1);
    // Signing out forgets a remembered key too.
    await back.p.click('button:has-text("Sign out")');
    await back.p.waitForSelector(el('api-key'));
    expect(
      await back.p.evaluate(() => (globalThis as any).localStorage.length + (globalThis as any).sessionStorage.length),
    ).toBe(0);
    await back.ctx.close();
  },
  60_000,
);

// A deployment queued behind another shows so, naming (and linking) the one ahead; once that one ends it runs, and
// the live view follows it to success without a reload.
browserIt(
  'shows a queued deployment and behind which',
  async () => {
    const p = await createProject(srv, 'Queued site', [
      {
        name: 'Web',
        targetRoles: ['web'],
        windowSize: 3,
        actions: [{ name: 'Slow', type: 'script', script: 'sleep 2' }],
      },
    ]);
    const deploy = async (version: string) => {
      const rel = await srv.must('POST', '/api/releases', { projectId: p.id, version });
      return srv.must('POST', '/api/deployments', { releaseId: rel.id, environmentId: 'Demo' });
    };
    const first = await deploy('1');
    const second = await deploy('2');
    await page.goto(`${srv.base}/#/deployments/${second.id}`);
    await page.waitForSelector(`${el('deployment-state')}[data-state="queued"]`);
    expect(await page.textContent(el('queued-behind'))).toContain(first.id.slice(0, 8));
    expect(await page.getAttribute(`${el('queued-behind')} a`, 'href')).toBe(`#/deployments/${first.id}`);
    await page.waitForSelector(`${el('deployment-state')}[data-state="success"]`, { timeout: 30_000 });
    expect(await page.locator(el('queued-behind')).count()).toBe(0);
  },
  60_000,
);
