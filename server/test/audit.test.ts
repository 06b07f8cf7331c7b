/**
 * The audit log as an operator reads it through GET /api/events, against a whole server: refused requests (no key, a
 * wrong key) recorded as denied without the key presented; a change made with a second key recorded under that
 * key's name; failed mutations recorded as failed with their error code; agent registration under the machine's
 * name; a sensitive variable's value nowhere in the log; the filters, paging and refusals of bad filter values.
 * Each test states its invariant. Events are written once the response has gone out, so tests wait for them.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import forge from 'node-forge';
import { AUDIT_ROUTES } from '../src/audit/audit-routes.js';
import { createProject, ROOT, startServer, stopAll, waitFor, type TestServer } from './support/fixtures.js';

let srv: TestServer;
let projectId: string;
/** The admin key the test servers start with (support/fixtures.ts). */
const ADMIN_KEY = 'integration-admin-key-0123456789';

beforeAll(async () => {
  srv = await startServer();
  await srv.must('POST', '/api/environments', { name: 'Audit' });
  projectId = (await createProject(srv, 'Audited', [{ name: 'Say', targetRoles: ['web'], actions: [say('one')] }])).id;
}, 120_000);

afterAll(async () => {
  await srv?.stop();
  await stopAll();
});

function say(text: string) {
  return { name: 'Echo', type: 'script', script: `echo ${text}` };
}

const events = async (query = '') => srv.must<any[]>('GET', `/api/events${query ? `?${query}` : ''}`);

/** The first event (newest first) matching `pred`, once it has been written. */
const eventMatching = (what: string, pred: (e: any) => boolean, query = 'limit=1000') =>
  waitFor(`the audit event: ${what}`, async () => (await events(query)).find(pred), 15_000, 100);

const msg = (r: { body: any }) =>
  Array.isArray(r.body?.message) ? r.body.message.join('; ') : String(r.body?.message);

// A request without a key and one with a wrong key are both refused (401) and both recorded as denied: the one
// without as "anonymous", the other as "invalid key", each with what it tried; the wrong key itself appears nowhere.
it('records refused requests as denied, without the key presented', async () => {
  const wrongKey = 'ck_not-a-real-key-but-secret-looking-0042';
  expect((await srv.request('GET', '/api/projects', undefined, { key: wrongKey })).status).toBe(401);
  expect((await srv.request('POST', '/api/environments', { name: 'Nope' }, { key: null })).status).toBe(401);

  const bad = await eventMatching('the wrong key', (e) => e.actor === 'invalid key' && e.action === 'project.read');
  expect(bad).toMatchObject({ outcome: 'denied', status: 401, resourceType: 'project', actorKeyId: null });
  expect(bad.summary).toContain('unauthorized');
  const anon = await eventMatching('the missing key', (e) => e.actor === 'anonymous');
  expect(anon).toMatchObject({ action: 'environment.create', resourceType: 'environment', outcome: 'denied' });
  expect(JSON.stringify(await events('limit=1000'))).not.toContain(wrongKey);
  // The refused create made nothing.
  expect((await srv.must<any[]>('GET', '/api/environments')).map((e) => e.name)).not.toContain('Nope');
});

// A process change made with a second key (alice) is recorded under alice's name and key id, with the action, the
// project it changed and outcome ok; the key made for alice is recorded as created by admin, and its value is not
// in the log.
it('records a process change with the key that made it', async () => {
  const alice = await srv.must('POST', '/api/api-keys', { name: 'alice' });
  const proc = await srv.must('GET', `/api/projects/${projectId}/deployment-process`);
  const steps = [
    { name: 'Say', targetRoles: ['web'], actions: [say('two')] },
    { name: 'Again', targetRoles: ['web'], actions: [say('three')] },
  ];
  const put = await srv.must(
    'PUT',
    `/api/projects/${projectId}/deployment-process`,
    { version: proc.version, steps },
    [200],
    { key: alice.key },
  );

  const change = await eventMatching('alice changing the process', (e) => e.actor === 'alice');
  expect(change).toMatchObject({
    actor: 'alice',
    actorKeyId: alice.id,
    action: 'project.process.update',
    resourceType: 'project',
    resourceId: projectId,
    outcome: 'ok',
    status: 200,
  });
  expect(change.summary).toBe(`project "Audited": process version ${put.version}, 2 steps [Say, Again]`);
  const made = await eventMatching('the key made for alice', (e) => e.action === 'api-key.create');
  expect(made).toMatchObject({ actor: 'admin', resourceId: alice.id, outcome: 'ok', summary: 'API key "alice"' });
  expect(JSON.stringify(await events('limit=1000'))).not.toContain(alice.key);
});

