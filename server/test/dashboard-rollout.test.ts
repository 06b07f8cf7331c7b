/**
 * The dashboard's rollout and steering views, in a real browser (Chromium through playwright-core) against a real
 * server and four real agents: pausing and resuming from the deployment page, a batch approval answered there, the
 * batch groups and the bake's countdown, a target waiting for a person and one skipped as unavailable, the process
 * editor's rollout fields, and the release preview's batches and estimates. What the page shows is checked against
 * what the agents' scripts recorded on disk (when each ran), not only against the API.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import {
  createProject,
  ROOT,
  sleep,
  startDeployment,
  startFleet,
  startServer,
  stopAll,
  timed,
  timesIn,
  waitFor,
  waitInterruptions,
  waitOnline,
  type TestFleet,
  type TestServer,
} from './support/fixtures.js';

const ADMIN_KEY = 'integration-admin-key-0123456789';
// As in dashboard.test.ts: Debian's chromium, skipped with a warning when missing unless CUTTLE_REQUIRE_BROWSER=1.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser && process.env.CUTTLE_REQUIRE_BROWSER === '1')
  throw new Error(`no browser at ${CHROMIUM}: install Debian's chromium`);
if (!haveBrowser) process.stderr.write(`\nskipping the browser test: no ${CHROMIUM} (apt-get install chromium)\n`);
const browserIt = haveBrowser ? it : it.skip;
/**
 * Retry failed and roll back are served by endpoints built alongside these views (their contract is fixed): their test
 * runs once the server has them, and is reported as skipped until then.
 */
const haveRetryAndRollback = ['retry-failed', 'rollback'].every((r) =>
  readFileSync(join(ROOT, 'server/src/deployments/deployments.controller.ts'), 'utf8').includes(`':id/${r}'`),
);
const steerIt = haveBrowser && haveRetryAndRollback ? it : it.skip;

let srv: TestServer;
let fleet: TestFleet;
let browser: Browser;
let page: Page;
let envId: string;
const machineIds: Record<string, string> = {};
/** CSP reports and uncaught errors of the page: there should be none. */
const cspReports: string[] = [];
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!haveBrowser) return;
  srv = await startServer();
  envId = (await srv.must('POST', '/api/environments', { name: 'Rollout' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [envId],
    roles: ['web'],
    maxUses: 4,
  });
  fleet = startFleet(srv, { prefix: 'web', count: 4, roles: ['web'], environments: ['Rollout'], token });
  for (const m of await waitOnline(srv, fleet.names, 60_000)) machineIds[m.name] = m.id;
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
  await fleet?.stop();
  await srv?.stop();
  await stopAll();
});

const el = (testid: string) => `[data-testid="${testid}"]`;
/** A picture of the page in test-artifacts/, for people to look at. */
const shot = async (name: string) => {
  mkdirSync(join(ROOT, 'test-artifacts'), { recursive: true });
  await page.screenshot({ path: join(ROOT, 'test-artifacts', `${name}.png`), fullPage: true });
};
const open = async (hash: string) => {
  await page.goto(`${srv.base}/${hash}`);
  await page.waitForSelector(`${el('live-status')}:has-text("live")`);
};
/** When each machine's run of `tag` started and ended, as its script recorded it (by machine name). */
function runsOf(tag: string) {
  const out = new Map<string, { start: number; end?: number }>();
  for (const n of fleet.names) {
    const t = timesIn(fleet.home(n)).filter((x) => x.tag === tag);
    const s = t.find((x) => x.edge === 'start');
    if (s) out.set(n, { start: s.ms, end: t.find((x) => x.edge === 'end')?.ms });
  }
  return out;
}
const text = async (testid: string) => ((await page.textContent(el(testid))) ?? '').replace(/\s+/g, ' ').trim();

