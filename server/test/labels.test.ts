/**
 * Machine labels and an environment's rollback default, as operators and agents use them: a real agent registering
 * with `--labels`, `PATCH /api/machines/:id` replacing them, the `?label=` filter, refusals that name the field and
 * change nothing, and `rollbackOnFailure` through POST, PATCH and GET of environments. Each test states its invariant.
 */
import { generateKeyPairSync } from 'node:crypto';
import forge from 'node-forge';
import { startAgent, startServer, stopAll, waitFor, waitOnline, type TestServer } from './support/fixtures.js';

let srv: TestServer;

beforeAll(async () => {
  srv = await startServer();
  await srv.must('POST', '/api/environments', { name: 'Zones' });
}, 120_000);

afterAll(async () => {
  await srv?.stop();
  await stopAll();
});

const token = async (maxUses = 1) =>
  (await srv.must('POST', '/api/registration-tokens', { environmentIds: ['Zones'], roles: ['web'], maxUses })).token;

/** A fresh CSR, as an agent makes one (the key stays here). */
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

/** Registers a machine over REST (no agent process): `labels` as given, left out when undefined. */
const register = async (tok: string, name: string, labels?: unknown) =>
  srv.request(
    'POST',
    '/api/agents/register',
    { token: tok, name, csr: csr(name), ...(labels !== undefined ? { labels } : {}) },
    { key: null },
  );

const machineNamed = async (name: string) => (await srv.must('GET', '/api/machines')).find((m: any) => m.name === name);
const msg = (r: { body: any }) =>
  Array.isArray(r.body?.message) ? r.body.message.join('; ') : String(r.body?.message);

// An agent started with --labels registers with them: GET lists and GET one show exactly those labels. PATCH
// replaces them whole (a label left out is gone) and {} clears them. Started again with --labels, the registered
// agent warns that labels apply at registration only and the server's labels stay as they are.
it('registers an agent with --labels, and PATCH replaces them', async () => {
  const agent = startAgent(srv, {
    name: 'lab-01',
    roles: ['web'],
    environments: ['Zones'],
    token: await token(),
    labels: 'zone=a,rack=r1',
  });
  const m = (await waitOnline(srv, ['lab-01'])).find((x: any) => x.name === 'lab-01');
  expect(m.labels).toEqual({ zone: 'a', rack: 'r1' });
  expect((await srv.must('GET', `/api/machines/${m.id}`)).labels).toEqual({ zone: 'a', rack: 'r1' });

  const patched = await srv.must('PATCH', `/api/machines/${m.id}`, { labels: { zone: 'b', tier: 'gold' } });
  expect(patched.labels).toEqual({ zone: 'b', tier: 'gold' });
  expect((await srv.must('GET', `/api/machines/${m.id}`)).labels).toEqual({ zone: 'b', tier: 'gold' });
  // A PATCH of something else keeps the labels.
  expect((await srv.must('PATCH', `/api/machines/${m.id}`, { roles: ['web', 'api'] })).labels).toEqual({
    zone: 'b',
    tier: 'gold',
  });

  await agent.stop();
  agent.restart(['--labels', 'zone=z']);
  await waitFor('the warning about --labels', async () => agent.log().includes('--labels applies at registration'));
  await waitOnline(srv, ['lab-01']);
  expect((await srv.must('GET', `/api/machines/${m.id}`)).labels).toEqual({ zone: 'b', tier: 'gold' });

  expect((await srv.must('PATCH', `/api/machines/${m.id}`, { labels: {} })).labels).toEqual({});
  expect((await machineNamed('lab-01')).labels).toEqual({});
  await agent.stop();
});

