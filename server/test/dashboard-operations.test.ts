/**
 * The dashboard's operations beyond the main path, in a real browser (Chromium through playwright-core) against a real
 * server and real agents: cancelling a running deployment, answering a guided failure with retry (while live updates
 * keep typed notes, focus and the log filter) and with skip, disabling and revoking a machine, adding a machine with a
 * registration token made in the page, and the process editor's environment, channel, disabled and retry-delay
 * fields. Nothing is mocked; each test says what a person would check.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import {
  createProject,
  ROOT,
  startAgent,
  startDeployment,
  startFleet,
  startServer,
  stopAll,
  waitFor,
  waitOnline,
  type TestAgent,
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

let srv: TestServer;
let fleet: TestFleet;
let browser: Browser;
let page: Page;
let staging: { id: string };
let production: { id: string };
const machineIds: Record<string, string> = {};
/** CSP reports and uncaught errors of the page: there should be none. */
const cspReports: string[] = [];
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!haveBrowser) return;
  srv = await startServer();
  staging = await srv.must('POST', '/api/environments', { name: 'Staging' });
  production = await srv.must('POST', '/api/environments', { name: 'Production' });
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [staging.id],
    roles: ['app'],
    maxUses: 2,
  });
  fleet = startFleet(srv, { prefix: 'app', count: 2, roles: ['app'], environments: ['Staging'], token });
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

// Someone watching a long deployment presses Cancel and confirms: within seconds (the running script is stopped, not
// waited for) the page says cancelled, the Cancel button is gone, and the target that had not started never starts.
browserIt(
  'cancels a running deployment from its page',
  async () => {
    const p = await createProject(srv, 'Long job', [
      {
        name: 'Long',
        targetRoles: ['app'],
        windowSize: 1,
        actions: [
          { name: 'Wait', type: 'script', script: 'echo "long job started on $CUTTLE_MACHINE_NAME"\nsleep 60 & wait' },
        ],
      },
    ]);
    const dep = await startDeployment(srv, p.id, staging.id);
    await open(`#/deployments/${dep.id}`);
    await page.waitForSelector(`${el('cell-Long-app-01')}[data-state="running"]`, { timeout: 20_000 });
    await page.waitForSelector(`${el('log')} :text("long job started on app-01")`);

    // Dismissing the confirmation changes nothing.
    page.once('dialog', (d) => void d.dismiss());
    await page.click(el('cancel-deployment'));
    expect((await srv.must('GET', `/api/deployments/${dep.id}`)).state).toBe('executing');

    page.once('dialog', (d) => void d.accept());
    const t0 = Date.now();
    await page.click(el('cancel-deployment'));
    await page.waitForSelector(`${el('deployment-state')}[data-state="cancelled"]`, { timeout: 15_000 });
    expect(Date.now() - t0).toBeLessThan(15_000);
    await page.waitForSelector(el('cancel-deployment'), { state: 'hidden' });
    const d = await srv.must('GET', `/api/deployments/${dep.id}`);
    expect(d.state).toBe('cancelled');
    const app02 = d.steps[0].targets.find((t: any) => t.machineName === 'app-02');
    expect(app02.startedAt ?? null).toBeNull();
    expect(await page.getAttribute(el('cell-Long-app-02'), 'data-state')).toBe(app02.state);
    expect(['running', 'success']).not.toContain(app02.state);
  },
  45_000,
);