// Someone presses Pause while the first of four targets runs (window 1): the badge says paused and since when, and no
// target starts while it stays paused (the agents' own clocks say so). The Resume button waits for its request (it is
// disabled meanwhile), then the rest runs, every target once, each started after Resume was pressed. A refused
// steering request (Roll back with nothing to go back to) shows the API's own message next to the buttons.
browserIt(
  'pauses and resumes a deployment from its page',
  async () => {
    const p = await createProject(srv, 'Pausable', [
      {
        name: 'Web',
        targetRoles: ['web'],
        windowSize: 1,
        actions: [{ name: 'Roll', type: 'script', script: timed('pause', 1) }],
      },
    ]);
    const dep = await startDeployment(srv, p.id, envId);
    await open(`#/deployments/${dep.id}`);
    await page.waitForSelector(`${el('cell-Web-web-01')}[data-state="running"]`, { timeout: 20_000 });
    expect(await page.isVisible(el('resume-deployment'))).toBe(false);
    expect(await page.isVisible(el('retry-failed'))).toBe(false);
    expect(await page.isVisible(el('rollback-deployment'))).toBe(false);

    await page.click(el('pause-deployment'));
    await page.waitForSelector(`${el('deployment-state')}[data-state="paused"]`, { timeout: 10_000 });
    const pausedSeen = Date.now();
    await page.waitForSelector(`${el('paused-since')}:has-text("since")`);
    await page.waitForSelector(el('pause-deployment'), { state: 'hidden' });
    await page.waitForSelector(el('resume-deployment'));
    const d = await srv.must('GET', `/api/deployments/${dep.id}`);
    expect(d.state).toBe('paused');
    expect(d.pausedAt).toBeTruthy();
    const startedBefore = runsOf('pause').size;
    expect(startedBefore).toBeGreaterThanOrEqual(1);
    expect(startedBefore).toBeLessThanOrEqual(2); // the one running, and one that may have started as it was pressed
    await sleep(3000);
    // Nothing started while paused: the same runs, all begun before the page said paused.
    expect(runsOf('pause').size).toBe(startedBefore);
    for (const [, r] of runsOf('pause')) expect(r.start).toBeLessThan(pausedSeen);
    expect(await page.getAttribute(el('deployment-state'), 'data-state')).toBe('paused');
    await shot('deployment-paused');

    // Resume's request is held back a moment: its button waits for it.
    await page.route('**/resume', async (route) => {
      await sleep(700);
      await route.continue();
    });
    const resumedAt = Date.now();
    await page.click(el('resume-deployment'));
    expect(await page.isDisabled(el('resume-deployment'))).toBe(true);
    await page.waitForSelector(el('pause-deployment'), { timeout: 10_000 });
    await page.unroute('**/resume');
    await page.waitForSelector(`${el('deployment-state')}[data-state="success"]`, { timeout: 30_000 });
    const runs = runsOf('pause');
    expect(runs.size).toBe(4);
    expect([...runs.values()].filter((r) => r.start >= resumedAt).length).toBe(4 - startedBefore);
    const done = await srv.must('GET', `/api/deployments/${dep.id}`);
    expect(done.steps[0].targets.every((t: any) => t.attempt === 1 && t.state === 'success')).toBe(true);

    // Ended: only Roll back is offered. With no earlier release to go back to it is refused, and the page says what
    // the API said.
    await page.waitForSelector(el('rollback-deployment'));
    expect(await page.isVisible(el('pause-deployment'))).toBe(false);
    expect(await page.isVisible(el('retry-failed'))).toBe(false);
    page.once('dialog', (dlg) => void dlg.accept());
    await page.click(el('rollback-deployment'));
    await page.waitForSelector(`${el('steer-error')}:not([hidden])`);
    const refused = await srv.request('POST', `/api/deployments/${dep.id}/rollback`);
    expect(refused.status).toBeGreaterThanOrEqual(400);
    const message = [refused.body.message].flat().join('; ');
    expect(await text('steer-error')).toContain(message);
    expect(page.url()).toContain(`#/deployments/${dep.id}`);
    expect(await page.isDisabled(el('rollback-deployment'))).toBe(false);
  },
  90_000,
);