// `?label=zone=a` lists exactly the machines whose label zone has the value a, combined with the other filters; a
// malformed selector is a 400 naming `label`, and so is one given twice.
it('filters machines by a label value', async () => {
  const tok = await token(4);
  for (const [name, labels] of [
    ['flt-a1', { zone: 'a' }],
    ['flt-a2', { zone: 'a', rack: 'r2' }],
    ['flt-b1', { zone: 'b' }],
    ['flt-none', undefined],
  ] as const)
    expect((await register(tok, name, labels)).status).toBe(201);
  const names = async (q: string) =>
    ((await srv.must('GET', `/api/machines${q}`)) as any[]).map((m) => m.name).filter((n) => n.startsWith('flt-'));
  expect(await names('?label=zone=a')).toEqual(['flt-a1', 'flt-a2']);
  expect(await names('?label=zone%3Da&role=web&environmentId=Zones')).toEqual(['flt-a1', 'flt-a2']);
  expect(await names('?label=rack=r2')).toEqual(['flt-a2']);
  expect(await names('?label=zone=c')).toEqual([]);
  expect((await machineNamed('flt-none')).labels).toEqual({});
  for (const bad of ['zone', 'zone=', '=a', 'a%20b=c', 'zone=a%2Crack=r2']) {
    const r = await srv.request('GET', `/api/machines?label=${bad}`);
    expect([bad, r.status, r.body.code]).toEqual([bad, 400, 'validation_failed']);
    expect(msg(r)).toMatch(/^label must be NAME=VALUE/);
  }
  const twice = await srv.request('GET', '/api/machines?label=zone=a&label=zone=b');
  expect([twice.status, msg(twice)]).toEqual([400, expect.stringMatching(/^label must be given once/)]);
});

// Bad labels are a 400 validation_failed whose message names the field (and the label at fault), on PATCH and on
// registration alike; nothing changes: the machine keeps its labels, and a refused registration neither registers
// the machine nor spends the token's use.
it('refuses bad labels, naming the field, and changes nothing', async () => {
  const tok = await token(1);
  const ok = await register(tok, 'bad-01', { zone: 'a' });
  expect(ok.status).toBe(201);
  const id = ok.body.machineId;
  const many = Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`l${i}`, 'v']));
  const bad: Array<[string, unknown, RegExp]> = [
    ['a name with a space', { 'a b': 'x' }, /^labels: the label name "a b" must be letters, digits/],
    ['a value over 200 characters', { zone: 'v'.repeat(201) }, /^labels\.zone must be .+\(1 to 200 characters\)/],
    ['51 labels', many, /^labels has 51 labels \(at most 50\)/],
    ['a number as value', { zone: 1 }, /^labels\.zone must be text/],
    ['labels as a list', ['zone=a'], /^labels must be an object of label names to values/],
    ['labels as text', 'zone=a', /^labels must be an object/],
    ['labels null', null, /^labels must be an object/],
    ['a value with a slash', { zone: 'a/b' }, /^labels\.zone must be letters/],
    // The framework deletes these keys from bodies: refused, rather than dropped without a word.
    [
      'a reserved name',
      JSON.parse('{"zone": "a", "constructor": "x"}'),
      /^labels has the key "constructor", which is reserved/,
    ],
  ];
  for (const [what, labels, message] of bad) {
    const r = await srv.request('PATCH', `/api/machines/${id}`, { labels });
    expect([what, r.status, r.body.code]).toEqual([what, 400, 'validation_failed']);
    expect([what, msg(r)]).toEqual([what, expect.stringMatching(message)]);
    const reg = await register(tok, 'bad-02', labels);
    expect([what, reg.status, reg.body.code]).toEqual([what, 400, 'validation_failed']);
    expect([what, msg(reg)]).toEqual([what, expect.stringMatching(message)]);
  }
  expect((await srv.must('GET', `/api/machines/${id}`)).labels).toEqual({ zone: 'a' });
  expect(await machineNamed('bad-02')).toBeUndefined();
  // The first token's one use went to bad-01; a fresh token of one use still registers after a refusal.
  const tok2 = await token(1);
  expect((await register(tok2, 'bad-02', { 'a b': 'x' })).status).toBe(400);
  const good = await register(tok2, 'bad-02', { toString: 't', valueOf: 'v' });
  expect(good.status).toBe(201);
  // Names that are also Object.prototype's members (but for the reserved ones) are kept like any other.
  expect((await machineNamed('bad-02')).labels).toEqual({ toString: 't', valueOf: 'v' });
});

