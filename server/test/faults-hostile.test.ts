/**
 * Fault suite, hostile input: bad REST bodies and parameters, oversized bodies and packages, tarballs that try to
 * escape their folder, malformed and oversized socket messages, oversized log lines and a log flood. Every bad input
 * gets a 4xx (or a protocol error) naming what is wrong, and the server keeps serving.
 */
import { generateKeyPairSync } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import forge from 'node-forge';
import { io, type Socket } from 'socket.io-client';
import { createProject, makeTarGz, startAgent, startDeployment, startServer, stopAll, waitFor, waitOnline, type TestServer } from './support/fixtures.js';

let srv: TestServer;
let env: string;
let project: any;
let release: any;
const tally = { tried: 0, fourxx: 0, fivexx: 0, socketTried: 0, socketRefused: 0, tarTried: 0, tarRefused: 0 };
const UNKNOWN = '00000000-0000-4000-8000-000000000000';

beforeAll(async () => {
  srv = await startServer({ env: { CUTTLE_MAX_PACKAGE_MB: '1' } });
  env = (await srv.must('POST', '/api/environments', { name: 'Hostile' })).id;
  project = await createProject(srv, 'Target', [{ name: 'S', targetRoles: ['h'], actions: [{ name: 'a', type: 'script', script: 'true' }] }]);
  release = await srv.must('POST', '/api/releases', { projectId: project.id, version: '1.0.0' });
  await srv.must('POST', '/api/api-keys', { name: 'taken' });
}, 120_000);

afterAll(async () => {
  await srv?.stop();
  await stopAll();
  process.stdout.write(
    `\nfault summary [hostile input]: bad inputs tried ${tally.tried}, answered 4xx ${tally.fourxx}, answered 5xx ${tally.fivexx}; ` +
      `bad socket messages ${tally.socketTried}, refused ${tally.socketRefused}; tar escapes ${tally.tarTried}, refused ${tally.tarRefused}\n`,
  );
});

type Bad = { name: string; method: string; path: string; body?: unknown; raw?: Buffer; headers?: Record<string, string>; key?: string | null; status: number; message?: RegExp };

const gz = { 'content-type': 'application/gzip' };
const step = (over: Record<string, unknown> = {}, action: Record<string, unknown> = {}) => ({ name: 'S', targetRoles: ['h'], actions: [{ name: 'a', type: 'script', script: 'true', ...action }], ...over });
const proc = (steps: unknown) => ({ version: 2, steps });