// A step in two batches (1, then 3) asks before the second: the page shows the approval with that batch's targets,
// the default answer and its countdown moving, and the step's batches (the first current). The second batch does not
// start while nobody answers; it starts only after Proceed is clicked, and the answer is the person's, with the notes
// typed into the box.
browserIt(
  'answers a batch approval from the page',
  async () => {
    const p = await createProject(srv, 'Approved', [
      {
        name: 'Web',
        targetRoles: ['web'],
        batches: [1, '100%'],
        approveEachBatch: true,
        approvalTimeoutSeconds: 600,
        approvalDefault: 'abort',
        actions: [{ name: 'Roll', type: 'script', script: timed('approve', 0.3) }],
      },
    ]);
    const dep = await startDeployment(srv, p.id, envId);
    await open(`#/deployments/${dep.id}`);
    const box = `${el('interruption')}[data-kind="batch-approval"]`;
    await page.waitForSelector(box, { timeout: 20_000 });
    expect(await page.textContent(box)).toContain('Approve batch 2 of 2?');
    expect(await page.locator(`${box} ${el('approval-targets')} .tag`).allTextContents()).toEqual([
      'web-02',
      'web-03',
      'web-04',
    ]);
    expect(await text('approval-default')).toBe('abort');
    expect(await page.locator(`${box} button`).allTextContents()).toEqual(['Proceed', 'Abort']);
    const left1 = await text('approval-left');
    expect(left1).toMatch(/^(9|10) min \d\d s$/);
    await page.waitForFunction(
      ([sel, before]) => (globalThis as any).document.querySelector(sel)?.textContent.trim() !== before,
      [el('approval-left'), left1] as const,
      { timeout: 5000 },
    );
    await page.waitForSelector(`${el('gate-Web')}[data-gate="approval"]:has-text("waiting for approval")`);
    await page.waitForSelector(
      `${el('batch-Web-1')}[data-current="true"] ${el('cell-Web-web-01')}[data-state="success"]`,
    );
    expect(await page.locator(`${el('batch-Web-2')} .cell[data-state="pending"]`).count()).toBe(3);
    expect(await page.getAttribute(el('deployment-head'), 'data-ticking')).toBe('true');

    // The countdown re-renders the page every second: what is being typed, and the focus, stay.
    await page.click(`${box} ${el('interruption-notes')}`);
    await page.keyboard.type('first node');
    await sleep(1200);
    expect([...runsOf('approve').keys()]).toEqual(['web-01']); // the second batch waits for the answer
    await page.keyboard.type(' looks fine');
    expect(await page.inputValue(`${box} ${el('interruption-notes')}`)).toBe('first node looks fine');
    expect(await page.evaluate(() => (globalThis as any).document.activeElement?.dataset?.testid)).toBe(
      'interruption-notes',
    );
    await shot('batch-approval');

    const clicked = Date.now();
    await page.click(`${box} button:has-text("Proceed")`);
    await page.waitForSelector(box, { state: 'detached', timeout: 15_000 });
    await page.waitForSelector(`${el('deployment-state')}[data-state="success"]`, { timeout: 30_000 });
    const runs = runsOf('approve');
    expect(runs.size).toBe(4);
    for (const n of ['web-02', 'web-03', 'web-04']) expect(runs.get(n)!.start).toBeGreaterThanOrEqual(clicked);
    const [answered] = await srv.must('GET', `/api/interruptions?deploymentId=${dep.id}`);
    expect(answered).toMatchObject({ kind: 'batch-approval', result: 'proceed', notes: 'first node looks fine' });
    expect(answered.submittedBy).not.toBe('timeout');
    await page.waitForSelector(`${el('deployment-head')}[data-ticking="false"]`);
  },
  60_000,
);