// A mutation the server refuses for its input (400) or its version (409) is recorded as failed with its status and
// error code, under the key that sent it; so is one whose body is not even JSON.
it('records failed mutations as failed', async () => {
  const proc = await srv.must('GET', `/api/projects/${projectId}/deployment-process`);
  const invalid = await srv.request('PUT', `/api/projects/${projectId}/deployment-process`, {
    version: proc.version,
    steps: [{ name: 'Bad', targetRoles: ['web'], windowSize: -1, actions: [say('x')] }],
  });
  expect(invalid.status).toBe(400);
  const stale = await srv.request('PUT', `/api/projects/${projectId}/deployment-process`, {
    version: proc.version - 1,
    steps: [{ name: 'Say', targetRoles: ['web'], actions: [say('x')] }],
  });
  expect(stale.status).toBe(409);
  const notJson = await srv.request('POST', '/api/environments', '{"name": ', {});
  expect(notJson.status).toBe(400);

  const failed = await waitFor(
    'the three failures',
    async () => {
      const list = await events('outcome=failed&actor=admin');
      return list.length >= 3 ? list : undefined;
    },
    15_000,
    100,
  );
  // (Events are written as answers go out: the order of two requests a few milliseconds apart is not the point.)
  expect(failed.map((e: any) => [e.action, e.status, e.summary, e.resourceId])).toEqual(
    expect.arrayContaining([
      ['environment.create', 400, 'failed: validation_failed (400)', null],
      ['project.process.update', 409, 'failed: stale_version (409)', projectId],
      ['project.process.update', 400, 'failed: validation_failed (400)', projectId],
    ]),
  );
});

// A sensitive variable's value is nowhere in the audit log: not from the PUT that set it, not from a PUT refused
// for another field while carrying it, not from a release freezing it. The change itself is recorded, with counts.
it('never records a sensitive value', async () => {
  const SECRET = 'hunter2-audit-0f9c4e';
  const ok = await srv.request('PUT', `/api/projects/${projectId}/variables`, {
    variables: [
      { name: 'Db.Password', value: SECRET, sensitive: true },
      { name: 'Color', value: 'blue' },
    ],
  });
  expect(ok.status).toBe(200);
  const refused = await srv.request('PUT', `/api/projects/${projectId}/variables`, {
    variables: [{ name: 'Db.Password', value: SECRET, sensitive: true, scope: { environmentIds: ['no-such-env'] } }],
  });
  expect(refused.status).toBeGreaterThanOrEqual(400);
  await srv.must('POST', '/api/releases', { projectId, version: '1.0.0' });

  const set = await eventMatching(
    'the variables change',
    (e) => e.action === 'project.variables.update' && e.outcome === 'ok',
  );
  expect(set).toMatchObject({ actor: 'admin', resourceType: 'project', resourceId: projectId });
  expect(set.summary).toMatch(/2 variables \(1 sensitive\)/);
  await eventMatching('the release', (e) => e.action === 'release.create');
  await eventMatching('the refused change', (e) => e.action === 'project.variables.update' && e.outcome !== 'ok');
  const text = JSON.stringify(await events('limit=1000'));
  expect(text).not.toContain(SECRET);
  expect(text).not.toContain('hunter2');
});

/** A CSR as an agent makes one. */
function csr(name: string): string {
  const k = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const c = forge.pki.createCertificationRequest();
  c.publicKey = forge.pki.publicKeyFromPem(k.publicKey);
  c.setSubject([{ name: 'commonName', value: name }]);
  c.sign(forge.pki.privateKeyFromPem(k.privateKey), forge.md.sha256.create());
  return forge.pki.certificationRequestToPem(c);
}