/** A tar.gz built from raw ustar headers, so entries can say anything a hostile archive would. */
function rawTar(entries: Array<{ name: string; type?: string; link?: string; content?: string }>): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.content ?? '');
    const h = Buffer.alloc(512);
    h.write(e.name, 0, 100);
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(body.length.toString(8).padStart(11, '0') + '\0', 124);
    h.write('00000000000\0', 136);
    h.write('        ', 148);
    h.write(e.type ?? '0', 156);
    if (e.link) h.write(e.link, 157, 100);
    h.write('ustar\0', 257);
    h.write('00', 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    blocks.push(h, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

function badInputs(): Bad[] {
  const P = `/api/projects/${project.id}`;
  return [
    { name: 'no API key', method: 'GET', path: '/api/projects', key: null, status: 401, message: /X-Api-Key header is required/ },
    { name: 'wrong API key', method: 'GET', path: '/api/projects', key: 'ck_nope', status: 401 },
    { name: 'invalid JSON', method: 'POST', path: '/api/environments', raw: Buffer.from('{"name": '), headers: { 'content-type': 'application/json' }, status: 400, message: /not valid JSON/ },
    { name: 'JSON over 5 MB', method: 'POST', path: '/api/environments', raw: Buffer.from(JSON.stringify({ name: 'x'.repeat(6 * 1024 * 1024) })), headers: { 'content-type': 'application/json' }, status: 413 },
    { name: 'environment without name', method: 'POST', path: '/api/environments', body: {}, status: 400, message: /name/ },
    { name: 'environment name a number', method: 'POST', path: '/api/environments', body: { name: 42 }, status: 400, message: /name must be a string/ },
    { name: 'environment name empty', method: 'POST', path: '/api/environments', body: { name: '' }, status: 400, message: /name should not be empty/ },
    { name: 'environment name too long', method: 'POST', path: '/api/environments', body: { name: 'x'.repeat(101) }, status: 400, message: /name must be shorter/ },
    { name: 'environment unknown field', method: 'POST', path: '/api/environments', body: { name: 'x', color: 'red' }, status: 400, message: /property color should not exist/ },
    { name: 'environment duplicate', method: 'POST', path: '/api/environments', body: { name: 'Hostile' }, status: 409 },
    { name: 'environment body is an array', method: 'POST', path: '/api/environments', body: [{ name: 'x' }], status: 400 },
    { name: 'guidedFailure not boolean', method: 'POST', path: '/api/environments', body: { name: 'y', guidedFailure: 'yes' }, status: 400, message: /guidedFailure/ },
    { name: 'unknown environment id', method: 'GET', path: `/api/environments/${UNKNOWN}`, status: 404 },
    { name: 'malformed environment id', method: 'GET', path: '/api/environments/../../etc', status: 404 },
    { name: 'token without environments', method: 'POST', path: '/api/registration-tokens', body: {}, status: 400, message: /environmentIds/ },
    { name: 'token environments not a list', method: 'POST', path: '/api/registration-tokens', body: { environmentIds: 'Hostile' }, status: 400, message: /environmentIds/ },
    { name: 'token unknown environment', method: 'POST', path: '/api/registration-tokens', body: { environmentIds: ['Nowhere'] }, status: 400, message: /environmentIds names an unknown environment "Nowhere"/ },
    { name: 'token empty environments', method: 'POST', path: '/api/registration-tokens', body: { environmentIds: [] }, status: 400, message: /at least one/ },
    { name: 'token bad role', method: 'POST', path: '/api/registration-tokens', body: { environmentIds: [env], roles: ['a b'] }, status: 400, message: /roles/ },
    { name: 'token expiry zero', method: 'POST', path: '/api/registration-tokens', body: { environmentIds: [env], expiresInSeconds: 0 }, status: 400, message: /expiresInSeconds/ },
    { name: 'token maxUses zero', method: 'POST', path: '/api/registration-tokens', body: { environmentIds: [env], maxUses: 0 }, status: 400, message: /maxUses/ },
    { name: 'token maxUses text', method: 'POST', path: '/api/registration-tokens', body: { environmentIds: [env], maxUses: 'many' }, status: 400, message: /maxUses/ },
    { name: 'register without token', method: 'POST', path: '/api/agents/register', key: null, body: { name: 'x', csr: 'x' }, status: 400, message: /token/ },
    { name: 'register bad token', method: 'POST', path: '/api/agents/register', key: null, body: { token: 'nope', name: 'x', csr: 'x' }, status: 401 },
    { name: 'register bad name', method: 'POST', path: '/api/agents/register', key: null, body: { token: 'nope', name: 'a b', csr: 'x' }, status: 400, message: /name must be letters/ },
    { name: 'register without csr', method: 'POST', path: '/api/agents/register', key: null, body: { token: 'nope', name: 'x' }, status: 400, message: /csr/ },
    { name: 'unknown machine', method: 'GET', path: `/api/machines/${UNKNOWN}`, status: 404 },
    { name: 'malformed machine id', method: 'PATCH', path: '/api/machines/1;DROP TABLE machines', body: { disabled: true }, status: 404 },
    { name: 'revoke unknown machine', method: 'DELETE', path: `/api/machines/${UNKNOWN}`, status: 404 },
    { name: 'project without name', method: 'POST', path: '/api/projects', body: { description: 'x' }, status: 400, message: /name/ },
    { name: 'project duplicate', method: 'POST', path: '/api/projects', body: { name: 'Target' }, status: 409 },
    { name: 'project bad default timeout', method: 'POST', path: '/api/projects', body: { name: 'T2', defaultTimeoutSeconds: -5 }, status: 400, message: /defaultTimeoutSeconds/ },
    { name: 'unknown project', method: 'GET', path: '/api/projects/no-such-project', status: 404 },
    { name: 'process stale version', method: 'PUT', path: `${P}/deployment-process`, body: { version: 1, steps: [] }, status: 409, message: /stale/ },
    { name: 'process without version', method: 'PUT', path: `${P}/deployment-process`, body: { steps: [] }, status: 400, message: /version/ },
    { name: 'process steps not a list', method: 'PUT', path: `${P}/deployment-process`, body: proc({ a: 1 }), status: 400, message: /steps must be a list/ },
    { name: 'process bad windowSize', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({ windowSize: '0%' })]), status: 400, message: /steps\[0\]\.windowSize/ },
    { name: 'process bad maxFailures', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({ maxFailures: 'half' })]), status: 400, message: /steps\[0\]\.maxFailures/ },
    { name: 'process bad condition', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({ condition: 'maybe' })]), status: 400, message: /steps\[0\]\.condition/ },
    { name: 'process bad startTrigger', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({ startTrigger: 'now' })]), status: 400, message: /steps\[0\]\.startTrigger/ },
    { name: 'process bad action type', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({}, { type: 'rm -rf' })]), status: 400, message: /steps\[0\]\.actions\[0\]\.type/ },
    { name: 'process script missing', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({}, { script: '' })]), status: 400, message: /steps\[0\]\.actions\[0\]\.script/ },
    { name: 'process package id missing', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({}, { type: 'package' })]), status: 400, message: /packageId is required/ },
    { name: 'process package id path', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({}, { type: 'package', packageId: '../etc' })]), status: 400, message: /packageId must be/ },
    { name: 'process duplicate steps', method: 'PUT', path: `${P}/deployment-process`, body: proc([step(), step()]), status: 400, message: /steps\[1\]\.name/ },
    { name: 'process unknown field', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({ parallel: true })]), status: 400, message: /unknown field/ },
    { name: 'process negative timeout', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({}, { timeoutSeconds: -1 })]), status: 400, message: /timeoutSeconds/ },
    { name: 'process retries text', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({}, { retries: 'twice' })]), status: 400, message: /retries/ },
    { name: 'process intervention on targets', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({}, { type: 'manual-intervention' })]), status: 400, message: /runs on the server/ },
    { name: 'process script on the server', method: 'PUT', path: `${P}/deployment-process`, body: proc([{ name: 'X', actions: [{ name: 'a', type: 'script', script: 'x' }] }]), status: 400, message: /needs the step to have targetRoles/ },
    { name: 'process unknown channel', method: 'PUT', path: `${P}/deployment-process`, body: proc([step({}, { channelIds: ['nope'] })]), status: 400, message: /unknown channel/ },
    { name: 'variables not a list', method: 'PUT', path: `${P}/variables`, body: { variables: 'x' }, status: 400, message: /variables must be a list/ },
    { name: 'variable bad name', method: 'PUT', path: `${P}/variables`, body: { variables: [{ name: '$(reboot)', value: 'x' }] }, status: 400, message: /variables\[0\]\.name/ },
    { name: 'variable reserved name', method: 'PUT', path: `${P}/variables`, body: { variables: [{ name: 'Cuttle.Machine.Name', value: 'x' }] }, status: 400, message: /reserved/ },
    { name: 'variable value not text', method: 'PUT', path: `${P}/variables`, body: { variables: [{ name: 'A', value: 1 }] }, status: 400, message: /variables\[0\]\.value/ },
    { name: 'variable unknown scope', method: 'PUT', path: `${P}/variables`, body: { variables: [{ name: 'A', value: '1', scope: { tenant: ['x'] } }] }, status: 400, message: /unknown field/ },
    { name: 'variables stale version', method: 'PUT', path: `${P}/variables`, body: { variables: [], version: 99 }, status: 409 },
    { name: 'channel without name', method: 'POST', path: `${P}/channels`, body: {}, status: 400, message: /name/ },
    { name: 'channel duplicate', method: 'POST', path: `${P}/channels`, body: { name: 'Default' }, status: 409 },
    { name: 'package bad id', method: 'POST', path: '/api/packages/bad%20id/1.0.0', raw: Buffer.from('x'), headers: gz, status: 400, message: /packageId must be/ },
    { name: 'package bad version', method: 'POST', path: '/api/packages/app/1.0%3B0', raw: Buffer.from('x'), headers: gz, status: 400, message: /version must be/ },
    { name: 'package wrong content type', method: 'POST', path: '/api/packages/app/1.0.0', raw: Buffer.from('x'), headers: { 'content-type': 'text/plain' }, status: 415 },
    { name: 'package empty', method: 'POST', path: '/api/packages/app/1.0.0', raw: Buffer.alloc(0), headers: gz, status: 400, message: /empty/ },
    { name: 'package not gzip', method: 'POST', path: '/api/packages/app/1.0.0', raw: Buffer.from('this is not a tarball'), headers: gz, status: 400, message: /not a valid \.tar\.gz/ },
    { name: 'package over the size limit', method: 'POST', path: '/api/packages/app/9.9.9', raw: Buffer.alloc(2 * 1024 * 1024, 7), headers: gz, status: 413 },
    { name: 'package checksum mismatch', method: 'POST', path: '/api/packages/app/1.0.1', raw: rawTar([{ name: 'ok.txt', content: 'ok' }]), headers: { ...gz, 'x-checksum-sha256': 'a'.repeat(64) }, status: 400, message: /X-Checksum-Sha256/ },
    { name: 'release without project', method: 'POST', path: '/api/releases', body: { version: '1' }, status: 400, message: /projectId/ },
    { name: 'release unknown project', method: 'POST', path: '/api/releases', body: { projectId: 'Nope', version: '1' }, status: 400, message: /unknown project/ },
    { name: 'release bad version', method: 'POST', path: '/api/releases', body: { projectId: project.id, version: '1 0' }, status: 400, message: /version must be/ },
    { name: 'release duplicate version', method: 'POST', path: '/api/releases', body: { projectId: project.id, version: '1.0.0' }, status: 409 },
    { name: 'release unknown channel', method: 'POST', path: '/api/releases', body: { projectId: project.id, version: '2', channelId: 'Nope' }, status: 400, message: /channelId/ },
    { name: 'release packages not an object', method: 'POST', path: '/api/releases', body: { projectId: project.id, version: '2', packages: ['web'] }, status: 400, message: /packages must be an object/ },
    { name: 'release unknown package', method: 'POST', path: '/api/releases', body: { projectId: project.id, version: '2', packages: { web: '1.0' } }, status: 400, message: /packages\.web/ },
    { name: 'unknown release', method: 'GET', path: `/api/releases/${UNKNOWN}`, status: 404 },
    { name: 'deployment unknown release', method: 'POST', path: '/api/deployments', body: { releaseId: UNKNOWN, environmentId: env }, status: 400, message: /releaseId names an unknown release/ },
    { name: 'deployment malformed release', method: 'POST', path: '/api/deployments', body: { releaseId: "' OR 1=1 --", environmentId: env }, status: 400, message: /releaseId/ },
    { name: 'deployment unknown environment', method: 'POST', path: '/api/deployments', body: { releaseId: release.id, environmentId: 'Mars' }, status: 400, message: /environmentId names an unknown environment/ },
    { name: 'deployment unknown machine', method: 'POST', path: '/api/deployments', body: { releaseId: release.id, environmentId: env, specificMachineIds: [UNKNOWN] }, status: 400, message: /specificMachineIds/ },
    { name: 'deployment machines not a list', method: 'POST', path: '/api/deployments', body: { releaseId: release.id, environmentId: env, excludedMachineIds: 'all' }, status: 400, message: /excludedMachineIds/ },
    { name: 'unknown deployment', method: 'GET', path: `/api/deployments/${UNKNOWN}`, status: 404 },
    { name: 'log negative cursor', method: 'GET', path: `/api/deployments/${UNKNOWN}/log?afterSeq=-1`, status: 400, message: /afterSeq/ },
    { name: 'log limit zero', method: 'GET', path: `/api/deployments/${UNKNOWN}/log?limit=0`, status: 400, message: /limit/ },
    { name: 'log limit text', method: 'GET', path: `/api/deployments/${UNKNOWN}/log?limit=all`, status: 400, message: /limit/ },
    { name: 'cancel unknown deployment', method: 'POST', path: `/api/deployments/${UNKNOWN}/cancel`, status: 404 },
    { name: 'preview without environment', method: 'GET', path: `/api/deployments/preview?releaseId=${release.id}`, status: 400, message: /environmentId is required/ },
    { name: 'submit unknown interruption', method: 'POST', path: `/api/interruptions/${UNKNOWN}/submit`, body: { result: 'proceed' }, status: 404 },
    { name: 'submit without result', method: 'POST', path: `/api/interruptions/${UNKNOWN}/submit`, body: {}, status: 400, message: /result/ },
    { name: 'interruptions bad state', method: 'GET', path: '/api/interruptions?state=whatever', status: 400, message: /state must be one of/ },
    { name: 'interruptions bad deployment', method: 'GET', path: '/api/interruptions?deploymentId=x', status: 400, message: /deploymentId/ },
    { name: 'API key without name', method: 'POST', path: '/api/api-keys', body: {}, status: 400, message: /name/ },
    { name: 'API key bad name', method: 'POST', path: '/api/api-keys', body: { name: '<script>' }, status: 400, message: /name must be/ },
    { name: 'API key duplicate', method: 'POST', path: '/api/api-keys', body: { name: 'taken' }, status: 409 },
    { name: 'revoke unknown API key', method: 'DELETE', path: `/api/api-keys/${UNKNOWN}`, status: 404 },
  ];
}