// Batches 1, 2 and 1 of four targets with an 8 s bake and a health check: while the first batch bakes, the step says
// "baking — N s left" and N goes down by itself (the page's clock ticks, nothing else changes); the targets show in
// their batch groups, the first marked current. The next batch starts only once the countdown has run out, the cells
// show their bake checks, and the clock stops once nothing counts down. The preview of a next release then shows the
// batches and the estimate the API gives (or that there is none yet).
browserIt(
  'shows batch groups and counts the bake down',
  async () => {
    const p = await createProject(srv, 'Baked', [
      {
        name: 'Web',
        targetRoles: ['web'],
        batches: [1, '50%', '100%'],
        bakeSeconds: 8,
        healthCheck: { script: 'echo "healthy: $CUTTLE_MACHINE_NAME"', timeoutSeconds: 10 },
        actions: [{ name: 'Roll', type: 'script', script: timed('bake', 0.3) }],
      },
    ]);
    const dep = await startDeployment(srv, p.id, envId);
    await open(`#/deployments/${dep.id}`);
    const gate = `${el('gate-Web')}[data-gate="bake"]`;
    await page.waitForSelector(gate, { timeout: 20_000 });
    const left = async () => Number(/^baking — (\d+) s left$/.exec(await text('gate-Web'))?.[1]);
    const first = await left();
    expect(first).toBeGreaterThan(2);
    expect(first).toBeLessThanOrEqual(8);
    const bakeUntil = Date.parse((await page.getAttribute(gate, 'data-bake-until'))!);
    expect(await page.getAttribute(el('deployment-head'), 'data-ticking')).toBe('true');
    await page.waitForSelector(`${el('batch-Web-1')}[data-current="true"]:has-text("Batch 1 of 3")`);
    expect(await page.locator(`${el('batch-Web-1')} .cell`).evaluateAll((c) => c.map((x) => x.dataset.testid))).toEqual(
      ['cell-Web-web-01'],
    );
    expect(await page.locator(`${el('batch-Web-2')} .cell`).evaluateAll((c) => c.map((x) => x.dataset.testid))).toEqual(
      ['cell-Web-web-02', 'cell-Web-web-03'],
    );
    expect(await page.getAttribute(el('batch-Web-2'), 'data-current')).toBeNull();
    expect(await text('batches-Web')).toBe('batch 1 of 3');
    await sleep(2100);
    const later = await left();
    expect(later).toBeLessThanOrEqual(first - 1);
    expect(later).toBeGreaterThanOrEqual(first - 3);
    await shot('batch-bake');

    await page.waitForSelector(`${el('deployment-state')}[data-state="success"]`, { timeout: 60_000 });
    const runs = runsOf('bake');
    expect(runs.size).toBe(4);
    // What the page counted down to is when the next batch began.
    expect(Math.min(runs.get('web-02')!.start, runs.get('web-03')!.start)).toBeGreaterThanOrEqual(bakeUntil - 50);
    for (const n of ['web-01', 'web-02', 'web-03'])
      expect(await page.getAttribute(el(`cell-Web-${n}`), 'data-bake-check')).toBe('success');
    expect(await page.getAttribute(el('cell-Web-web-04'), 'data-bake-check')).toBeNull(); // no bake after the last
    expect(await text('bake-check-Web-web-01')).toBe('bake check success');
    await page.waitForSelector(`${el('deployment-head')}[data-ticking="false"]`);
    expect(await page.isVisible(el('gate-Web'))).toBe(false);

    // The preview of the next release: the batches by name, and the estimate as the API gives it.
    await open(`#/projects/${p.id}`);
    await page.fill(el('release-version'), '2.0.0');
    await page.click('button:has-text("Create release")');
    await page.selectOption(el('deploy-environment'), { label: 'Rollout' });
    await page.waitForSelector(el('preview-batches-Web'));
    expect(await page.locator(`${el('preview-batches-Web')} .tag`).allTextContents()).toEqual([
      'batch 1: web-01',
      'batch 2: web-02, web-03',
      'batch 3: web-04',
    ]);
    const rel = (await srv.must('GET', `/api/releases?projectId=${p.id}`)).find((r: any) => r.version === '2.0.0');
    const preview = await srv.must('GET', `/api/deployments/preview?releaseId=${rel.id}&environmentId=${envId}`);
    const shown = (s: number | null) => (s === null ? 'no estimate yet' : expect.stringMatching(/^about \d/));
    expect(await text('preview-estimate')).toEqual(shown(preview.estimatedSeconds));
    expect(await text('preview-estimate-Web')).toEqual(shown(preview.steps[0].estimatedSeconds));
    await shot('preview-batches');
  },
  90_000,
);