// Agent registration needs no key: it is recorded under the machine's name, with the machine it created; one with
// an unknown token is recorded as denied. Neither the token nor the certificate appears in the log.
it('records agent registration under the machine name', async () => {
  const { token } = await srv.must('POST', '/api/registration-tokens', { environmentIds: ['Audit'], roles: ['web'] });
  const reg = await srv.must('POST', '/api/agents/register', { token, name: 'audit-01', csr: csr('audit-01') }, [201], {
    key: null,
  });
  const rogue = await srv.request(
    'POST',
    '/api/agents/register',
    { token: 'cuttle-token-that-does-not-exist', name: 'rogue-01', csr: csr('rogue-01') },
    { key: null },
  );
  expect(rogue.status).toBe(401);

  const joined = await eventMatching('audit-01 registering', (e) => e.actor === 'registration:audit-01');
  expect(joined).toMatchObject({
    action: 'machine.register',
    resourceType: 'machine',
    resourceId: reg.machineId,
    outcome: 'ok',
  });
  const denied = await eventMatching('rogue-01 refused', (e) => e.actor === 'registration:rogue-01');
  expect(denied).toMatchObject({ action: 'machine.register', outcome: 'denied', status: 401, resourceId: null });
  const tokenEvent = await eventMatching('the token', (e) => e.action === 'registration-token.create');
  expect(tokenEvent.summary).toBe('token for 1 environment, roles [web], 1 use');
  const text = JSON.stringify(await events('limit=1000'));
  expect(text).not.toContain(token);
  expect(text).not.toContain('BEGIN CERTIFICATE');
});