describe('REST', () => {
  // At least 60 distinct bad requests: each answered with the expected 4xx naming the problem, none with a 5xx.
  it('answers every bad request with a 4xx naming the field', async () => {
    const bad = badInputs();
    expect(new Set(bad.map((b) => b.name)).size).toBe(bad.length);
    expect(bad.length).toBeGreaterThanOrEqual(60);
    const wrong: string[] = [];
    for (const b of bad) {
      const r = await srv.request(b.method, b.path, b.body, { key: b.key, raw: b.raw, headers: b.headers });
      tally.tried++;
      if (r.status >= 400 && r.status < 500) tally.fourxx++;
      if (r.status >= 500) tally.fivexx++;
      const msg = Array.isArray(r.body?.message) ? r.body.message.join('; ') : String(r.body?.message ?? '');
      if (r.status !== b.status || (b.message && !b.message.test(msg))) wrong.push(`${b.name}: ${r.status} ${msg.slice(0, 200)}`);
    }
    expect(wrong).toEqual([]);
    expect(tally.fivexx).toBe(0);
    expect((await srv.request('GET', '/api/health', undefined, { key: null })).status).toBe(200);
  });

  // Tarballs whose entries would land outside their folder are refused at upload, with the entry named.
  it.each([
    ['a parent-directory entry', [{ name: '../escape.txt', content: 'x' }], /escapes the package folder/],
    ['an absolute path', [{ name: '/tmp/cuttle-abs.txt', content: 'x' }], /escapes the package folder/],
    ['a nested parent-directory entry', [{ name: 'a/../../escape.txt', content: 'x' }], /escapes the package folder/],
    ['a symlink pointing out', [{ name: 'link', type: '2', link: '../../outside' }], /points outside the package folder/],
    ['an absolute symlink', [{ name: 'link', type: '2', link: '/etc' }], /points outside the package folder/],
    ['a hard link', [{ name: 'passwd', type: '1', link: '/etc/passwd' }], /hard link/],
    ['a character device', [{ name: 'dev', type: '3' }], /may not contain/],
    ['a fifo', [{ name: 'fifo', type: '6' }], /may not contain/],
  ])('refuses a tarball with %s', async (_name, entries, message) => {
    tally.tarTried++;
    const r = await srv.request('POST', `/api/packages/evil/${tally.tarTried}.0.0`, undefined, { raw: rawTar(entries as any), headers: gz });
    if (r.status === 400) tally.tarRefused++;
    expect(r.status).toBe(400);
    expect(r.body.message).toMatch(message);
  });
});

