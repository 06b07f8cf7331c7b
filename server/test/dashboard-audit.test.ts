/**
 * The dashboard's Audit page in a real browser (Chromium through playwright-core) against a real server: the log as
 * the API has it, newest first, with who did what; the outcome filter; clicking an actor or a resource to see only
 * theirs; Older pages. Nothing is mocked; each test says what a person would check.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ROOT, startServer, stopAll, waitFor, type TestServer } from './support/fixtures.js';

const ADMIN_KEY = 'integration-admin-key-0123456789';
// As in dashboard.test.ts: Debian's chromium, skipped with a warning when missing unless CUTTLE_REQUIRE_BROWSER=1.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser && process.env.CUTTLE_REQUIRE_BROWSER === '1')
  throw new Error(`no browser at ${CHROMIUM}: install Debian's chromium`);
if (!haveBrowser) process.stderr.write(`\nskipping the browser test: no ${CHROMIUM} (apt-get install chromium)\n`);
const browserIt = haveBrowser ? it : it.skip;

let srv: TestServer;
let browser: Browser;
let page: Page;
let project: { id: string };
const cspReports: string[] = [];
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!haveBrowser) return;
  srv = await startServer();
  project = await srv.must('POST', '/api/projects', { name: 'Storefront' });
  const bob = await srv.must('POST', '/api/api-keys', { name: 'bob' });
  await srv.must('PATCH', `/api/projects/${project.id}`, { description: 'shop' }, [200], { key: bob.key });
  expect((await srv.request('POST', '/api/environments', { name: 'X' }, { key: 'wrong-key' })).status).toBe(401);
  // 55 more changes: more than one page (50) of the log.
  for (let i = 0; i < 55; i++) await srv.must('POST', '/api/environments', { name: `Env ${i}` });
  await waitFor('the events', async () => (await srv.must('GET', '/api/events?limit=1000')).length >= 59);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 1000 } });
  page = await context.newPage();
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) cspReports.push(m.text());
  });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(srv.base);
  await page.fill(el('api-key'), ADMIN_KEY);
  await page.click('button:has-text("Sign in")');
  await page.waitForSelector(`${el('live-status')}:has-text("live")`);
}, 120_000);

afterEach(() => {
  expect(cspReports).toEqual([]);
  expect(pageErrors).toEqual([]);
});

afterAll(async () => {
  await browser?.close();
  await srv?.stop();
  await stopAll();
});

const el = (testid: string) => `[data-testid="${testid}"]`;
const shot = async (name: string) => {
  mkdirSync(join(ROOT, 'test-artifacts'), { recursive: true });
  await page.screenshot({ path: join(ROOT, 'test-artifacts', `${name}.png`), fullPage: true });
};
const rows = () => page.$$eval(el('audit-event'), (trs) => trs.map((tr) => tr.getAttribute('data-id')));

// The Audit page, reached from the navigation, lists the newest 50 events in the API's order; Older adds the rest,
// and then there is nothing older to ask for.
browserIt('lists the log newest first and pages back', async () => {
  await page.click('[data-nav="audit"]');
  await page.waitForSelector(el('audit-events'));
  const api = (await srv.must('GET', '/api/events?limit=1000')).map((e: any) => e.id);
  expect(await rows()).toEqual(api.slice(0, 50));
  await page.click(el('audit-older'));
  await waitFor('the older page', async () => ((await rows()).length === api.length ? true : undefined));
  expect(await rows()).toEqual(api);
  await page.waitForSelector(el('audit-older'), { state: 'detached' });
  await shot('audit-log');
});

// Filtering by outcome "denied" shows only the refused request, with its actor; clicking an actor shows only that
// actor's events; clicking a resource only that resource's, with the project's name instead of its id.
browserIt('filters by outcome, actor and resource', async () => {
  await page.goto(`${srv.base}/#/audit`);
  await page.waitForSelector(el('audit-events'));
  await page.selectOption(el('audit-filter-outcome'), 'denied');
  await page.waitForSelector(`${el('audit-event')}[data-outcome="denied"]`);
  await waitFor('only denied events', async () => ((await rows()).length === 1 ? true : undefined));
  expect(await page.textContent(el('audit-actor'))).toBe('invalid key');
  expect(await page.textContent(el('audit-summary'))).toBe('refused: unauthorized (401)');

  // The project's events are older than the first page: narrow to projects first.
  await page.click(el('audit-clear'));
  await page.selectOption(el('audit-filter-type'), 'project');
  await page.waitForSelector(`${el('audit-event')}[data-action="project.update"]`);
  await page.click(`${el('audit-event')}[data-action="project.update"] ${el('audit-actor')}`);
  await waitFor('only bob', async () => ((await rows()).length === 1 ? true : undefined));
  expect(await page.inputValue(el('audit-filter-actor'))).toBe('bob');
  expect(await page.textContent(el('audit-summary'))).toBe('project "Storefront": changed description');

  await page.click(el('audit-clear'));
  await page.selectOption(el('audit-filter-type'), 'project');
  await page.waitForSelector(`${el('audit-event')}[data-action="project.create"]`);
  await page.click(`${el('audit-event')}[data-action="project.create"] ${el('audit-resource')}`);
  await waitFor('only the project', async () => ((await rows()).length === 2 ? true : undefined));
  expect(await page.$$eval(el('audit-resource'), (as) => as.map((a) => a.textContent))).toEqual([
    'project Storefront',
    'project Storefront',
  ]);
  expect(await page.inputValue(el('audit-filter-id'))).toBe(project.id);
});
