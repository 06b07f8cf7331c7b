/**
 * Roles on API keys, through the whole server with real keys: what each role may do on every kind of route, inside
 * and outside the environments and projects a key is limited to; lists showing only what a limited key may see;
 * GET /api/me; and preventSelfApproval, which refuses the answer of the key that created the deployment. Most
 * deployments here run only manual interventions (steps on the server); two agents roll the batch approval's step.
 */
import { io } from 'socket.io-client';
import {
  createProject,
  startFleet,
  startServer,
  stopAll,
  waitFor,
  waitOnline,
  type TestFleet,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
const env: Record<string, string> = {};
const project: Record<string, string> = {};
const release: Record<string, string> = {};
/** Finished (cancelled) deployments: steering them is refused by state (409) once the key may steer at all. */
const dep: Record<string, string> = {};
/** Their interruptions, closed by the cancel: answering is 409 once the key may answer at all. */
const intr: Record<string, string> = {};
const keys: Record<string, { id: string; key: string }> = {};

const UNKNOWN = '00000000-0000-4000-8000-000000000000';
/** Two manual interventions on the server: the first may not be answered by the deployment's creator. */
const STEPS = [
  {
    name: 'Gate',
    actions: [{ name: 'Four eyes', type: 'manual-intervention', instructions: 'Check', preventSelfApproval: true }],
  },
  { name: 'Sign-off', actions: [{ name: 'Anyone', type: 'manual-intervention', instructions: 'Sign' }] },
];

async function createKey(name: string, body: Record<string, unknown>) {
  const k = await srv.must('POST', '/api/api-keys', { name, ...body }, [201]);
  keys[name] = { id: k.id, key: k.key };
  return k;
}

/** The first pending interruption of a deployment, once it is open. */
function pendingOf(deploymentId: string) {
  return waitFor(`an interruption of ${deploymentId}`, async () => {
    const list = await srv.must('GET', `/api/interruptions?deploymentId=${deploymentId}&state=pending`);
    return list[0];
  });
}

beforeAll(async () => {
  srv = await startServer();
  for (const name of ['Test', 'Production']) env[name] = (await srv.must('POST', '/api/environments', { name })).id;
  for (const name of ['Shop', 'Blog']) {
    project[name] = (await createProject(srv, name, STEPS)).id;
    release[name] = (await srv.must('POST', '/api/releases', { projectId: project[name], version: '1.0.0' })).id;
  }
  for (const [name, projectName, envName] of [
    ['ProdShop', 'Shop', 'Production'],
    ['TestShop', 'Shop', 'Test'],
    ['TestBlog', 'Blog', 'Test'],
  ]) {
    const d = await srv.must('POST', '/api/deployments', {
      releaseId: release[projectName],
      environmentId: env[envName],
    });
    dep[name] = d.id;
    intr[name] = (await pendingOf(d.id)).id;
    await srv.must('POST', `/api/deployments/${d.id}/cancel`, undefined, [202]);
    await srv.waitDeployment(d.id);
  }
  await createKey('viewer', { role: 'viewer' });
  await createKey('deployer', { role: 'deployer' });
  await createKey('approver', { role: 'approver' });
  await createKey('admin2', { role: 'admin' });
  // A CI pipeline that deploys to Test only, and an approver for the Shop project only (names are accepted too).
  await createKey('ci', { role: 'deployer', environmentIds: ['Test'] });
  await createKey('shop', { role: 'approver', projectIds: [project.Shop] });
}, 120_000);

let fleet: TestFleet | undefined;

afterAll(async () => {
  await fleet?.stop();
  await srv?.stop();
  await stopAll();
});

const KEYS = ['viewer', 'deployer', 'approver', 'admin2', 'ci', 'shop'] as const;
type Row = [label: string, method: string, path: () => string, body: unknown, expected: number[]];

/**
 * Route × key → status. Bodies are chosen so that a key allowed through gets a fixed answer from the handler (400 for
 * an invalid body, 404 for an unknown id, 409 for a finished deployment or a closed interruption): the 403s are the
 * permission table's, every other status shows the key got past it. Columns: viewer, deployer, approver, admin,
 * ci (deployer in Test), shop (approver of Shop).
 */
const TABLE: Row[] = [
  // Reads: every role; a limited key only inside its scope.
  ['list environments', 'GET', () => '/api/environments', undefined, [200, 200, 200, 200, 200, 200]],
  [
    'an environment out of ci',
    'GET',
    () => `/api/environments/${env.Production}`,
    undefined,
    [200, 200, 200, 200, 403, 200],
  ],
  ['a project out of shop', 'GET', () => `/api/projects/${project.Blog}`, undefined, [200, 200, 200, 200, 200, 403]],
  ['a project by name', 'GET', () => '/api/projects/Blog', undefined, [200, 200, 200, 200, 200, 403]],
  [
    'a process',
    'GET',
    () => `/api/projects/${project.Shop}/deployment-process`,
    undefined,
    [200, 200, 200, 200, 200, 200],
  ],
  [
    'variables out of shop',
    'GET',
    () => `/api/projects/${project.Blog}/variables`,
    undefined,
    [200, 200, 200, 200, 200, 403],
  ],
  ['a release out of shop', 'GET', () => `/api/releases/${release.Blog}`, undefined, [200, 200, 200, 200, 200, 403]],
  [
    'releases of a project out of shop',
    'GET',
    () => `/api/releases?projectId=${project.Blog}`,
    undefined,
    [200, 200, 200, 200, 200, 403],
  ],
  [
    'a deployment in Production',
    'GET',
    () => `/api/deployments/${dep.ProdShop}`,
    undefined,
    [200, 200, 200, 200, 403, 200],
  ],
  ['a Blog deployment', 'GET', () => `/api/deployments/${dep.TestBlog}`, undefined, [200, 200, 200, 200, 200, 403]],
  [
    'a log in Production',
    'GET',
    () => `/api/deployments/${dep.ProdShop}/log`,
    undefined,
    [200, 200, 200, 200, 403, 200],
  ],
  [
    'deployments in Production',
    'GET',
    () => '/api/deployments?environmentId=Production',
    undefined,
    [200, 200, 200, 200, 403, 200],
  ],
  [
    'a preview in Production',
    'GET',
    () => `/api/deployments/preview?releaseId=${release.Shop}&environmentId=${env.Production}`,
    undefined,
    [200, 200, 200, 200, 403, 200],
  ],
  [
    'an interruption in Production',
    'GET',
    () => `/api/interruptions/${intr.ProdShop}`,
    undefined,
    [200, 200, 200, 200, 403, 200],
  ],
  ['machines', 'GET', () => '/api/machines', undefined, [200, 200, 200, 200, 200, 200]],
  ['packages', 'GET', () => '/api/packages', undefined, [200, 200, 200, 200, 200, 200]],
  ['me', 'GET', () => '/api/me', undefined, [200, 200, 200, 200, 200, 200]],

  // Releases and deployments: deployer and up, in scope.
  [
    'create a Shop release',
    'POST',
    () => '/api/releases',
    () => ({ projectId: project.Shop, version: '!' }),
    [403, 400, 400, 400, 400, 400],
  ],
  [
    'create a Blog release',
    'POST',
    () => '/api/releases',
    () => ({ projectId: project.Blog, version: '!' }),
    [403, 400, 400, 400, 400, 403],
  ],
  [
    'deploy Shop to Production',
    'POST',
    () => '/api/deployments',
    () => ({ releaseId: release.Shop, environmentId: env.Production, guidedFailure: 'x' }),
    [403, 400, 400, 400, 403, 400],
  ],
  [
    'deploy Blog to Test (by name)',
    'POST',
    () => '/api/deployments',
    () => ({ releaseId: release.Blog, environmentId: 'Test', guidedFailure: 'x' }),
    [403, 400, 400, 400, 400, 403],
  ],
  ['upload a package', 'POST', () => '/api/packages/web/1.0.0', undefined, [403, 415, 415, 415, 415, 415]],

  // Steering a deployment: deployer and up, in the deployment's environment and project.
  [
    'pause in Production',
    'POST',
    () => `/api/deployments/${dep.ProdShop}/pause`,
    undefined,
    [403, 409, 409, 409, 403, 409],
  ],
  [
    'resume in Test',
    'POST',
    () => `/api/deployments/${dep.TestShop}/resume`,
    undefined,
    [403, 409, 409, 409, 409, 409],
  ],
  [
    'cancel a Blog deployment',
    'POST',
    () => `/api/deployments/${dep.TestBlog}/cancel`,
    undefined,
    [403, 409, 409, 409, 409, 403],
  ],
  [
    'retry in Production',
    'POST',
    () => `/api/deployments/${dep.ProdShop}/retry-failed`,
    undefined,
    [403, 409, 409, 409, 403, 409],
  ],
  [
    'roll back a Blog deployment',
    'POST',
    () => `/api/deployments/${dep.TestBlog}/rollback`,
    undefined,
    [403, 409, 409, 409, 409, 403],
  ],

  // Answering interruptions: approver and up, in scope.
  [
    'answer in Production',
    'POST',
    () => `/api/interruptions/${intr.ProdShop}/submit`,
    { result: 'proceed' },
    [403, 403, 409, 409, 403, 409],
  ],
  [
    'answer for Blog',
    'POST',
    () => `/api/interruptions/${intr.TestBlog}/submit`,
    { result: 'proceed' },
    [403, 403, 409, 409, 403, 403],
  ],

  // Administration: admin only.
  ['create an environment', 'POST', () => '/api/environments', {}, [403, 403, 403, 400, 403, 403]],
  [
    'change an environment',
    'PATCH',
    () => `/api/environments/${env.Test}`,
    { bogus: 1 },
    [403, 403, 403, 400, 403, 403],
  ],
  ['create a registration token', 'POST', () => '/api/registration-tokens', {}, [403, 403, 403, 400, 403, 403]],
  ['change a machine', 'PATCH', () => `/api/machines/${UNKNOWN}`, {}, [403, 403, 403, 404, 403, 403]],
  ['revoke a machine', 'DELETE', () => `/api/machines/${UNKNOWN}`, undefined, [403, 403, 403, 404, 403, 403]],
  ['check a machine', 'POST', () => `/api/machines/${UNKNOWN}/health-check`, undefined, [403, 403, 403, 404, 403, 403]],
  ['create a project', 'POST', () => '/api/projects', {}, [403, 403, 403, 400, 403, 403]],
  ['change a project', 'PATCH', () => `/api/projects/${project.Shop}`, { bogus: 1 }, [403, 403, 403, 400, 403, 403]],
  [
    'edit a process',
    'PUT',
    () => `/api/projects/${project.Shop}/deployment-process`,
    {},
    [403, 403, 403, 400, 403, 403],
  ],
  ['edit variables', 'PUT', () => `/api/projects/${project.Shop}/variables`, {}, [403, 403, 403, 400, 403, 403]],
  ['create a channel', 'POST', () => `/api/projects/${project.Shop}/channels`, {}, [403, 403, 403, 400, 403, 403]],
  ['create a key', 'POST', () => '/api/api-keys', {}, [403, 403, 403, 400, 403, 403]],
  ['list keys', 'GET', () => '/api/api-keys', undefined, [403, 403, 403, 200, 403, 403]],
  ['revoke a key', 'DELETE', () => `/api/api-keys/${UNKNOWN}`, undefined, [403, 403, 403, 404, 403, 403]],
];

describe('a key of each role against the routes', () => {
  // Invariant: each key gets exactly the status of its column: 403 where its role or scope does not allow the route,
  // the handler's own answer where it does.
  it.each(TABLE)('%s', async (_label, method, path, body, expected) => {
    const got: number[] = [];
    for (const name of KEYS) {
      const b = typeof body === 'function' ? (body as () => unknown)() : body;
      const r = await srv.request(method, path(), b, { key: keys[name].key });
      if (r.status === 403)
        expect(r.body).toMatchObject({ code: 'forbidden', message: expect.stringContaining(`key '${name}'`) });
      got.push(r.status);
    }
    expect(Object.fromEntries(KEYS.map((k, i) => [k, got[i]]))).toEqual(
      Object.fromEntries(KEYS.map((k, i) => [k, expected[i]])),
    );
  });

  // Invariant: a refusal names the key, its role, what it may not do and, for scope, where.
  it('names the missing permission and the scope in the refusal', async () => {
    const scoped = await srv.request(
      'POST',
      `/api/interruptions/${intr.TestBlog}/submit`,
      { result: 'proceed' },
      { key: keys.shop.key },
    );
    expect(scoped.body.message).toBe("key 'shop' (approver) may not approve in project 'Blog'");
    const outside = await srv.request(
      'POST',
      '/api/deployments',
      { releaseId: release.Shop, environmentId: env.Production },
      { key: keys.ci.key },
    );
    expect([outside.status, outside.body.message]).toEqual([
      403,
      "key 'ci' (deployer) may not deploy in environment 'Production'",
    ]);
    const role = await srv.request(
      'POST',
      `/api/interruptions/${intr.TestShop}/submit`,
      { result: 'proceed' },
      { key: keys.ci.key },
    );
    expect([role.status, role.body.code]).toEqual([403, 'forbidden']);
    expect(role.body.message).toMatch(/^key 'ci' \(deployer\) may not approve: that needs the approve permission/);
  });

  // Invariant: lists show a limited key only what lies in its scope.
  it("filters lists to the key's environments and projects", async () => {
    const as = (k: string, path: string) => srv.must('GET', path, undefined, [200], { key: keys[k].key });
    expect((await as('ci', '/api/environments')).map((e: any) => e.name)).toEqual(['Test']);
    expect((await as('shop', '/api/projects')).map((p: any) => p.name)).toEqual(['Shop']);
    expect(new Set((await as('ci', '/api/deployments')).map((d: any) => d.environmentId))).toEqual(new Set([env.Test]));
    expect(new Set((await as('shop', '/api/deployments')).map((d: any) => d.projectId))).toEqual(
      new Set([project.Shop]),
    );
    expect((await as('admin2', '/api/deployments')).length).toBeGreaterThanOrEqual(3);
    expect(new Set((await as('shop', '/api/releases')).map((r: any) => r.projectId))).toEqual(new Set([project.Shop]));
    const ciIntr = await as('ci', '/api/interruptions');
    expect(ciIntr.map((i: any) => i.id).sort()).toEqual([intr.TestShop, intr.TestBlog].sort());
  });
});

describe('the live channel', () => {
  // Invariant: a key limited to environments follows live only the deployments it may read: subscribing to one
  // outside its scope is refused, one inside gets its snapshot.
  it("refuses subscriptions outside the key's scope", async () => {
    const socket = io(`${srv.base}/live`, {
      transports: ['websocket'],
      reconnection: false,
      ca: srv.ca,
      auth: { apiKey: keys.ci.key },
    });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('connect_error', reject);
      });
      const refused = new Promise<{ message: string }>((resolve) => socket.once('error-message', resolve));
      socket.emit('subscribe', { deploymentId: dep.ProdShop, afterSeq: 0 });
      expect((await refused).message).toBe(`deployment ${dep.ProdShop} is outside this key's scope`);
      const snapshot = new Promise<{ id: string }>((resolve) => socket.once('deployment', resolve));
      socket.emit('subscribe', { deploymentId: dep.TestShop, afterSeq: 0 });
      expect((await snapshot).id).toBe(dep.TestShop);
    } finally {
      socket.close();
    }
  });
});

