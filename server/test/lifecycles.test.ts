/**
 * Lifecycles as a release manager meets them, with a real agent running the deployments: a release reaches
 * Production only through the phases before it (refused with 409 naming the phase, allowed once it succeeded), an
 * optional phase may be skipped, a phase may need only some of its environments, a channel's lifecycle wins over
 * its project's, the progression endpoint tells where a release may go, bad lifecycles are refused naming the
 * field, retries are not held back, and `cuttle promote` deploys only what succeeded where it comes from.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  ROOT,
  startAgent,
  startServer,
  stopAll,
  waitOnline,
  type TestServer,
} from './support/fixtures.js';

const ENVS = ['Dev', 'Staging', 'Production', 'QA1', 'QA2', 'QA3'];
/** The key fixtures.startServer gives the server (CUTTLE_ADMIN_API_KEY), for the CLI. */
const ADMIN_KEY = 'integration-admin-key-0123456789';

let srv: TestServer;
const env: Record<string, string> = {};
let cliEnv: Record<string, string>;

const STEPS = [
  {
    name: 'Web',
    targetRoles: ['web'],
    actions: [
      { name: 'Hello', type: 'script', script: 'echo "hello #{Cuttle.Environment.Name}"\n[ "#{Fail}" != yes ]' },
    ],
  },
];