// A target fails under guided failure: the page asks what now. While the person picks a target in the log filter and
// types a note, the other target goes on logging and succeeds: those live updates keep the typed note, the focus in
// it and the filter. Retry runs the failed target again, which now succeeds (its script fails only the first time),
// and the deployment ends in success with the note in the log.
browserIt(
  'retries a failed target, keeping typed notes, focus and the log filter through live updates',
  async () => {
    const script = [
      'case $CUTTLE_MACHINE_NAME in',
      '  app-01) if [ ! -f ../marker-retry ]; then touch ../marker-retry; echo "first try fails"; exit 1; fi; echo "second try works";;',
      '  *) for i in $(seq 1 12); do echo "tick $i on $CUTTLE_MACHINE_NAME"; sleep 0.5; done;;',
      'esac',
    ].join('\n');
    const p = await createProject(srv, 'Flaky', [
      { name: 'Run', targetRoles: ['app'], windowSize: 2, actions: [{ name: 'Try', type: 'script', script }] },
    ]);
    const dep = await startDeployment(srv, p.id, staging.id, { deployment: { guidedFailure: true } });
    await open(`#/deployments/${dep.id}`);
    await page.waitForSelector(`${el('interruption')}[data-kind="guided-failure"]`, { timeout: 20_000 });
    expect(await page.textContent(el('interruption'))).toContain('Run / Try on app-01');
    expect(await page.locator(`${el('interruption')} button`).allTextContents()).toEqual(['Retry', 'Skip', 'Abort']);
    await page.waitForSelector(`${el('cell-Run-app-02')}[data-state="running"]`);

    await page.selectOption(el('log-filter'), { label: 'app-02' });
    await page.click(el('interruption-notes'));
    await page.keyboard.type('flaky network');
    const linesWhileTyping = Number((await page.textContent(el('log-count')))!.split(' ')[0]);
    // app-02 goes on: its ticks and its success arrive over the socket while the note is being written.
    await page.waitForSelector(`${el('cell-Run-app-02')}[data-state="success"]`, { timeout: 20_000 });
    await page.waitForSelector(`${el('log')} :text("tick 12 on app-02")`);
    expect(Number((await page.textContent(el('log-count')))!.split(' ')[0])).toBeGreaterThan(linesWhileTyping);
    expect(await page.inputValue(el('interruption-notes'))).toBe('flaky network');
    expect(await page.evaluate(() => (globalThis as any).document.activeElement?.dataset?.testid)).toBe(
      'interruption-notes',
    );
    expect(await page.inputValue(el('log-filter'))).toBe(machineIds['app-02']);
    expect(await page.textContent(el('log'))).not.toContain('first try fails');
    await page.keyboard.type(', trying again'); // the caret is still at the end of the note
    expect(await page.inputValue(el('interruption-notes'))).toBe('flaky network, trying again');
    await shot('guided-failure');

    await page.click(`${el('interruption')} button:has-text("Retry")`);
    await page.waitForSelector(el('interruption'), { state: 'detached', timeout: 15_000 });
    await page.waitForSelector(`${el('deployment-state')}[data-state="success"]`, { timeout: 20_000 });
    await page.waitForSelector(`${el('cell-Run-app-01')}[data-state="success"]`);
    expect(await page.textContent(el('attempt-Run-app-01'))).toBe('attempt 2');
    await page.selectOption(el('log-filter'), { label: 'app-01' });
    await page.waitForSelector(`${el('log')} :text("second try works")`);
    expect(await page.textContent(el('log'))).toContain('first try fails');
    await page.selectOption(el('log-filter'), { label: 'All targets' });
    await page.waitForSelector(`${el('log')} :text("flaky network, trying again")`);
    const d = await srv.must('GET', `/api/deployments/${dep.id}`);
    expect(d.steps[0].targets.map((t: any) => `${t.machineName}:${t.state}`)).toEqual([
      'app-01:success',
      'app-02:success',
    ]);
  },
  60_000,
);

// A target that always fails, under guided failure: Skip gives up on that target only; the page shows it skipped and
// the deployment finishes as the API says, without the target having succeeded.
browserIt(
  'skips a failed target',
  async () => {
    const p = await createProject(srv, 'Broken', [
      {
        name: 'Run',
        targetRoles: ['app'],
        actions: [{ name: 'Fail', type: 'script', script: 'echo "always fails on $CUTTLE_MACHINE_NAME"\nexit 3' }],
      },
    ]);
    const dep = await startDeployment(srv, p.id, staging.id, {
      deployment: { guidedFailure: true, specificMachineIds: [machineIds['app-02']] },
    });
    await open(`#/deployments/${dep.id}`);
    await page.waitForSelector(`${el('interruption')}[data-kind="guided-failure"]`, { timeout: 20_000 });
    await page.waitForSelector(`${el('cell-Run-app-02')} :text("(exit 3)")`);
    await page.fill(el('interruption-notes'), 'known bad host');
    await page.click(`${el('interruption')} button:has-text("Skip")`);
    await page.waitForSelector(el('interruption'), { state: 'detached', timeout: 15_000 });
    await page.waitForSelector(`${el('cell-Run-app-02')}[data-state="skipped"]`, { timeout: 15_000 });
    const d = await srv.waitDeployment(dep.id, 15_000);
    await page.waitForSelector(`${el('deployment-state')}[data-state="${d.state}"]`);
    expect(d.state).toBe('success');
    expect(d.steps[0].targets.map((t: any) => `${t.machineName}:${t.state}`)).toEqual(['app-02:skipped']);
    await page.waitForSelector(`${el('log')} :text("known bad host")`);
  },
  45_000,
);