// Inside a rolling step with skipUnavailable, a target whose machine was disabled before the step started shows
// "skipped" with the reason, and a target at its manual intervention shows that it waits for a person; answering it
// on the page lets that target finish its last action.
browserIt(
  'shows a target waiting for a person and one skipped as unavailable',
  async () => {
    const p = await createProject(srv, 'Per target', [
      { name: 'Gate', actions: [{ name: 'Go', type: 'manual-intervention', instructions: 'go?' }] },
      {
        name: 'Web',
        targetRoles: ['web'],
        skipUnavailable: true,
        actions: [
          { name: 'Drain', type: 'script', script: timed('person-drain', 0.1) },
          { name: 'Check', type: 'manual-intervention', instructions: 'Is it drained?' },
          { name: 'Upgrade', type: 'script', script: timed('person-upgrade', 0.1) },
        ],
      },
    ]);
    const dep = await startDeployment(srv, p.id, envId, {
      deployment: { specificMachineIds: [machineIds['web-01'], machineIds['web-02']] },
    });
    const [gate] = await waitInterruptions(srv, dep.id, 1, 30_000);
    await srv.must('PATCH', `/api/machines/${machineIds['web-02']}`, { disabled: true });
    try {
      await srv.must('POST', `/api/interruptions/${gate.id}/submit`, { result: 'proceed' });
      await open(`#/deployments/${dep.id}`);
      await page.waitForSelector(`${el('waiting-Web-web-01')}[data-waiting-for="person"]`, { timeout: 20_000 });
      expect(await text('waiting-Web-web-01')).toBe('waiting for a person (manual intervention)');
      await page.waitForSelector(`${el('cell-Web-web-02')}[data-state="skipped"]`);
      expect(await text('skip-reason-Web-web-02')).toBe('skipped: disabled');
      const box = `${el('interruption')}[data-kind="manual-intervention"]`;
      expect(await page.textContent(box)).toContain('Web / Check on web-01');
      await shot('waiting-for-person');
      expect(runsOf('person-upgrade').has('web-01')).toBe(false);
      await page.click(`${box} button:has-text("Proceed")`);
      await page.waitForSelector(`${el('deployment-state')}[data-state="success"]`, { timeout: 30_000 });
      expect(runsOf('person-upgrade').get('web-01')!.start).toBeGreaterThan(runsOf('person-drain').get('web-01')!.end!);
      expect(runsOf('person-drain').has('web-02')).toBe(false);
      expect(await page.isVisible(el('waiting-Web-web-01'))).toBe(false);
    } finally {
      await srv.must('PATCH', `/api/machines/${machineIds['web-02']}`, { disabled: false });
    }
  },
  60_000,
);