describe('agent protocol', () => {
  let socket: Socket;
  const errors: string[] = [];

  beforeAll(async () => {
    // A real, registered machine identity, driven by hand to say what a real agent never would.
    const { token } = await srv.must('POST', '/api/registration-tokens', { environmentIds: [env], roles: ['h'] });
    const k = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
    const c = forge.pki.createCertificationRequest();
    c.publicKey = forge.pki.publicKeyFromPem(k.publicKey);
    c.setSubject([{ name: 'commonName', value: 'hand' }]);
    c.sign(forge.pki.privateKeyFromPem(k.privateKey), forge.md.sha256.create());
    const reg = await srv.must('POST', '/api/agents/register', { token, name: 'hand', roles: ['h'], csr: forge.pki.certificationRequestToPem(c) }, [201], { key: null });
    socket = io(`https://127.0.0.1:${srv.agentPort}`, { transports: ['websocket'], reconnection: false, ca: srv.ca, key: k.privateKey, cert: reg.certificate });
    socket.on('server:message', (m: any) => {
      if (m?.type === 'protocol.error') errors.push(m.message);
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', reject);
    });
  });

  afterAll(() => socket?.close());

  // Each malformed message gets a protocol error naming the field; the connection and the server stay up.
  it('answers malformed messages with protocol errors', async () => {
    const bad: unknown[] = [
      { type: 'lease.log', leaseId: 'x', lines: [{ seq: 1, at: 'now', level: 'info', text: 'before hello' }] },
      'a string',
      42,
      null,
      [],
      { type: 'unknown' },
      { type: 'hello' },
      { type: 'hello', protocolVersion: '1', agentVersion: 'x', leases: [] },
      { type: 'lease.log', leaseId: 'x', lines: [] },
      { type: 'lease.log', leaseId: 'x', lines: [{ seq: -1, at: 'now', level: 'info', text: 'x' }] },
      { type: 'lease.log', leaseId: 'x', lines: [{ seq: 1, at: 'now', level: 'shout', text: 'x' }] },
      { type: 'lease.log', leaseId: 'x', lines: Array.from({ length: 2001 }, (_, i) => ({ seq: i + 1, at: 'now', level: 'info', text: 'x' })) },
      { type: 'heartbeat', leaseIds: 'all' },
      { type: 'lease.result', leaseId: 'x', state: 'awesome', actions: [], lastLogSeq: 0, at: 'now' },
      { type: 'lease.action', leaseId: 'x', actionIndex: -1, state: 'running', at: 'now' },
      { type: 'lease.output', leaseId: 'x', actionIndex: 0, name: '', value: 'x', sensitive: false },
    ];
    for (const m of bad) socket.emit('agent:message', m);
    tally.socketTried += bad.length;
    await waitFor('a protocol error for every bad message', async () => errors.length >= bad.length, 10_000, 50);
    tally.socketRefused += errors.length;
    expect(errors[0]).toBe('send hello first');
    expect(errors.slice(1).every((e) => e.startsWith('invalid message: '))).toBe(true);
    expect(errors).toEqual(expect.arrayContaining([expect.stringContaining('protocolVersion'), expect.stringContaining('lines.0.level'), expect.stringContaining('leaseIds')]));
    // Still connected, and a proper hello is still welcomed; messages about leases it does not hold change nothing.
    const welcome = new Promise<any>((resolve) => socket.on('server:message', (m: any) => m?.type === 'welcome' && resolve(m)));
    socket.emit('agent:message', { type: 'hello', protocolVersion: 1, agentVersion: 'test', leases: [] });
    expect((await welcome).name).toBe('hand');
    socket.emit('agent:message', { type: 'lease.result', leaseId: UNKNOWN, state: 'success', actions: [], lastLogSeq: 0, at: 'now' });
    expect(socket.connected).toBe(true);
  });

  // A message over the size limit closes that connection only; the server keeps serving.
  it('drops a connection that sends an oversized message', async () => {
    const closed = new Promise<string>((resolve) => socket.once('disconnect', (reason) => resolve(reason)));
    socket.emit('agent:message', { type: 'lease.log', leaseId: 'x', lines: [{ seq: 1, at: 'now', level: 'info', text: 'x'.repeat(5 * 1024 * 1024) }] });
    tally.socketTried++;
    expect(await closed).toBe('transport close');
    tally.socketRefused++;
    expect((await srv.request('GET', '/api/health', undefined, { key: null })).status).toBe(200);
  });
});