describe('keys', () => {
  // Invariant: GET /api/me tells a key who it is, its role, its scope and what it may do.
  it('answers GET /api/me', async () => {
    const me = await srv.must('GET', '/api/me', undefined, [200], { key: keys.ci.key });
    expect(me).toEqual({
      id: keys.ci.id,
      name: 'ci',
      role: 'deployer',
      environmentIds: [env.Test],
      projectIds: null,
      permissions: expect.arrayContaining(['read', 'deploy', 'pause', 'cancel', 'retry', 'rollback']),
    });
    expect(me.permissions).not.toContain('approve');
    const admin = await srv.must('GET', '/api/me');
    expect(admin).toMatchObject({ name: 'admin', role: 'admin', environmentIds: null, projectIds: null });
    expect(admin.permissions).toEqual(expect.arrayContaining(['manage-keys', 'approve', 'edit-process']));
  });

  // Invariant: keys are listed with role and scope; bad roles and unknown scopes are 400s naming the field; a key
  // made without a role is an admin (as keys made before roles were); revoked keys stop working.
  it('creates, lists and revokes keys with roles and scopes', async () => {
    const list = await srv.must('GET', '/api/api-keys');
    expect(list.find((k: any) => k.name === 'ci')).toMatchObject({
      role: 'deployer',
      environmentIds: [env.Test],
      projectIds: null,
      revokedAt: null,
    });
    expect(list.find((k: any) => k.name === 'admin')).toMatchObject({ role: 'admin', environmentIds: null });
    const bad = async (body: unknown, field: RegExp) => {
      const r = await srv.request('POST', '/api/api-keys', body);
      expect([r.status, [r.body.message].flat().join('; ')]).toEqual([400, expect.stringMatching(field)]);
    };
    await bad({ name: 'x1', role: 'owner' }, /role must be one of viewer, deployer, approver, admin/);
    await bad(
      { name: 'x2', role: 'viewer', environmentIds: ['Nowhere'] },
      /environmentIds names an unknown environment "Nowhere"/,
    );
    await bad({ name: 'x3', role: 'viewer', projectIds: [UNKNOWN] }, /projectIds names an unknown project/);
    await bad({ name: 'x4', role: 'admin', projectIds: [project.Shop] }, /projectIds: an admin key cannot be limited/);
    await bad({ name: 'x5', role: 'viewer', environmentIds: [] }, /environmentIds must name at least one/);
    const old = await srv.must('POST', '/api/api-keys', { name: 'old-style' }, [201]);
    expect(old).toMatchObject({ role: 'admin', environmentIds: null, projectIds: null });
    expect((await srv.request('GET', '/api/api-keys', undefined, { key: old.key })).status).toBe(200);
    await srv.must('DELETE', `/api/api-keys/${old.id}`, undefined, [204]);
    expect((await srv.request('GET', '/api/me', undefined, { key: old.key })).status).toBe(401);
  });
});