// A person sets a step's rollout policy in the process editor: batches typed as "1, 10%, 100%", a bake, a health
// check, approvals with a timeout and a default, a spread label, skipping unavailable targets, and a manual
// intervention among the step's actions (allowed in a step with roles). A bad batch size is refused with the API's
// message; once saved the API returns exactly what was set, the page shows it again after a reload, and emptying the
// fields (unticking approvals) takes the keys out again.
browserIt(
  "edits and saves a step's rollout policy",
  async () => {
    const p = await createProject(srv, 'Policy editor', [
      { name: 'Web', targetRoles: ['web'], actions: [{ name: 'Roll', type: 'script', script: 'echo roll' }] },
    ]);
    await open(`#/projects/${p.id}`);
    const step = el('step-Web');
    const input = (field: string, tag = 'input') => `${step} ${el('rollout-Web')} [data-field="${field}"] ${tag}`;
    await page.waitForSelector(el('rollout-Web'));

    await page.fill(input('batches'), '0, 10%');
    await page.click(el('save-process'));
    await page.waitForSelector(`${el('process-errors')}:has-text("steps[0].batches[0]")`);

    await page.fill(input('batches'), '1, 10%, 100%');
    await page.fill(input('bake'), '30');
    await page.fill(input('spread-by'), 'zone');
    await page.check(input('skip-unavailable'));
    expect(await page.isVisible(input('approval-timeout'))).toBe(false);
    await page.check(input('approve-each-batch'));
    await page.fill(input('approval-timeout'), '600');
    await page.selectOption(input('approval-default', 'select'), 'proceed');
    await page.fill(input('check-timeout'), '10');
    await page.fill(input('check-retries'), '2');
    await page.fill(input('check-interval'), '3');
    await page.fill(input('health-check-script', 'textarea'), 'curl -fsS http://localhost/health');
    await page.click(`${step} button:has-text("+ Add action")`);
    const added = el('action-Web-Action 2');
    await page.selectOption(`${added} [data-field="type"] select`, 'manual-intervention');
    await page.fill(`${added} [data-field="instructions"] textarea`, 'Look at the dashboards');
    expect(await page.textContent(`${step} > .row-head .summary`)).toContain(
      'batches 1, 10%, 100% · bake 30 s · health check · approve each batch (proceed after 600 s) · spread by zone · skip unavailable',
    );
    await page.click(el('save-process'));
    await page.waitForSelector(`${el('process-status')}:has-text("· saved")`);
    await page.waitForSelector(`${el('process-errors')}[hidden]`, { state: 'attached' });
    const expected = {
      name: 'Web',
      targetRoles: ['web'],
      batches: [1, '10%', '100%'],
      bakeSeconds: 30,
      healthCheck: { script: 'curl -fsS http://localhost/health', timeoutSeconds: 10, retries: 2, intervalSeconds: 3 },
      approveEachBatch: true,
      approvalTimeoutSeconds: 600,
      approvalDefault: 'proceed',
      spreadBy: 'zone',
      skipUnavailable: true,
      actions: [
        { name: 'Roll', type: 'script', script: 'echo roll' },
        { name: 'Action 2', type: 'manual-intervention', instructions: 'Look at the dashboards' },
      ],
    };
    expect((await srv.must('GET', `/api/projects/${p.id}/deployment-process`)).steps).toEqual([expected]);

    await page.reload();
    await page.waitForSelector(el('rollout-Web'));
    expect(await page.inputValue(input('batches'))).toBe('1, 10%, 100%');
    expect(await page.inputValue(input('bake'))).toBe('30');
    expect(await page.inputValue(input('approval-timeout'))).toBe('600');
    expect(await page.inputValue(input('approval-default', 'select'))).toBe('proceed');
    expect(await page.inputValue(input('health-check-script', 'textarea'))).toBe('curl -fsS http://localhost/health');
    expect(await page.inputValue(input('check-retries'))).toBe('2');
    expect(await page.isChecked(input('skip-unavailable'))).toBe(true);
    await shot('process-editor-rollout');

    await page.fill(input('bake'), '');
    await page.uncheck(input('approve-each-batch'));
    await page.fill(input('health-check-script', 'textarea'), '');
    for (const f of ['check-timeout', 'check-retries', 'check-interval']) await page.fill(input(f), '');
    await page.click(el('save-process'));
    const cleared = await waitFor(
      'the emptied fields to be saved',
      async () => {
        const s = (await srv.must('GET', `/api/projects/${p.id}/deployment-process`)).steps[0];
        return s.bakeSeconds === undefined ? s : null;
      },
      10_000,
    );
    const { bakeSeconds, healthCheck, approveEachBatch, approvalTimeoutSeconds, approvalDefault, ...kept } = expected;
    void [bakeSeconds, healthCheck, approveEachBatch, approvalTimeoutSeconds, approvalDefault];
    expect(cleared).toEqual(kept);
  },
  45_000,
);

