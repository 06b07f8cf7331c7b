/**
 * The dashboard shows what the signed-in key may do, in a real browser (Chromium through playwright-core) against a
 * real server: the header names the key and its role; a viewer gets no deploy, release, process, steering or answer
 * buttons; an approver answers; the key that created a deployment is told another key must answer an approval that
 * prevents self-approval. The deployment waits on a manual intervention on the server, so no agent is needed.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createProject, startServer, stopAll, waitFor, type TestServer } from './support/fixtures.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser && process.env.CUTTLE_REQUIRE_BROWSER === '1')
  throw new Error(`no browser at ${CHROMIUM}: install Debian's chromium`);
if (!haveBrowser) process.stderr.write(`\nskipping the browser test: no ${CHROMIUM} (apt-get install chromium)\n`);
const browserIt = haveBrowser ? it : it.skip;

let srv: TestServer;
let browser: Browser;
let projectId: string;
let deploymentId: string;
let selfDeploymentId: string;
const keys: Record<string, string> = {};
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!haveBrowser) return;
  srv = await startServer();
  // Two environments: deployments of one project to one environment run one at a time.
  const env = await srv.must('POST', '/api/environments', { name: 'Production' });
  const staging = await srv.must('POST', '/api/environments', { name: 'Staging' });
  projectId = (
    await createProject(srv, 'Storefront', [
      {
        name: 'Approve',
        actions: [
          {
            name: 'Sign-off',
            type: 'manual-intervention',
            instructions: 'Check, then proceed',
            preventSelfApproval: true,
          },
        ],
      },
    ])
  ).id;
  const release = await srv.must('POST', '/api/releases', { projectId, version: '1.0.0' });
  for (const role of ['viewer', 'approver'])
    keys[role] = (await srv.must('POST', '/api/api-keys', { name: `${role}-key`, role })).key;
  const deploy = async (environmentId: string, key?: string) =>
    (await srv.must('POST', '/api/deployments', { releaseId: release.id, environmentId }, [201], { key })).id;
  deploymentId = await deploy(env.id);
  selfDeploymentId = await deploy(staging.id, keys.approver);
  for (const id of [deploymentId, selfDeploymentId])
    await waitFor('an interruption', async () => (await srv.must('GET', `/api/interruptions?deploymentId=${id}`))[0]);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await srv?.stop();
  await stopAll();
});

const el = (testid: string) => `[data-testid="${testid}"]`;

async function signIn(key: string): Promise<Page> {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(srv.base);
  await page.fill(el('api-key'), key);
  await page.click('button:has-text("Sign in")');
  await page.waitForSelector('button:has-text("Sign out")');
  return page;
}

browserIt(
  'shows a viewer who it is and no buttons it may not use; an approver answers, except its own deployment',
  async () => {
    const viewer = await signIn(keys.viewer);
    expect(await viewer.textContent(el('whoami'))).toContain('viewer-key · viewer');
    await viewer.goto(`${srv.base}/#/projects/${projectId}`);
    await viewer.waitForSelector(el('release-1.0.0'));
    expect(await viewer.locator(el('open-deploy')).count()).toBe(0);
    expect(await viewer.locator(el('release-version')).count()).toBe(0);
    expect(await viewer.locator(el('process-read-only')).count()).toBe(1);
    expect(await viewer.locator(el('save-process')).isHidden()).toBe(true);
    await viewer.goto(`${srv.base}/#/deployments/${deploymentId}`);
    await viewer.waitForSelector(el('interruption'));
    expect(await viewer.locator(`${el('interruption')} button`).count()).toBe(0);
    await viewer.waitForSelector(el('may-not-answer'));
    expect(await viewer.locator(el('cancel-deployment')).isHidden()).toBe(true);
    expect(await viewer.locator(el('pause-deployment')).isHidden()).toBe(true);
    await viewer.goto(`${srv.base}/#/machines`);
    await viewer.waitForSelector(el('environments'));
    expect(await viewer.locator(el('create-token')).count()).toBe(0);
    expect(await viewer.locator(el('env-name')).count()).toBe(0);

    const approver = await signIn(keys.approver);
    expect(await approver.textContent(el('whoami'))).toContain('approver-key · approver');
    await approver.goto(`${srv.base}/#/projects/${projectId}`);
    await approver.waitForSelector(el('open-deploy'));
    // Its own deployment: the approval prevents self-approval, so no answer buttons, and why.
    await approver.goto(`${srv.base}/#/deployments/${selfDeploymentId}`);
    await approver.waitForSelector(el('self-approval'));
    expect(await approver.locator(`${el('interruption')} button`).count()).toBe(0);
    // Another key's deployment: it answers, and the deployment goes on to success.
    await approver.goto(`${srv.base}/#/deployments/${deploymentId}`);
    await approver.click(`${el('interruption')} button:has-text("Proceed")`);
    const done = await srv.waitDeployment(deploymentId);
    expect(done.state).toBe('success');
    expect(pageErrors).toEqual([]);
  },
  120_000,
);