describe('preventSelfApproval', () => {
  // Invariant: the key that created a deployment cannot answer a manual intervention that prevents self-approval
  // (403 self_approval, the deployment still waits); another approver can; an intervention without the flag the
  // creator may answer. The deployment shows who created it.
  it('refuses the creator and accepts another approver', async () => {
    const created = await srv.must(
      'POST',
      '/api/deployments',
      { releaseId: release.Shop, environmentId: env.Test },
      [201],
      { key: keys.approver.key },
    );
    expect(created.createdBy).toEqual({ id: keys.approver.id, name: 'approver' });
    const gate = await pendingOf(created.id);
    expect(gate).toMatchObject({ actionName: 'Four eyes', preventSelfApproval: true });
    const self = await srv.request(
      'POST',
      `/api/interruptions/${gate.id}/submit`,
      { result: 'proceed' },
      { key: keys.approver.key },
    );
    expect([self.status, self.body.code]).toEqual([403, 'self_approval']);
    expect(self.body.message).toContain("key 'approver' created deployment");
    expect((await srv.must('GET', `/api/interruptions/${gate.id}`)).state).toBe('pending');
    const other = await srv.must('POST', `/api/interruptions/${gate.id}/submit`, { result: 'proceed' }, [200], {
      key: keys.shop.key,
    });
    expect(other).toMatchObject({ state: 'submitted', result: 'proceed', submittedBy: 'shop' });
    // The next one does not prevent self-approval: the creator answers it.
    const signOff = await waitFor('the sign-off', async () => {
      const list = await srv.must('GET', `/api/interruptions?deploymentId=${created.id}&state=pending`);
      return list.find((i: any) => i.actionName === 'Anyone');
    });
    expect(signOff.preventSelfApproval).toBeUndefined();
    await srv.must('POST', `/api/interruptions/${signOff.id}/submit`, { result: 'proceed' }, [200], {
      key: keys.approver.key,
    });
    const done = await srv.waitDeployment(created.id);
    expect(done).toMatchObject({ state: 'success', createdBy: { id: keys.approver.id, name: 'approver' } });
    expect(
      (await srv.must('GET', `/api/deployments?projectId=${project.Shop}`)).find((d: any) => d.id === created.id),
    ).toMatchObject({ createdBy: { name: 'approver' } });
  });

  // Invariant: a retry is created by whoever asked for it, so its creator (not the original's) is the one refused.
  it('makes the key that retries the creator of the retry', async () => {
    const created = await srv.must(
      'POST',
      '/api/deployments',
      { releaseId: release.Blog, environmentId: env.Test },
      [201],
      {
        key: keys.ci.key,
      },
    );
    const gate = await pendingOf(created.id);
    await srv.must('POST', `/api/interruptions/${gate.id}/submit`, { result: 'abort' }, [200], {
      key: keys.approver.key,
    });
    expect((await srv.waitDeployment(created.id)).state).toBe('failed');
    const retry = await srv.must('POST', `/api/deployments/${created.id}/retry-failed`, undefined, [201], {
      key: keys.deployer.key,
    });
    expect(retry).toMatchObject({ retryOf: created.id, createdBy: { id: keys.deployer.id, name: 'deployer' } });
    const again = await pendingOf(retry.id);
    // The original's creator may answer the retry's gate; the retry's creator (a deployer) may not approve at all.
    await srv.must('POST', `/api/interruptions/${again.id}/submit`, { result: 'abort' }, [200], {
      key: keys.approver.key,
    });
    await srv.waitDeployment(retry.id);
  });

  // Invariant: the step's preventSelfApproval needs approveEachBatch, and the action's applies to manual
  // interventions only: a process saying otherwise is a 400 naming the field.
  it('refuses preventSelfApproval where it means nothing', async () => {
    const proc = await srv.must('GET', `/api/projects/${project.Blog}/deployment-process`);
    const r = await srv.request('PUT', `/api/projects/${project.Blog}/deployment-process`, {
      version: proc.version,
      steps: [
        {
          name: 'Web',
          targetRoles: ['web'],
          preventSelfApproval: true,
          actions: [{ name: 'Run', type: 'script', script: 'true', preventSelfApproval: true }],
        },
      ],
    });
    expect(r.status).toBe(400);
    expect(r.body.message).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/steps\[0\]\.preventSelfApproval.*needs approveEachBatch/),
        expect.stringMatching(/steps\[0\]\.actions\[0\]\.preventSelfApproval.*manual-intervention only/),
      ]),
    );
  });
});