// Filters narrow the log to one actor, one resource or a time, and `before` pages back through it: pages of 2
// follow each other newest first, without gaps or repeats, until the log is read whole.
it('filters and pages', async () => {
  const second = await srv.must('POST', '/api/projects', { name: 'Other' });
  await srv.must('PATCH', `/api/projects/${second.id}`, { description: 'the other one' });
  await eventMatching('the patch', (e) => e.action === 'project.update');

  const all = await events('limit=1000');
  const ids = all.map((e) => Number(e.id));
  expect(ids).toEqual([...ids].sort((a, b) => b - a));
  const paged: any[] = [];
  for (let q = 'limit=2'; ;) {
    const page = await events(q);
    if (!page.length) break;
    expect(page.length).toBeLessThanOrEqual(2);
    paged.push(...page);
    q = `limit=2&before=${page[page.length - 1].id}`;
  }
  // Every request above has been recorded (nothing else is writing now), so the pages are the whole log.
  expect(paged.map((e) => e.id)).toEqual(all.slice(0, paged.length).map((e) => e.id));
  expect(paged.length).toBe((await events('limit=1000')).length);

  const other = await events(`resourceType=project&resourceId=${second.id}`);
  expect(other.map((e) => e.action)).toEqual(['project.update', 'project.create']);
  expect(other[0].summary).toBe('project "Other": changed description');
  expect((await events('actor=alice')).every((e) => e.actor === 'alice')).toBe(true);
  expect((await events('actor=alice')).length).toBe(1);
  expect(await events(`since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).toEqual([]);
  const recent = await events(`since=${encodeURIComponent(all[2].at)}`);
  expect(recent.length).toBeGreaterThanOrEqual(3);
  expect(recent.every((e) => e.at >= all[2].at)).toBe(true);
  expect(await events('limit=1')).toHaveLength(1);

  for (const [query, field] of [
    ['limit=0', 'limit'],
    ['limit=1001', 'limit'],
    ['limit=ten', 'limit'],
    ['since=yesterday', 'since'],
    ['since=2026-13-45T00:00:00Z', 'since'],
    ['before=abc', 'before'],
    ['outcome=maybe', 'outcome'],
    ['actor=a&actor=b', 'actor'],
  ]) {
    const r = await srv.request('GET', `/api/events?${query}`);
    expect([query, r.status, r.body.code]).toEqual([query, 400, 'validation_failed']);
    expect(msg(r).startsWith(field)).toBe(true);
  }
});

// Hostile paths are still recorded, as one short line of text: a NUL character, control characters and a very long
// segment in the path neither lose the event nor fail the request with a 500.
it('records requests with hostile paths', async () => {
  const long = 'x'.repeat(5000);
  const nul = await srv.request('POST', '/api/projects/%00evil%0Aline/channels', { name: 'c' });
  const huge = await srv.request('DELETE', `/api/machines/${long}`);
  const unknown = await srv.request('POST', `/api/no-such-thing/%00/${long}`, {});
  expect([nul.status, huge.status, unknown.status].every((s) => s >= 400 && s < 500)).toBe(true);
  const channel = await eventMatching('the NUL path', (e) => e.action === 'project.channel.create');
  expect(channel).toMatchObject({ outcome: 'failed', resourceId: ' evil line' });
  const revoke = await eventMatching('the long id', (e) => e.action === 'machine.revoke');
  expect(revoke.resourceId.length).toBeLessThanOrEqual(200);
  const other = await eventMatching('the unknown route', (e) => e.resourceType === 'no-such-thing');
  expect(other.outcome).toBe('failed');
  expect(other.summary.length).toBeLessThanOrEqual(300);
  expect(srv.log()).not.toContain('could not record');
});

// A client that hangs up in the middle of its request (here, half-way through a package upload) gets no answer, but
// its request is recorded all the same, as failed: nothing was made.
it('records a request whose client hung up', async () => {
  await new Promise<void>((resolve) => {
    const req = httpsRequest(`${srv.base}/api/packages/half-upload/1.0.0`, {
      method: 'POST',
      ca: srv.ca,
      headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/gzip', 'content-length': '1000000' },
    });
    req.on('error', () => resolve());
    req.write(Buffer.alloc(64 * 1024, 1), () => setTimeout(() => req.destroy(), 200));
  });
  const ev = await eventMatching('the abandoned upload', (e) => e.resourceId === 'half-upload');
  expect(ev).toMatchObject({ action: 'package.upload', actor: 'admin', outcome: 'failed' });
  expect((await srv.must<any[]>('GET', '/api/packages')).some((p) => p.packageId === 'half-upload')).toBe(false);
});

// Every mutating route the server has (from its OpenAPI document) has its own entry in the audit table, so no
// change is recorded under a guessed name.
it('knows every mutating route', async () => {
  const doc = await srv.must('GET', '/api/docs-json', undefined, [200], { key: null });
  const routes: string[] = [];
  for (const [path, item] of Object.entries<Record<string, unknown>>(doc.paths))
    for (const method of Object.keys(item))
      if (['post', 'put', 'patch', 'delete'].includes(method))
        routes.push(`${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`);
  expect(routes.length).toBeGreaterThan(10);
  expect(routes.filter((r) => !AUDIT_ROUTES[r])).toEqual([]);
});

/** Runs `cuttle` with a key of its own (CUTTLE_SERVER, CUTTLE_API_KEY, CUTTLE_CA_FILE), as a pipeline would. */
function cuttle(args: string[], key: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const ca = join(srv.dir, 'audit-ca.crt');
  writeFileSync(ca, srv.ca);
  return new Promise((resolve) =>
    execFile(
      process.execPath,
      ['bin/cuttle.js', ...args],
      {
        cwd: ROOT,
        env: {
          ...process.env,
          CUTTLE_SERVER: srv.base,
          CUTTLE_API_KEY: key,
          CUTTLE_CA_FILE: ca,
          CUTTLE_CONFIG: join(srv.dir, 'none.json'),
        },
      },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

// `cuttle events` shows the same log: filtered by resource (a project given by name) as JSON and as a table, and a
// bad filter value is refused with exit code 2 and the server's message naming it.
it('shows the log with cuttle events', async () => {
  const { key } = await srv.must('POST', '/api/api-keys', { name: 'auditor' });
  const viaApi = await events(`resourceType=project&resourceId=${projectId}`);
  const asJson = await cuttle(['events', '--resource-type', 'project', '--resource-id', 'Audited', '--json'], key);
  expect(asJson.code).toBe(0);
  expect(JSON.parse(asJson.stdout)).toEqual(viaApi);

  const text = await cuttle(['events', '--actor', 'alice'], key);
  expect(text.code).toBe(0);
  const lines = text.stdout.trim().split('\n');
  expect(lines[0]).toMatch(/^ID\s+AT\s+ACTOR\s+ACTION\s+OUTCOME\s+RESOURCE\s+SUMMARY$/);
  expect(lines).toHaveLength(2);
  expect(lines[1]).toContain('project.process.update');
  expect(lines[1]).toContain(`project ${projectId}`);

  const bad = await cuttle(['events', '--limit', '0'], key);
  expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining('limit must be an integer from 1 to 1000')]);
});