// A malformed --labels is bad usage: the agent exits 2 at once with a message naming --labels, before it asks
// anything of the server (no machine is registered, the token keeps its use).
it('exits 2 on a malformed --labels', async () => {
  const tok = await token(1);
  for (const [i, labels] of ['zone', 'zone=a,zone=b', 'a b=c', 'zone='].entries()) {
    const agent = startAgent(srv, { name: `usage-0${i}`, roles: ['web'], environments: ['Zones'], token: tok, labels });
    expect([labels, await agent.exitCode()]).toEqual([labels, 2]);
    expect(agent.log()).toMatch(/option '--labels <list>' argument .+ is invalid/);
  }
  expect((await srv.must('GET', '/api/machines')).filter((m: any) => m.name.startsWith('usage-'))).toEqual([]);
  expect((await register(tok, 'usage-ok')).status).toBe(201);
});

// An environment's rollbackOnFailure is false unless set; POST and PATCH store it, GET (one and the list) shows it,
// and PATCH changes only what it names. PATCH refuses unknown fields and bad values naming them, answers 404 for
// an unknown id and 409 already_exists for a name another environment has.
it('keeps an environment rollback default through POST, PATCH and GET', async () => {
  const plain = await srv.must('POST', '/api/environments', { name: 'Plain' });
  expect(plain).toMatchObject({ name: 'Plain', guidedFailure: false, rollbackOnFailure: false });
  const prod = await srv.must('POST', '/api/environments', {
    name: 'Prod',
    guidedFailure: true,
    rollbackOnFailure: true,
  });
  expect(prod).toMatchObject({ name: 'Prod', guidedFailure: true, rollbackOnFailure: true });
  expect(await srv.must('GET', `/api/environments/${prod.id}`)).toEqual(prod);

  const off = await srv.must('PATCH', `/api/environments/${prod.id}`, { rollbackOnFailure: false });
  expect(off).toEqual({ ...prod, rollbackOnFailure: false });
  const on = await srv.must('PATCH', `/api/environments/${plain.id}`, { rollbackOnFailure: true });
  expect(on).toEqual({ ...plain, rollbackOnFailure: true });
  const renamed = await srv.must('PATCH', `/api/environments/${plain.id}`, { name: ' Staging ', guidedFailure: true });
  expect(renamed).toEqual({ ...plain, name: 'Staging', guidedFailure: true, rollbackOnFailure: true });
  // Renaming to its own name is no conflict.
  expect((await srv.must('PATCH', `/api/environments/${plain.id}`, { name: 'Staging' })).name).toBe('Staging');
  const list: any[] = await srv.must('GET', '/api/environments');
  expect(list.find((e) => e.id === prod.id)).toEqual({ ...prod, rollbackOnFailure: false });
  expect(list.find((e) => e.id === plain.id)).toEqual(renamed);

  const refusals: Array<[string, string, unknown, number, string, RegExp]> = [
    ['unknown field', prod.id, { lifecycle: 'x' }, 400, 'validation_failed', /property lifecycle should not exist/],
    ['not a boolean', prod.id, { rollbackOnFailure: 'yes' }, 400, 'validation_failed', /^rollbackOnFailure must/],
    ['a blank name', prod.id, { name: '   ' }, 400, 'validation_failed', /^name must not be empty/],
    ['a taken name', prod.id, { name: 'Staging' }, 409, 'already_exists', /"Staging" already exists/],
    [
      'an unknown id',
      '00000000-0000-4000-8000-000000000000',
      { rollbackOnFailure: true },
      404,
      'not_found',
      /not found/,
    ],
    ['an id that is not one', 'Prod', { rollbackOnFailure: true }, 404, 'not_found', /not found/],
  ];
  for (const [what, id, body, status, code, message] of refusals) {
    const r = await srv.request('PATCH', `/api/environments/${id}`, body);
    expect([what, r.status, r.body.code]).toEqual([what, status, code]);
    expect([what, msg(r)]).toEqual([what, expect.stringMatching(message)]);
  }
  expect(await srv.must('GET', `/api/environments/${prod.id}`)).toEqual({ ...prod, rollbackOnFailure: false });
  const bad = await srv.request('POST', '/api/environments', { name: 'X', rollbackOnFailure: 1 });
  expect([bad.status, msg(bad)]).toEqual([400, expect.stringMatching(/^rollbackOnFailure must/)]);
});
