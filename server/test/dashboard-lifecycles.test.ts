/**
 * Lifecycles in the dashboard, in a real browser against a real server and agent: a release's progression shows
 * where it went and where it may go, and the deploy dialog offers only the environments the release may go to now
 * (saying why the others not yet), until it succeeded in the phase before; a channel given its own lifecycle on the
 * page makes its releases follow that one.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import {
  createProject,
  startAgent,
  startServer,
  stopAll,
  waitFor,
  waitOnline,
  type TestServer,
} from './support/fixtures.js';

const ADMIN_KEY = 'integration-admin-key-0123456789';
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser && process.env.CUTTLE_REQUIRE_BROWSER === '1')
  throw new Error(`no browser at ${CHROMIUM}: install Debian's chromium`);
if (!haveBrowser) process.stderr.write(`\nskipping the browser test: no ${CHROMIUM} (apt-get install chromium)\n`);
const browserIt = haveBrowser ? it : it.skip;

let srv: TestServer;
let browser: Browser;
let page: Page;
let projectId: string;
const env: Record<string, string> = {};
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!haveBrowser) return;
  srv = await startServer();
  for (const name of ['Staging', 'Production']) env[name] = (await srv.must('POST', '/api/environments', { name })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: ['Staging', 'Production'],
    roles: ['web'],
  });
  startAgent(srv, { name: 'ui-01', roles: ['web'], environments: ['Staging', 'Production'], token });
  await srv.must('POST', '/api/lifecycles', {
    name: 'Default',
    phases: [
      { name: 'Staging', environmentIds: ['Staging'] },
      { name: 'Production', environmentIds: ['Production'] },
    ],
  });
  projectId = (
    await createProject(
      srv,
      'Storefront',
      [{ name: 'Web', targetRoles: ['web'], actions: [{ name: 'Hi', type: 'script', script: 'echo hi' }] }],
      { lifecycleId: 'Default' },
    )
  ).id;
  // A hotfix channel whose releases may go straight to Production once it follows this lifecycle.
  await srv.must('POST', '/api/lifecycles', {
    name: 'Straight',
    phases: [{ name: 'Production', environmentIds: ['Production'] }],
  });
  await srv.must('POST', `/api/projects/${projectId}/channels`, { name: 'Hotfix' });
  await waitOnline(srv, ['ui-01'], 60_000);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 1000 } });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await srv?.stop();
  await stopAll();
});

const el = (testid: string) => `[data-testid="${testid}"]`;
const options = async () =>
  (await page.locator(`${el('deploy-environment')} option`).allTextContents()).filter((t) => !t.includes('Choose'));

browserIt(
  "shows a release's progression and offers only the environments it may go to",
  async () => {
    await page.goto(srv.base);
    await page.fill(el('api-key'), ADMIN_KEY);
    await page.click('button:has-text("Sign in")');
    await page.waitForSelector('button:has-text("Sign out")');
    await page.goto(`${srv.base}/#/projects/${projectId}`);
    expect(await page.locator(`${el('project-lifecycle')} option:checked`).textContent()).toContain('Default');

    // A new release may go to Staging only; Production is listed as not yet, with the phase to pass first.
    await page.fill(el('release-version'), '1.0.0');
    await page.click('button:has-text("Create release")');
    await page.waitForSelector(el('progression-1.0.0'));
    expect(await page.getAttribute(el('progression-1.0.0-Production'), 'data-allowed')).toBe('no');
    expect(await page.getAttribute(el('progression-1.0.0-Staging'), 'data-allowed')).toBe('yes');
    expect(await options()).toEqual(['Staging']);
    expect(await page.textContent(el('deploy-not-yet'))).toContain("must first succeed in phase 'Staging'");

    // Deployed to Staging from the dialog; once it succeeded, the page shows it and Production is offered.
    await page.selectOption(el('deploy-environment'), { label: 'Staging' });
    await page.waitForSelector(`${el('deploy-button')}:not([disabled])`);
    await page.click(el('deploy-button'));
    await page.waitForURL(/#\/deployments\//);
    const depId = page.url().split('/').pop()!;
    expect((await srv.waitDeployment(depId)).state).toBe('success');
    await page.goto(`${srv.base}/#/projects/${projectId}`);
    await page.waitForSelector(`${el('progression-1.0.0-Staging')} .badge[data-state="success"]`);
    expect(await page.getAttribute(el('progression-1.0.0-Production'), 'data-allowed')).toBe('yes');
    await page.click(`${el('release-1.0.0')} button:has-text("Deploy…")`);
    await page.waitForSelector(el('deploy-environment'));
    expect(await options()).toEqual(['Production', 'Staging']);
    expect(await page.locator(el('deploy-not-yet')).count()).toBe(0);

    // A channel given its own lifecycle: its new release may go straight to Production (and only there).
    await page.selectOption(el('channel-lifecycle-Hotfix'), { label: 'Straight' });
    const straight = (await srv.must('GET', '/api/lifecycles/Straight')).id;
    await waitFor('the Hotfix channel to follow Straight', async () =>
      (await srv.must('GET', `/api/projects/${projectId}/channels`)).some(
        (c: any) => c.name === 'Hotfix' && c.lifecycleId === straight,
      ),
    );
    await page.fill(el('release-version'), '1.0.1-hotfix');
    await page.selectOption(el('release-channel'), { label: 'Hotfix' });
    await page.click('button:has-text("Create release")');
    await page.waitForSelector(el('progression-1.0.1-hotfix'));
    expect(await options()).toEqual(['Production']);

    // Without a lifecycle, every environment is offered again.
    await page.selectOption(el('project-lifecycle'), { index: 0 });
    await page.waitForSelector(`${el('progression-1.0.0')} .phase-name`, { state: 'detached' });
    expect((await srv.must('GET', `/api/projects/${projectId}`)).lifecycleId).toBeNull();
    expect(pageErrors).toEqual([]);
  },
  120_000,
);