// A package action's "Substitute variables in files" field: globs typed comma separated (a comma inside braces stays in
// its glob) are saved as substituteInFiles, shown again after a reload, and a change of the action's type to script
// takes them out (the API refuses them on a script action).
browserIt(
  "edits a package action's substituteInFiles",
  async () => {
    const p = await createProject(srv, 'Package files editor', [
      { name: 'Site', targetRoles: ['web'], actions: [{ name: 'Install', type: 'package', packageId: 'site' }] },
    ]);
    await open(`#/projects/${p.id}`);
    const field = `${el('action-Site-Install')} ${el('substitute-in-files')}`;
    await page.waitForSelector(field);
    await page.fill(field, 'config/*.conf, {a,b}.json ,');
    await page.click(el('save-process'));
    await page.waitForSelector(`${el('process-status')}:has-text("saved")`);
    const saved = (await srv.must('GET', `/api/projects/${p.id}/deployment-process`)).steps[0].actions[0];
    expect(saved).toEqual({
      name: 'Install',
      type: 'package',
      packageId: 'site',
      substituteInFiles: ['config/*.conf', '{a,b}.json'],
    });
    await page.reload();
    await page.waitForSelector(field);
    expect(await page.inputValue(field)).toBe('config/*.conf, {a,b}.json');

    await page.selectOption(`${el('action-Site-Install')} [data-field="type"] select`, 'script');
    await page.fill(`${el('action-Site-Install')} [data-field="script"] textarea`, 'echo hi');
    await page.click(el('save-process'));
    const script = await waitFor(
      'the script action to be saved',
      async () => {
        const a = (await srv.must('GET', `/api/projects/${p.id}/deployment-process`)).steps[0].actions[0];
        return a.type === 'script' ? a : null;
      },
      10_000,
    );
    expect(script).toEqual({ name: 'Install', type: 'script', script: 'echo hi' });
  },
  45_000,
);

// A failed deployment offers Retry failed: pressed, the page of the new deployment opens, says which one it retries,
// and follows it to its end. A finished one offers Roll back: confirmed, the rollback's page opens saying what it rolls
// back, and the rolled-back deployment's page links to it.
steerIt(
  'retries the failed targets and rolls back, each opening the new deployment',
  async () => {
    const p = await createProject(srv, 'Steered', [
      { name: 'Web', targetRoles: ['web'], actions: [{ name: 'Roll', type: 'script', script: 'echo good' }] },
    ]);
    const good = await startDeployment(srv, p.id, envId, { version: '1.0.0' });
    expect((await srv.waitDeployment(good.id, 60_000)).state).toBe('success');
    const proc = await srv.must('GET', `/api/projects/${p.id}/deployment-process`);
    const flaky =
      'if [ "$CUTTLE_MACHINE_NAME" = web-02 ] && [ ! -f ../marker-steer ]; then touch ../marker-steer; exit 1; fi';
    await srv.must('PUT', `/api/projects/${p.id}/deployment-process`, {
      version: proc.version,
      steps: [{ ...proc.steps[0], actions: [{ name: 'Roll', type: 'script', script: flaky }] }],
    });
    const bad = await startDeployment(srv, p.id, envId, { version: '2.0.0' });
    expect((await srv.waitDeployment(bad.id, 60_000)).state).toBe('failed');

    await open(`#/deployments/${bad.id}`);
    await page.waitForSelector(el('retry-failed'));
    await page.click(el('retry-failed'));
    await page.waitForFunction((id) => !(globalThis as any).location.hash.includes(id), bad.id, { timeout: 15_000 });
    const retryId = /#\/deployments\/(.+)$/.exec(page.url())![1];
    await page.waitForSelector(`${el('retry-of')} a[href="#/deployments/${bad.id}"]`);
    expect((await srv.must('GET', `/api/deployments/${retryId}`)).retryOf).toBe(bad.id);
    await page.waitForSelector(`${el('deployment-state')}[data-state="success"]`, { timeout: 60_000 });
    await shot('retry-of');

    page.once('dialog', (dlg) => void dlg.accept());
    await page.click(el('rollback-deployment'));
    await page.waitForFunction((id) => !(globalThis as any).location.hash.includes(id), retryId, { timeout: 15_000 });
    const rollbackId = /#\/deployments\/(.+)$/.exec(page.url())![1];
    await page.waitForSelector(`${el('rollback-of')} a[href="#/deployments/${retryId}"]`);
    expect((await srv.must('GET', `/api/deployments/${rollbackId}`)).rollbackOf).toBe(retryId);
    await srv.waitDeployment(rollbackId, 60_000);
    await open(`#/deployments/${retryId}`);
    await page.waitForSelector(`${el('rolled-back-by')} a[href="#/deployments/${rollbackId}"]`);
  },
  120_000,
);
