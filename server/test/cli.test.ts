/**
 * The `cuttle` CLI as a CI pipeline uses it: a real process against a real server and agents; output parsed from
 * --json; exit codes 0 success, 1 failed, 2 bad usage or refused, 3 cancelled.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  ROOT,
  sleep,
  startFleet,
  startServer,
  stopAll,
  waitFor,
  waitOnline,
  type TestFleet,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
let fleet: TestFleet;
let env: Record<string, string>;

beforeAll(async () => {
  srv = await startServer();
  await srv.must('POST', '/api/environments', { name: 'Staging' });
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: ['Staging'],
    roles: ['web'],
    maxUses: 2,
  });
  fleet = startFleet(srv, { prefix: 'cli', count: 2, roles: ['web'], environments: ['Staging'], token });
  await waitOnline(srv, fleet.names);
  const dir = mkdtempSync(join(srv.dir, 'cli-'));
  writeFileSync(join(dir, 'ca.crt'), srv.ca);
  env = { CUTTLE_CONFIG: join(dir, 'config.json'), CUTTLE_CA_FILE: join(dir, 'ca.crt') };
  await createProject(srv, 'Shop', [
    {
      name: 'Web',
      targetRoles: ['web'],
      windowSize: 1,
      actions: [
        {
          name: 'Hello',
          type: 'script',
          script: 'echo "hello from #{Cuttle.Machine.Name}"\nsleep 0.3\n[ "#{Fail}" = yes ] && exit 5 || true',
        },
      ],
    },
  ]);
  await createProject(srv, 'Gated', [
    { name: 'Approve', actions: [{ name: 'Go', type: 'manual-intervention', instructions: 'say go' }] },
    { name: 'Web', targetRoles: ['web'], actions: [{ name: 'Long', type: 'script', script: 'sleep 20' }] },
  ]);
}, 120_000);

afterAll(async () => {
  await fleet?.stop();
  await srv?.stop();
  await stopAll();
});

/** Runs the CLI; `live.stderr` grows while it runs (for commands that wait). */
function cuttle(
  args: string[],
  extraEnv: Record<string, string> = {},
  live: { stderr: string } = { stderr: '' },
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['bin/cuttle.js', ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env, ...extraEnv },
    });
    let stdout = '';
    p.stdout.on('data', (c) => (stdout += c));
    p.stderr.on('data', (c) => (live.stderr += c));
    p.on('close', (code) => resolve({ code, stdout, stderr: live.stderr }));
  });
}
const jsonOf = (r: { stdout: string }) => JSON.parse(r.stdout);

/**
 * Runs the CLI on a terminal: util-linux's `script` gives it a pseudo-terminal 200 columns wide, so that it draws its
 * progress bars; what the terminal showed comes back without its escape sequences.
 */