beforeAll(async () => {
  srv = await startServer();
  for (const name of ENVS) env[name] = (await srv.must('POST', '/api/environments', { name })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', { environmentIds: ENVS, roles: ['web'] });
  startAgent(srv, { name: 'lc-01', roles: ['web'], environments: ENVS, token });
  await waitOnline(srv, ['lc-01'], 90_000);
  // Dev is optional: a release may go straight to Staging.
  await srv.must('POST', '/api/lifecycles', {
    name: 'Standard',
    phases: [
      { name: 'Development', environmentIds: ['Dev'], optional: true },
      { name: 'Staging', environmentIds: ['Staging'] },
      { name: 'Production', environmentIds: ['Production'] },
    ],
  });
  const dir = mkdtempSync(join(srv.dir, 'cli-'));
  writeFileSync(join(dir, 'ca.crt'), srv.ca);
  cliEnv = {
    CUTTLE_CONFIG: join(dir, 'config.json'),
    CUTTLE_CA_FILE: join(dir, 'ca.crt'),
    CUTTLE_SERVER: srv.base,
    CUTTLE_API_KEY: ADMIN_KEY,
  };
}, 150_000);

afterAll(async () => {
  await srv?.stop();
  await stopAll();
});

const msg = (r: { body: any }) =>
  Array.isArray(r.body?.message) ? r.body.message.join('; ') : String(r.body?.message);

async function project(name: string, extra: Record<string, unknown> = {}) {
  return createProject(srv, name, STEPS, extra);
}
const release = (projectId: string, version: string, channelId?: string) =>
  srv.must('POST', '/api/releases', { projectId, version, ...(channelId ? { channelId } : {}) });
const tryDeploy = (releaseId: string, envName: string) =>
  srv.request('POST', '/api/deployments', { releaseId, environmentId: env[envName] });
/** Deploys and waits; fails the test unless the deployment ends as `state`. */
async function deployed(releaseId: string, envName: string, state = 'success') {
  const r = await tryDeploy(releaseId, envName);
  if (r.status !== 201) throw new Error(`deploy to ${envName}: ${r.status} ${r.text}`);
  const d = await srv.waitDeployment(r.body.id);
  expect(d.state).toBe(state);
  return d;
}
const allowedNames = async (releaseId: string) => {
  const p = await srv.must('GET', `/api/releases/${releaseId}/progression`);
  return p.allowedEnvironmentIds.map((id: string) => ENVS.find((n) => env[n] === id)).sort();
};

/** Runs the CLI as a pipeline would. */
function cuttle(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['bin/cuttle.js', ...args], { cwd: ROOT, env: { ...process.env, ...cliEnv } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c) => (stdout += c));
    p.stderr.on('data', (c) => (stderr += c));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// A release of a project following Standard cannot go to Production before Staging: 409 lifecycle_blocked naming
// the phase Staging, and no deployment is created. The optional Development phase is skipped: Staging is allowed at
// once. Once Staging succeeded, Production is allowed and succeeds; Dev (optional, skipped) stays allowed.
it('refuses Production before Staging, allows it after, and lets the optional phase be skipped', async () => {
  const p = await project('Shop', { lifecycleId: 'Standard' });
  expect(p.lifecycleId).toBe((await srv.must('GET', '/api/lifecycles/Standard')).id);
  const r = await release(p.id, '1.4.0');
  expect(await allowedNames(r.id)).toEqual(['Dev', 'Staging']);

  const refused = await tryDeploy(r.id, 'Production');
  expect(refused.status).toBe(409);
  expect(refused.body.code).toBe('lifecycle_blocked');
  expect(msg(refused)).toBe(
    "release 1.4.0 must first succeed in phase 'Staging' (1 of 1 environments; 0 so far) before it can go to 'Production'",
  );
  expect(await srv.must('GET', `/api/deployments?projectId=${p.id}`)).toEqual([]);

  await deployed(r.id, 'Staging');
  expect(await allowedNames(r.id)).toEqual(['Dev', 'Production', 'Staging']);
  await deployed(r.id, 'Production');

  const prog = await srv.must('GET', `/api/releases/${r.id}/progression`);
  expect(prog.lifecycle.name).toBe('Standard');
  expect(prog.phases.map((x: any) => [x.name, x.optional, x.complete, x.reachable])).toEqual([
    ['Development', true, false, true],
    ['Staging', false, true, true],
    ['Production', false, true, true],
  ]);
  const prodEnv = prog.phases[2].environments[0];
  expect(prodEnv).toMatchObject({ environmentName: 'Production', allowed: true });
  expect(prodEnv.lastDeployment).toMatchObject({ status: 'success' });
  expect(prog.phases[0].environments[0].lastDeployment).toBeNull();

  // A failed deployment does not open the next phase: a new release failing in Staging stays out of Production.
  await srv.must('PUT', `/api/projects/${p.id}/variables`, { variables: [{ name: 'Fail', value: 'yes' }] });
  const r2 = await release(p.id, '1.5.0');
  await deployed(r2.id, 'Staging', 'failed');
  const blocked = await tryDeploy(r2.id, 'Production');
  expect(blocked.status).toBe(409);
  expect(msg(blocked)).toContain("phase 'Staging'");
  const prog2 = await srv.must('GET', `/api/releases/${r2.id}/progression`);
  expect(prog2.phases[1].environments[0].lastDeployment.status).toBe('failed');
  expect(prog2.phases[2].environments[0]).toMatchObject({ allowed: false });
  expect(prog2.phases[2].environments[0].reason).toContain("phase 'Staging'");
});

// minimumEnvironmentsBeforePromotion 2 of QA1..QA3: one success is not enough (the message counts), two are.
it('opens the next phase after the minimum number of environments succeeded', async () => {
  await srv.must('POST', '/api/lifecycles', {
    name: 'QA gate',
    phases: [
      { name: 'QA', environmentIds: ['QA1', 'QA2', 'QA3'], minimumEnvironmentsBeforePromotion: 2 },
      { name: 'Production', environmentIds: ['Production'] },
    ],
  });
  const p = await project('Tested', { lifecycleId: 'QA gate' });
  const r = await release(p.id, '2.0.0');
  await deployed(r.id, 'QA1');
  const refused = await tryDeploy(r.id, 'Production');
  expect(refused.status).toBe(409);
  expect(msg(refused)).toBe(
    "release 2.0.0 must first succeed in phase 'QA' (2 of 3 environments; 1 so far) before it can go to 'Production'",
  );
  // An environment in no phase of the lifecycle is refused too, naming it.
  const nowhere = await tryDeploy(r.id, 'Staging');
  expect(nowhere.status).toBe(409);
  expect(msg(nowhere)).toContain("environment 'Staging' is in no phase of lifecycle 'QA gate'");
  await deployed(r.id, 'QA3');
  expect(await allowedNames(r.id)).toEqual(['Production', 'QA1', 'QA2', 'QA3']);
  await deployed(r.id, 'Production');
});

// A channel with its own lifecycle wins over the project's: a hotfix channel going straight to Production. Set back
// to null, its releases follow the project's lifecycle again. A project without a lifecycle allows everything.
it("applies a channel's lifecycle over its project's", async () => {
  await srv.must('POST', '/api/lifecycles', {
    name: 'Hotfix',
    phases: [{ name: 'Production', environmentIds: ['Production'] }],
  });
  const p = await project('Api', { lifecycleId: 'Standard' });
  const ch = await srv.must('POST', `/api/projects/${p.id}/channels`, { name: 'Hotfix', lifecycleId: 'Hotfix' });
  expect(ch.lifecycleId).toBe((await srv.must('GET', '/api/lifecycles/Hotfix')).id);

  const hot = await release(p.id, '3.0.1', ch.id);
  expect(await allowedNames(hot.id)).toEqual(['Production']);
  expect((await srv.must('GET', `/api/releases/${hot.id}/progression`)).lifecycle.name).toBe('Hotfix');
  const normal = await release(p.id, '3.0.0');
  expect((await tryDeploy(normal.id, 'Production')).status).toBe(409);
  await deployed(hot.id, 'Production');

  const back = await srv.must('PATCH', `/api/projects/${p.id}/channels/${ch.id}`, { lifecycleId: null });
  expect(back.lifecycleId).toBeNull();
  const hot2 = await release(p.id, '3.0.2', ch.id);
  expect((await tryDeploy(hot2.id, 'Production')).status).toBe(409);

  // Without a lifecycle: one phase with every environment, all allowed.
  await srv.must('PATCH', `/api/projects/${p.id}`, { lifecycleId: null });
  const free = await srv.must('GET', `/api/releases/${normal.id}/progression`);
  expect(free.lifecycle).toBeNull();
  expect(free.phases).toHaveLength(1);
  expect(free.allowedEnvironmentIds.sort()).toEqual(Object.values(env).sort());
});

// Bad lifecycles are refused with 400 naming the field, and nothing is created; an unknown lifecycleId on a project
// is a 400 naming lifecycleId; a lifecycle in use cannot be deleted (409), an unused one can.
it('validates lifecycles and refuses deleting one in use', async () => {
  const bad = async (body: unknown, status: number, text: string) => {
    const r = await srv.request('POST', '/api/lifecycles', body);
    expect(r.status).toBe(status);
    expect(msg(r)).toContain(text);
  };
  await bad({ name: 'Bad', phases: [] }, 400, 'phases must be a non-empty list');
  await bad({ name: 'Bad' }, 400, 'phases must be a non-empty list');
  await bad({ name: 'Bad', phases: [{ environmentIds: ['Dev'] }] }, 400, 'phases[0].name');
  await bad({ name: 'Bad', phases: [{ name: 'A', environmentIds: [] }] }, 400, 'phases[0].environmentIds');
  await bad(
    { name: 'Bad', phases: [{ name: 'A', environmentIds: ['Nowhere'] }] },
    400,
    'phases[0].environmentIds names an unknown environment "Nowhere"',
  );
  await bad(
    {
      name: 'Bad',
      phases: [
        { name: 'A', environmentIds: ['Dev'] },
        { name: 'B', environmentIds: ['Staging', 'Dev'] },
      ],
    },
    400,
    'phases[1].environmentIds: environment Dev is already in phases[0]',
  );
  await bad(
    { name: 'Bad', phases: [{ name: 'A', environmentIds: ['Dev'], minimumEnvironmentsBeforePromotion: 2 }] },
    400,
    'phases[0].minimumEnvironmentsBeforePromotion',
  );
  await bad(
    {
      name: 'Bad',
      phases: [
        { name: 'A', environmentIds: ['Dev'] },
        { name: 'A', environmentIds: ['QA1'] },
      ],
    },
    400,
    'phases[1].name "A"',
  );
  await bad({ name: 'Standard', phases: [{ name: 'A', environmentIds: ['Dev'] }] }, 409, 'already exists');
  expect((await srv.must('GET', '/api/lifecycles')).map((l: any) => l.name)).not.toContain('Bad');

  const p = await project('Lonely');
  const unknown = await srv.request('PATCH', `/api/projects/${p.id}`, { lifecycleId: 'Nope' });
  expect(unknown.status).toBe(400);
  expect(msg(unknown)).toContain('lifecycleId names an unknown lifecycle "Nope"');

  const inUse = await srv.request('DELETE', '/api/lifecycles/Standard');
  expect(inUse.status).toBe(409);
  expect(inUse.body.code).toBe('lifecycle_in_use');
  const temp = await srv.must('POST', '/api/lifecycles', {
    name: 'Temp',
    phases: [{ name: 'A', environmentIds: ['Dev'] }],
  });
  const patched = await srv.must('PATCH', `/api/lifecycles/${temp.id}`, {
    phases: [{ name: 'B', environmentIds: ['QA1', 'QA2'], minimumEnvironmentsBeforePromotion: 1, optional: true }],
  });
  expect(patched.phases).toEqual([
    { name: 'B', environmentIds: [env.QA1, env.QA2], minimumEnvironmentsBeforePromotion: 1, optional: true },
  ]);
  expect((await srv.request('DELETE', `/api/lifecycles/${temp.id}`)).status).toBe(204);
  expect((await srv.request('GET', `/api/lifecycles/${temp.id}`)).status).toBe(404);
});

// Retrying a failed deployment is not held to the lifecycle: it goes where the release already went (here, before
// the project followed a lifecycle), while a new deployment there is refused.
it('does not hold retries to the lifecycle', async () => {
  const p = await project('Flaky', { lifecycleId: null });
  await srv.must('PUT', `/api/projects/${p.id}/variables`, { variables: [{ name: 'Fail', value: 'yes' }] });
  const r = await release(p.id, '1.0.0');
  const failed = await deployed(r.id, 'Production', 'failed');
  await srv.must('PATCH', `/api/projects/${p.id}`, { lifecycleId: 'Standard' });
  expect((await tryDeploy(r.id, 'Production')).status).toBe(409);
  const retry = await srv.request('POST', `/api/deployments/${failed.id}/retry-failed`);
  expect(retry.status).toBe(201);
  expect(retry.body.retryOf).toBe(failed.id);
  await srv.waitDeployment(retry.body.id);
});

// `cuttle promote` refuses (exit 2, saying why) a release that did not succeed where it comes from (never deployed
// there, or its last deployment there failed), and a plain `cuttle deploy` past the lifecycle is refused naming the
// phase; after Staging succeeded, promote --wait deploys to Production and exits 0. `cuttle progression` shows the
// phases; `cuttle lifecycles create` parses its --phase specs and `list` shows them.
it('promotes with the CLI', async () => {
  const p = await project('Cli', { lifecycleId: 'Standard' });
  await release(p.id, '5.0.0');
  const never = await cuttle([
    'promote',
    '--project',
    'Cli',
    '--release',
    '5.0.0',
    '--from',
    'Staging',
    '--to',
    'Production',
  ]);
  expect(never.code).toBe(2);
  expect(never.stderr).toContain('release 5.0.0 cannot be promoted from Staging: it was never deployed there');
  // Shop 1.5.0 failed in Staging (the first test): its last deployment there is not a success.
  const failed = await cuttle([
    'promote',
    '--project',
    'Shop',
    '--release',
    '1.5.0',
    '--from',
    'Staging',
    '--to',
    'Production',
  ]);
  expect(failed.code).toBe(2);
  expect(failed.stderr).toMatch(
    /release 1\.5\.0 cannot be promoted from Staging: its last deployment there \(.+\) is failed, not success/,
  );
  const direct = await cuttle(['deploy', '--project', 'Cli', '--release', '5.0.0', '--environment', 'Production']);
  expect(direct.code).toBe(2);
  expect(direct.stderr).toContain("must first succeed in phase 'Staging'");

  const staging = await cuttle([
    'deploy',
    '--project',
    'Cli',
    '--release',
    '5.0.0',
    '--environment',
    'Staging',
    '--wait',
  ]);
  expect(staging.code).toBe(0);
  const shown = await cuttle(['progression', '--project', 'Cli', '--release', '5.0.0']);
  expect(shown.code).toBe(0);
  expect(shown.stdout).toContain('lifecycle Standard');
  expect(shown.stdout).toMatch(/Staging ✓\s+Staging\s+success\s+yes/);
  const promoted = await cuttle([
    'promote',
    '--project',
    'Cli',
    '--release',
    '5.0.0',
    '--from',
    'Staging',
    '--to',
    'Production',
    '--wait',
    '--json',
  ]);
  expect(promoted.code).toBe(0);
  expect(JSON.parse(promoted.stdout)).toMatchObject({ state: 'success', environmentId: env.Production });

  const listed = await cuttle([
    'lifecycles',
    'create',
    '--name',
    'Cli flow',
    '--phase',
    'QA:QA1,QA2:1:optional',
    '--phase',
    'Prod:Production',
    '--json',
  ]);
  expect(listed.code).toBe(0);
  expect(JSON.parse(listed.stdout).phases).toEqual([
    { name: 'QA', environmentIds: [env.QA1, env.QA2], minimumEnvironmentsBeforePromotion: 1, optional: true },
    { name: 'Prod', environmentIds: [env.Production], minimumEnvironmentsBeforePromotion: 0, optional: false },
  ]);
  expect((await cuttle(['lifecycles', 'list'])).stdout).toContain('QA(QA1,QA2 min 1 optional) → Prod(Production)');
});