describe('preventSelfApproval on batch approvals', () => {
  // Invariant: a step approving each batch with preventSelfApproval refuses the deployment's creator an answer to its
  // batch approval (403 self_approval, the step keeps waiting at its gate); another admin or approver lets it go.
  it('refuses the creator and lets another key approve the next batch', async () => {
    const { token } = await srv.must('POST', '/api/registration-tokens', {
      environmentIds: [env.Test],
      roles: ['web'],
      maxUses: 2,
    });
    fleet = startFleet(srv, { prefix: 'web', count: 2, roles: ['web'], environments: ['Test'], token });
    await waitOnline(srv, fleet.names, 90_000);
    const p = await createProject(srv, 'Rolling', [
      {
        name: 'Web',
        targetRoles: ['web'],
        batches: [1, 1],
        approveEachBatch: true,
        preventSelfApproval: true,
        actions: [{ name: 'Roll', type: 'script', script: 'true' }],
      },
    ]);
    const rel = await srv.must('POST', '/api/releases', { projectId: p.id, version: '1.0.0' });
    const d = await srv.must('POST', '/api/deployments', { releaseId: rel.id, environmentId: env.Test }, [201], {
      key: keys.approver.key,
    });
    const gate = await waitFor(
      'the batch approval',
      async () => (await srv.must('GET', `/api/interruptions?deploymentId=${d.id}&state=pending`))[0],
      60_000,
    );
    expect(gate).toMatchObject({ kind: 'batch-approval', batch: 1, preventSelfApproval: true });
    const self = await srv.request(
      'POST',
      `/api/interruptions/${gate.id}/submit`,
      { result: 'proceed' },
      { key: keys.approver.key },
    );
    expect([self.status, self.body.code]).toEqual([403, 'self_approval']);
    expect(self.body.message).toContain('may not answer this batch approval');
    expect((await srv.must('GET', `/api/deployments/${d.id}`)).steps[0].gate).toBe('approval');
    await srv.must('POST', `/api/interruptions/${gate.id}/submit`, { result: 'proceed' }, [200], {
      key: keys.admin2.key,
    });
    const done = await srv.waitDeployment(d.id);
    expect(done.state).toBe('success');
    expect(done.steps[0].targets.map((t: any) => t.state)).toEqual(['success', 'success']);
  });
});