const SCRIPT = '/usr/bin/script';
function cuttleOnTerminal(args: string[]): Promise<{ code: number | null; screen: string }> {
  const quote = (w: string) => `'${w.replace(/'/g, `'\\''`)}'`;
  const command = `stty cols 200; ${[process.execPath, 'bin/cuttle.js', ...args].map(quote).join(' ')}`;
  return new Promise((resolve) => {
    const p = spawn(SCRIPT, ['-qefc', command, '/dev/null'], { cwd: ROOT, env: { ...process.env, ...env } });
    let screen = '';
    p.stdout.on('data', (c) => (screen += c));
    p.stderr.on('data', (c) => (screen += c));
    // eslint-disable-next-line no-control-regex
    p.on('close', (code) => resolve({ code, screen: screen.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '') }));
  });
}
const terminalIt = existsSync(SCRIPT) ? it : it.skip;
if (!existsSync(SCRIPT)) process.stderr.write(`\nskipping the terminal test: no ${SCRIPT} (util-linux)\n`);

// login checks the server and stores URL, key and CA (0600); later commands need no flags.
it('logs in and lists environments and machines', async () => {
  const login = await cuttle([
    'login',
    '--server',
    srv.base,
    '--api-key',
    'integration-admin-key-0123456789',
    '--ca',
    env.CUTTLE_CA_FILE,
  ]);
  expect(login.code).toBe(0);
  expect(statSync(env.CUTTLE_CONFIG).mode & 0o777).toBe(0o600);
  const envs = await cuttle(['environments', '--json']);
  expect(envs.code).toBe(0);
  expect(jsonOf(envs).map((e: any) => e.name)).toEqual(['Staging']);
  const ms = await cuttle(['machines', '--json']);
  expect(jsonOf(ms).map((m: any) => `${m.name}:${m.status}`)).toEqual(['cli-01:online', 'cli-02:online']);
  const text = await cuttle(['machines']);
  expect(text.stdout).toMatch(/^NAME\s+STATUS/);
  const wrong = await cuttle(['environments'], { CUTTLE_API_KEY: 'ck_wrong' });
  expect(wrong.code).toBe(2);
  expect(wrong.stderr).toMatch(/401/);
});

// `cuttle machines` shows each machine's labels as NAME=VALUE, by name; `--label` keeps the machines with that label
// value, and a malformed one is bad usage (exit 2) naming --label. `cuttle environments` shows the rollback default.
it('shows labels and filters machines by one', async () => {
  const m1 = (await srv.must('GET', '/api/machines')).find((m: any) => m.name === 'cli-01');
  await srv.must('PATCH', `/api/machines/${m1.id}`, { labels: { zone: 'a', rack: 'r1' } });
  try {
    const text = await cuttle(['machines']);
    expect(text.stdout).toMatch(/^NAME\s+STATUS\s+HEALTH\s+ROLES\s+LABELS\s/);
    expect(text.stdout).toMatch(/^cli-01\s.*\srack=r1,zone=a\s/m);
    const only = await cuttle(['machines', '--label', 'zone=a', '--json']);
    expect(jsonOf(only).map((m: any) => [m.name, m.labels])).toEqual([['cli-01', { zone: 'a', rack: 'r1' }]]);
    expect(jsonOf(await cuttle(['machines', '--label', 'zone=b', '--json']))).toEqual([]);
    const bad = await cuttle(['machines', '--label', 'zone']);
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringMatching(/--label must be NAME=VALUE/)]);
    expect((await cuttle(['environments'])).stdout).toMatch(/^NAME\s+ID\s+GUIDEDFAILURE\s+ROLLBACKONFAILURE$/m);
  } finally {
    await srv.must('PATCH', `/api/machines/${m1.id}`, { labels: {} });
  }
});

// create-release then deploy --wait: exit 0 on success with progress on stderr; exit 1 when the deployment fails.
it('creates a release and deploys it, exiting by the outcome', async () => {
  const rel = await cuttle(['create-release', '--project', 'Shop', '--version', '1.0.0', '--json']);
  expect(rel.code).toBe(0);
  expect(jsonOf(rel).version).toBe('1.0.0');
  const ok = await cuttle(['deploy', '--project', 'Shop', '--release', '1.0.0', '--environment', 'Staging', '--wait']);
  expect(ok.code).toBe(0);
  expect(ok.stderr).toMatch(/Web: 2\/2 targets, success/);
  expect(ok.stdout).toMatch(/deployment \S+ success/);
  const id = ok.stdout.match(/deployment (\S+) success/)![1];
  const logs = await cuttle(['logs', id]);
  expect(logs.stdout).toMatch(/hello from cli-01/);
  expect(logs.stdout).toMatch(/hello from cli-02/);

  await srv.must('PUT', `/api/projects/Shop/variables`, { variables: [{ name: 'Fail', value: 'yes' }] });
  await cuttle(['create-release', '--project', 'Shop', '--version', '1.0.1']);
  const bad = await cuttle([
    'deploy',
    '--project',
    'Shop',
    '--release',
    '1.0.1',
    '--environment',
    'Staging',
    '--wait',
    '--json',
  ]);
  expect(bad.code).toBe(1);
  expect(jsonOf(bad).state).toBe('failed');
});

// retry-failed and rollback print the new deployment's id, or with --wait follow it and exit by its outcome; a
// refused request (retrying a deployment that did not fail) exits 2.
it('retries the failed and rolls back', async () => {
  const [failed] = await srv.must('GET', '/api/deployments?projectId=Shop&state=failed');
  const [ok] = await srv.must('GET', '/api/deployments?projectId=Shop&state=success');
  // The release froze Fail=yes: the retry fails again, and says so by its exit code.
  const retry = await cuttle(['retry-failed', failed.id, '--wait', '--json']);
  expect(retry.code).toBe(1);
  expect(jsonOf(retry)).toMatchObject({ retryOf: failed.id, state: 'failed' });
  const refused = await cuttle(['retry-failed', ok.id]);
  expect(refused.code).toBe(2);
  expect(refused.stderr).toMatch(/409/);

  const back = await cuttle(['rollback', failed.id, '--wait']);
  expect(back.code).toBe(0);
  expect(back.stderr).toMatch(new RegExp(`rolling back deployment ${failed.id} to release 1\\.0\\.0: deployment \\S+`));
  const rbId = back.stdout.match(/deployment (\S+) success/)![1];
  expect((await srv.must('GET', `/api/deployments/${rbId}`)).rollbackOf).toBe(failed.id);
  // Without --wait: the id alone (a deployment is rolled back once: the same one).
  const again = await cuttle(['rollback', failed.id]);
  expect(again.code).toBe(0);
  expect(again.stdout.trim()).toBe(rbId);
});

// A manual intervention is listed and answered from the CLI; cancel makes a waiting deploy exit 3.
it('answers interruptions and cancels', async () => {
  await cuttle(['create-release', '--project', 'Gated', '--version', '1']);
  const live = { stderr: '' };
  const deploying = cuttle(
    ['deploy', '--project', 'Gated', '--release', '1', '--environment', 'Staging', '--wait'],
    {},
    live,
  );
  // The waiting deploy tells the operator how to answer.
  await waitFor('deploy --wait to show the interruption', async () =>
    /cuttle submit \S+ --result proceed\|abort/.test(live.stderr),
  );
  const pending = await waitFor('an interruption', async () => {
    const r = jsonOf(await cuttle(['interruptions', '--json']));
    return r.length ? r : null;
  });
  expect(pending[0]).toMatchObject({ kind: 'manual-intervention', instructions: 'say go' });
  const sub = await cuttle(['submit', pending[0].id, '--result', 'proceed', '--notes', 'from the pipeline']);
  expect(sub.code).toBe(0);
  const again = await cuttle(['submit', pending[0].id, '--result', 'proceed']);
  expect(again.code).toBe(2);
  await waitFor('the long script to run', async () =>
    (await srv.readLog(pending[0].deploymentId)).some((e: any) => e.text.startsWith('Running script action Long')),
  );
  const cancel = await cuttle(['cancel', pending[0].deploymentId, '--wait']);
  expect(cancel.code).toBe(0);
  const d = await deploying;
  expect(d.code).toBe(3);
  expect(d.stderr).toMatch(/cuttle submit/);
});

// Bad usage and unknown names are refused with exit code 2 and a message.
it('exits 2 on bad usage', async () => {
  const missing = await cuttle(['deploy', '--project', 'Shop']);
  expect(missing.code).toBe(2);
  expect(missing.stderr).toMatch(/required option/);
  const unknown = await cuttle(['create-release', '--project', 'Nope', '--version', '1']);
  expect(unknown.code).toBe(2);
  expect(unknown.stderr).toMatch(/404 project Nope not found/);
});

// A deployment queued behind another (one at a time per project and environment): deploy --wait says behind which,
// then follows it to its end once the first is done.
it('shows that a deployment is queued, and behind which', async () => {
  await createProject(srv, 'Queue', [
    { name: 'Web', targetRoles: ['web'], actions: [{ name: 'Slow', type: 'script', script: 'sleep 1.5' }] },
  ]);
  for (const v of ['1', '2'])
    expect((await cuttle(['create-release', '--project', 'Queue', '--version', v])).code).toBe(0);
  const first = jsonOf(
    await cuttle(['deploy', '--project', 'Queue', '--release', '1', '--environment', 'Staging', '--json']),
  );
  const second = await cuttle(['deploy', '--project', 'Queue', '--release', '2', '--environment', 'Staging', '--wait']);
  expect(second.code).toBe(0);
  expect(second.stderr).toContain(`queued behind deployment ${first.id}`);
  expect(second.stderr).toMatch(/Web: 2\/2 targets, success/);
});

// pause and resume print the state the server answered (as text, or --json); while paused no target starts (the
// second of two, window 1, stays unstarted), and a deploy --wait following it says so and ends 0 once resumed. Pausing
// an ended deployment is refused: exit 2 with the API's message.
it('pauses and resumes a deployment', async () => {
  await createProject(srv, 'Steered', [
    {
      name: 'Web',
      targetRoles: ['web'],
      windowSize: 1,
      actions: [{ name: 'Slow', type: 'script', script: 'sleep 1.5' }],
    },
  ]);
  expect((await cuttle(['create-release', '--project', 'Steered', '--version', '1'])).code).toBe(0);
  const live = { stderr: '' };
  const deploying = cuttle(
    ['deploy', '--project', 'Steered', '--release', '1', '--environment', 'Staging', '--wait'],
    {},
    live,
  );
  const id = await waitFor('the deployment id', async () => /: deployment (\S+)\n/.exec(live.stderr)?.[1] ?? null);
  await waitFor(
    'the first target to run',
    async () =>
      (await srv.must('GET', `/api/deployments/${id}`)).steps[0].targets.some((t: any) => t.state === 'running') ||
      null,
  );
  const paused = await cuttle(['pause', id]);
  expect(paused.code).toBe(0);
  expect(paused.stdout.trim()).toBe(`deployment ${id} paused`);
  await waitFor('deploy --wait to say it is paused', async () =>
    live.stderr.includes(`paused: no new target starts (resume with: cuttle resume ${id})`),
  );
  await sleep(2500); // the running target (1.5 s) has ended meanwhile; the next one must not start
  const d = await srv.must('GET', `/api/deployments/${id}`);
  expect(d.state).toBe('paused');
  expect(d.steps[0].targets.filter((t: any) => t.startedAt).length).toBe(1);
  expect(live.stderr).toMatch(/Web: 1\/2 targets, paused/);

  const resumed = await cuttle(['resume', id, '--json']);
  expect(resumed.code).toBe(0);
  expect(jsonOf(resumed)).toEqual({ id, state: 'executing' });
  const done = await deploying;
  expect(done.code).toBe(0);
  expect(done.stderr).toContain('\nresumed\n');
  expect(done.stderr).toMatch(/Web: 2\/2 targets, success/);

  const refused = await cuttle(['pause', id]);
  expect(refused.code).toBe(2);
  expect(refused.stderr).toMatch(/409 deployment \S+ cannot be paused: it is success/);
  expect((await cuttle(['resume', id])).code).toBe(2);
});

// A step in two batches with a bake and an approval: deploy --wait's line per change names the batch in progress, the
// bake with its seconds and the approval (with the command that answers it); answered from the CLI, the second batch
// runs and the deployment ends 0.
it('shows the batch in progress, the bake and the approval while following a deployment', async () => {
  await createProject(srv, 'Batched', [
    {
      name: 'Web',
      targetRoles: ['web'],
      batches: [1, 1],
      bakeSeconds: 2,
      approveEachBatch: true,
      actions: [{ name: 'Roll', type: 'script', script: 'sleep 1' }],
    },
  ]);
  expect((await cuttle(['create-release', '--project', 'Batched', '--version', '1'])).code).toBe(0);
  const live = { stderr: '' };
  const deploying = cuttle(
    ['deploy', '--project', 'Batched', '--release', '1', '--environment', 'Staging', '--wait'],
    {},
    live,
  );
  const approval = await waitFor(
    'the approval',
    async () => /cuttle submit (\S+) --result proceed\|abort/.exec(live.stderr)?.[1] ?? null,
  );
  expect(live.stderr).toMatch(/Web: batch 1\/2, 0\/2 targets done, running, 1\/2 in flight/);
  expect(live.stderr).toMatch(/Web: batch 1\/2, 1\/2 targets done, running, baking [12] s\n/);
  expect(live.stderr).toMatch(/Web: batch 1\/2, 1\/2 targets done, running, waiting for approval\n/);
  expect(live.stderr).toMatch(/waiting on batch-approval Web: Let batch 2 of 2 of Web go \(cli-02\)\?/);
  // One line for the bake, not one per second of it.
  expect(live.stderr.match(/baking/g)).toHaveLength(1);
  const sub = await cuttle(['submit', approval, '--result', 'proceed']);
  expect(sub.code).toBe(0);
  expect(sub.stdout.trim()).toBe('batch-approval Web: proceed');
  const done = await deploying;
  expect(done.code).toBe(0);
  expect(done.stderr).toMatch(/Web: batch 2\/2, 1\/2 targets done, running, 1\/2 in flight/);
  expect(done.stderr).toMatch(/Web: 2\/2 targets, success/);
});

// The same on a terminal: the step's progress bar says which batch is in progress and counts the bake down.
terminalIt('shows the batch and the bake in its progress bar on a terminal', async () => {
  await createProject(srv, 'Batched bars', [
    {
      name: 'Web',
      targetRoles: ['web'],
      batches: [1, 1],
      bakeSeconds: 3,
      actions: [{ name: 'Roll', type: 'script', script: 'sleep 0.5' }],
    },
  ]);
  expect((await cuttle(['create-release', '--project', 'Batched bars', '--version', '1'])).code).toBe(0);
  const r = await cuttleOnTerminal([
    'deploy',
    '--project',
    'Batched bars',
    '--release',
    '1',
    '--environment',
    'Staging',
    '--wait',
  ]);
  expect(r.code).toBe(0);
  const bar = (text: string) => new RegExp(`Web +\\|[\u2588\u2591]+\\| ${text}`);
  // The bar's seconds go down as the bake runs (the screen holds each redraw in turn).
  const left = [...r.screen.matchAll(new RegExp(bar('1/2 targets running, batch 1/2, baking (\\d) s'), 'g'))].map((m) =>
    Number(m[1]),
  );
  expect(new Set(left).size).toBeGreaterThanOrEqual(2);
  expect(left[0]).toBeLessThanOrEqual(3);
  expect(left.every((n, i) => i === 0 || n <= left[i - 1])).toBe(true);
  expect(r.screen).toMatch(bar('2/2 targets success'));
  expect(r.screen).toMatch(/deployment \S+ success/);
});

// An admin makes a CI key limited to one environment with `cuttle api-keys create`, lists it with its role and
// scope by name, the CI key sees itself with `cuttle whoami` and is refused (exit 2, 403 naming the permission) what
// its role does not allow; once revoked it stops working.
it('creates, lists and revokes API keys with roles; whoami shows the key in use', async () => {
  const made = await cuttle([
    'api-keys',
    'create',
    '--name',
    'cli-ci',
    '--role',
    'deployer',
    '--environments',
    'Staging',
    '--json',
  ]);
  expect(made.code).toBe(0);
  const key = jsonOf(made);
  expect(key).toMatchObject({ name: 'cli-ci', role: 'deployer', projectIds: null, key: expect.stringMatching(/^ck_/) });
  const list = await cuttle(['api-keys', 'list']);
  expect(list.stdout).toMatch(/^cli-ci\s+\S+\s+deployer\s+Staging\s+all\s*$/m);
  const me = await cuttle(['whoami'], { CUTTLE_API_KEY: key.key });
  expect(me.code).toBe(0);
  expect(me.stdout).toMatch(
    /^cli-ci \(deployer\)\nenvironments: Staging\nprojects: all\nmay: read, create-release, deploy/,
  );
  const refused = await cuttle(['api-keys', 'list'], { CUTTLE_API_KEY: key.key });
  expect(refused.code).toBe(2);
  expect(refused.stderr).toMatch(/403.*key 'cli-ci' \(deployer\) may not manage API keys/);
  const bad = await cuttle(['api-keys', 'create', '--name', 'x', '--role', 'owner']);
  expect([bad.code, bad.stderr]).toEqual([2, expect.stringMatching(/role must be one of/)]);
  expect((await cuttle(['api-keys', 'revoke', 'cli-ci'])).code).toBe(0);
  const after = await cuttle(['whoami'], { CUTTLE_API_KEY: key.key });
  expect([after.code, after.stderr]).toEqual([2, expect.stringMatching(/401/)]);
});