// An operator adds a machine from the page: creates an environment, ticks it, names the role and creates a one-use
// token. The token is shown with the command to run on the target; running that command (as parsed from the page)
// registers the agent, which appears online in the list without a reload; the token cannot be used a second time.
browserIt(
  'creates a registration token whose command registers an agent',
  async () => {
    await open('#/machines');
    await page.fill(el('env-name'), 'Edge');
    await page.click('button:has-text("Create environment")');
    // Without an environment the API refuses, and says why next to the form.
    await page.click(el('create-token'));
    await page.waitForSelector(`${el('token-error')}:has-text("environmentIds")`);
    await page.check(el('token-env-Edge'));
    await page.fill(el('token-roles'), 'edge');
    await page.fill(el('token-max-uses'), '1');
    await page.click(el('create-token'));
    await page.waitForSelector(el('token-created'));
    const token = await page.inputValue(el('token-value'));
    expect(token).toMatch(/^cuttle1\./);
    await page.fill(el('token-machine-name'), 'edge-01');
    const command = await page.inputValue(el('token-command'));
    expect(command).toBe(
      `npm run agent -- run --server ${srv.base} --token ${token} --name edge-01 --roles edge --environments Edge --home /var/lib/cuttle-agent`,
    );
    // The form is cleared for the next token; this one is only in the box above.
    expect(await page.inputValue(el('token-roles'))).toBe('');
    await shot('registration-token');

    const args = command.split(' ').slice(4);
    const opt = (name: string) => args[args.indexOf(name) + 1];
    expect(opt('--server')).toBe(srv.base);
    let agent: TestAgent | undefined;
    try {
      // As the command says, with a test folder instead of /var/lib/cuttle-agent.
      agent = startAgent(srv, {
        name: opt('--name'),
        roles: opt('--roles').split(','),
        environments: opt('--environments').split(','),
        token: opt('--token'),
      });
      await page.waitForSelector(`${el('machine-edge-01')} :text("online")`, { timeout: 30_000 });
      const row = (await page.textContent(el('machine-edge-01')))!;
      expect(row).toContain('edge');
      expect(row).toContain('Edge');
      const again = await srv.request(
        'POST',
        '/api/agents/register',
        { token, name: 'edge-02', csr: 'not-a-csr' },
        { key: null },
      );
      expect([again.status, again.text]).toEqual([401, expect.stringContaining('used up')]);
      // Done puts the token away: it is not shown again.
      await page.click(`${el('token-created')} button:has-text("Done")`);
      await page.waitForSelector(el('token-created'), { state: 'detached' });
      expect(await page.content()).not.toContain(token);
    } finally {
      await agent?.stop();
    }
  },
  60_000,
);

// An operator takes a machine out of service: Disable marks it disabled (the API agrees) and Enable undoes it; Revoke,
// once confirmed, removes it from the list, and the server no longer knows it. The machine's labels show in its row
// as NAME=VALUE, by name, and follow a change made through the API.
browserIt(
  'disables, enables and revokes a machine',
  async () => {
    const { token } = await srv.must('POST', '/api/registration-tokens', {
      environmentIds: [staging.id],
      roles: ['spare'],
    });
    const agent = startAgent(srv, { name: 'spare-01', roles: ['spare'], environments: ['Staging'], token });
    try {
      const id = (await waitOnline(srv, ['spare-01'], 30_000)).find((m: any) => m.name === 'spare-01').id;
      await open('#/machines');
      const row = el('machine-spare-01');
      await page.waitForSelector(`${row} :text("online")`);

      await page.click(`${row} button[data-action="disable"]`);
      await page.waitForSelector(`${row} ${el('machine-disabled')}`);
      expect((await srv.must('GET', `/api/machines/${id}`)).disabled).toBe(true);
      await page.click(`${row} button[data-action="enable"]`);
      await page.waitForSelector(`${row} ${el('machine-disabled')}`, { state: 'detached' });
      expect((await srv.must('GET', `/api/machines/${id}`)).disabled).toBe(false);

      expect(await page.$$eval(`${row} ${el('machine-labels')} .tag`, (ts) => ts.length)).toBe(0);
      await srv.must('PATCH', `/api/machines/${id}`, { labels: { zone: 'a', rack: 'r1' } });
      await page.waitForSelector(`${row} ${el('machine-labels')} .tag:has-text("zone=a")`);
      expect(await page.$$eval(`${row} ${el('machine-labels')} .tag`, (ts) => ts.map((t) => t.textContent))).toEqual([
        'rack=r1',
        'zone=a',
      ]);

      page.once('dialog', (d) => void d.dismiss());
      await page.click(`${row} button[data-action="revoke"]`);
      expect((await srv.request('GET', `/api/machines/${id}`)).status).toBe(200);
      page.once('dialog', (d) => void d.accept());
      await page.click(`${row} button[data-action="revoke"]`);
      await page.waitForSelector(row, { state: 'detached' });
      expect((await srv.request('GET', `/api/machines/${id}`)).status).toBe(404);
      expect((await srv.must('GET', '/api/machines')).map((m: any) => m.name)).not.toContain('spare-01');
      // The other machines are untouched.
      for (const m of fleet.names) await page.waitForSelector(`${el(`machine-${m}`)} :text("online")`);
    } finally {
      await agent.stop();
    }
  },
  45_000,
);