describe('logs', () => {
  // An over-long line is cut and marked; a flood of 100,000 lines is slowed by back-pressure, stored completely, in
  // order, and the server stays responsive.
  it('truncates an oversized line and survives a log flood without losing lines', async () => {
    const { token } = await srv.must('POST', '/api/registration-tokens', { environmentIds: [env], roles: ['h'] });
    const agent = startAgent(srv, { name: 'flood-1', roles: ['h'], environments: ['Hostile'], token });
    await waitOnline(srv, ['flood-1']);
    const p = await createProject(srv, 'Flood', [
      { name: 'Loud', targetRoles: ['h'], actions: [{ name: 'a', type: 'script', script: "head -c 40000 /dev/zero | tr '\\0' x; echo\nseq 1 100000 | sed 's/^/flood line /'" }] },
    ]);
    const machines = await srv.must('GET', '/api/machines');
    const flood = machines.find((m: any) => m.name === 'flood-1');
    const dep = await startDeployment(srv, p.id, env, { deployment: { specificMachineIds: [flood.id] } });
    const started = Date.now();
    let healthChecks = 0;
    while (!['success', 'failed'].includes((await srv.must('GET', `/api/deployments/${dep.id}`)).state)) {
      expect((await srv.request('GET', '/api/health', undefined, { key: null })).status).toBe(200);
      healthChecks++;
      if (Date.now() - started > 120_000) throw new Error('flood did not finish in 2 minutes');
      await new Promise((r) => setTimeout(r, 200));
    }
    const d = await srv.must('GET', `/api/deployments/${dep.id}`);
    expect(d.state).toBe('success');
    expect(healthChecks).toBeGreaterThan(0);
    const log = await srv.readLog(dep.id);
    const long = log.find((e: any) => e.text.startsWith('xxxx'));
    expect(long.text).toHaveLength(16 * 1024 + ' …[truncated]'.length);
    expect(long.text.endsWith(' …[truncated]')).toBe(true);
    const nums = log.filter((e: any) => e.text.startsWith('flood line ')).map((e: any) => Number(e.text.slice(11)));
    expect(nums.length).toBe(100_000);
    expect(nums.every((v: number, i: number) => v === i + 1)).toBe(true);
    await agent.stop();
    const pkg = await makeTarGz(srv.dir, { 'a.txt': 'a' });
    expect((await srv.request('POST', '/api/packages/after-flood/1.0.0', undefined, { raw: pkg, headers: gz })).status).toBe(201);
  });
});