// A person limits actions from the project page: one only in Staging, never in Production and only for releases of
// the "beta" channel; another disabled with a 7 s retry delay. A negative delay is refused with the API's message next
// to the form; once saved, a reload of the page shows exactly what was set, and the API returns it. Unticking a choice
// and saving removes it again.
browserIt(
  'edits and saves action environments, channels, disabled and retry delay, and says when another save came first',
  async () => {
    const p = await createProject(srv, 'Editor', [
      {
        name: 'Web',
        targetRoles: ['app'],
        actions: [
          { name: 'Roll', type: 'script', script: 'echo roll' },
          { name: 'Notify', type: 'script', script: 'echo notify' },
        ],
      },
    ]);
    const beta = await srv.must('POST', `/api/projects/${p.id}/channels`, { name: 'beta' });
    await open(`#/projects/${p.id}`);
    const roll = el('action-Web-Roll');
    const notify = el('action-Web-Notify');
    const choice = (action: string, field: string, label: string) =>
      `${action} [data-field="${field}"] label:has-text("${label}") input`;
    await page.waitForSelector(roll);

    await page.check(choice(roll, 'environments', 'Staging'));
    await page.check(choice(roll, 'excluded-environments', 'Production'));
    await page.check(choice(roll, 'channels', 'beta'));
    await page.check(`${notify} [data-field="disabled"] input`);
    await page.fill(`${notify} [data-field="retry-delay"] input`, '-1');
    expect(await page.textContent(roll)).toContain('only in Staging · not in Production · channels beta');
    await page.click(el('save-process'));
    await page.waitForSelector(`${el('process-errors')}:has-text("retryDelaySeconds must not be negative")`);
    expect(
      (await srv.must('GET', `/api/projects/${p.id}/deployment-process`)).steps[0].actions[0].environmentIds,
    ).toBeUndefined();

    await page.fill(`${notify} [data-field="retry-delay"] input`, '7');
    await page.click(el('save-process'));
    await page.waitForSelector(`${el('process-status')}:has-text("· saved")`);
    await page.waitForSelector(`${el('process-errors')}[hidden]`, { state: 'attached' });

    await page.reload();
    await page.waitForSelector(roll);
    expect(await page.isChecked(choice(roll, 'environments', 'Staging'))).toBe(true);
    expect(await page.isChecked(choice(roll, 'environments', 'Production'))).toBe(false);
    expect(await page.isChecked(choice(roll, 'excluded-environments', 'Production'))).toBe(true);
    expect(await page.isChecked(choice(roll, 'channels', 'beta'))).toBe(true);
    expect(await page.isChecked(choice(roll, 'channels', 'Default'))).toBe(false);
    expect(await page.isChecked(`${roll} [data-field="disabled"] input`)).toBe(false);
    expect(await page.isChecked(`${notify} [data-field="disabled"] input`)).toBe(true);
    expect(await page.inputValue(`${notify} [data-field="retry-delay"] input`)).toBe('7');
    await shot('process-editor-fields');
    const saved = await srv.must('GET', `/api/projects/${p.id}/deployment-process`);
    expect(saved.steps[0].actions).toEqual([
      {
        name: 'Roll',
        type: 'script',
        script: 'echo roll',
        environmentIds: [staging.id],
        excludedEnvironmentIds: [production.id],
        channelIds: [beta.id],
      },
      { name: 'Notify', type: 'script', script: 'echo notify', disabled: true, retryDelaySeconds: 7 },
    ]);

    await page.uncheck(choice(roll, 'channels', 'beta'));
    await page.uncheck(`${notify} [data-field="disabled"] input`);
    await page.click(el('save-process'));
    await waitFor(
      'the unticked choices to be saved',
      async () => {
        const a = (await srv.must('GET', `/api/projects/${p.id}/deployment-process`)).steps[0].actions;
        return !('channelIds' in a[0]) && !('disabled' in a[1]) ? a : null;
      },
      10_000,
    );

    // Someone else saves meanwhile: this page's save is refused by its code (stale_version), said as such, and the
    // other person's process is kept.
    await page.waitForSelector(`${el('process-status')}:has-text("· saved")`);
    const current = await srv.must('GET', `/api/projects/${p.id}/deployment-process`);
    await srv.must('PUT', `/api/projects/${p.id}/deployment-process`, {
      version: current.version,
      steps: [{ ...current.steps[0], name: 'Theirs' }],
    });
    await page.fill(`${notify} [data-field="retry-delay"] input`, '9');
    await page.click(el('save-process'));
    await page.waitForSelector(`${el('process-errors')}:has-text("Someone else changed the process meanwhile")`);
    expect((await srv.must('GET', `/api/projects/${p.id}/deployment-process`)).steps[0].name).toBe('Theirs');
  },
  45_000,
);
