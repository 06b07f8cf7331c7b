/**
 * Fault suite, hostile input: bad REST bodies and parameters, oversized bodies and packages, tarballs that try to
 * escape their folder, malformed and oversized socket messages, oversized log lines and a log flood. Every bad input
 * gets a 4xx (or a protocol error) naming what is wrong, and the server keeps serving.
 *
 * The second round (`describe('second round')`) adds the classes a hostile client found past the first: JSON nested
 * ten thousand deep, NUL characters anywhere, numbers past PostgreSQL's ranges in queries, corrupted CSRs,
 * collections large enough to stall the event loop, packages the agent would refuse (links escaping through links,
 * long names, unpacked size), numbers of the process model out of range, and an agent failure too long to report.
 * Each class is tried in several variants while /api/health is polled, and counted in the summary line.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import forge from 'node-forge';
import { io, type Socket } from 'socket.io-client';
import { ERROR_STATUS, type ErrorCode } from '#shared/api/errors.js';
import {
  createProject,
  makeTarGz,
  startAgent,
  startDeployment,
  startServer,
  stopAll,
  waitFor,
  waitOnline,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
let env: string;
let project: any;
let release: any;
const tally = { tried: 0, fourxx: 0, fivexx: 0, socketTried: 0, socketRefused: 0, tarTried: 0, tarRefused: 0 };
/** The second round, by class: variants tried, and refused as they should be (4xx naming the field, or as said). */
const classes: Record<string, { tried: number; refused: number }> = {};
const UNKNOWN = '00000000-0000-4000-8000-000000000000';

beforeAll(async () => {
  srv = await startServer({ env: { CUTTLE_MAX_PACKAGE_MB: '1', CUTTLE_MAX_UNPACKED_MB: '2' } });
  env = (await srv.must('POST', '/api/environments', { name: 'Hostile' })).id;
  project = await createProject(srv, 'Target', [
    { name: 'S', targetRoles: ['h'], actions: [{ name: 'a', type: 'script', script: 'true' }] },
  ]);
  release = await srv.must('POST', '/api/releases', { projectId: project.id, version: '1.0.0' });
  await srv.must('POST', '/api/api-keys', { name: 'taken' });
}, 120_000);

afterAll(async () => {
  await srv?.stop();
  await stopAll();
  process.stdout.write(
    `\nfault summary [hostile input]: bad inputs tried ${tally.tried}, answered 4xx ${tally.fourxx}, answered 5xx ${tally.fivexx}; ` +
      `bad socket messages ${tally.socketTried}, refused ${tally.socketRefused}; tar escapes ${tally.tarTried}, refused ${tally.tarRefused}; ` +
      `second round: ${Object.entries(classes)
        .map(([c, n]) => `${c} ${n.refused}/${n.tried}`)
        .join(', ')}\n`,
  );
});

type Bad = {
  name: string;
  method: string;
  path: string;
  body?: unknown;
  raw?: Buffer;
  headers?: Record<string, string>;
  key?: string | null;
  status: number;
  message?: RegExp;
  code?: ErrorCode;
};

const gz = { 'content-type': 'application/gzip' };
const step = (over: Record<string, unknown> = {}, action: Record<string, unknown> = {}) => ({
  name: 'S',
  targetRoles: ['h'],
  actions: [{ name: 'a', type: 'script', script: 'true', ...action }],
  ...over,
});
const proc = (steps: unknown) => ({ version: 2, steps });

/** A tar.gz built from raw ustar headers, so entries can say anything a hostile archive would. */
function rawTar(entries: Array<{ name: string; type?: string; link?: string; content?: string | Buffer }>): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.isBuffer(e.content) ? e.content : Buffer.from(e.content ?? '');
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
    {
      name: 'no API key',
      method: 'GET',
      path: '/api/projects',
      key: null,
      status: 401,
      message: /X-Api-Key header is required/,
      code: 'unauthorized',
    },
    { name: 'wrong API key', method: 'GET', path: '/api/projects', key: 'ck_nope', status: 401 },
    {
      name: 'invalid JSON',
      method: 'POST',
      path: '/api/environments',
      raw: Buffer.from('{"name": '),
      headers: { 'content-type': 'application/json' },
      status: 400,
      message: /not valid JSON/,
    },
    {
      name: 'JSON over 5 MB',
      method: 'POST',
      path: '/api/environments',
      raw: Buffer.from(JSON.stringify({ name: 'x'.repeat(6 * 1024 * 1024) })),
      headers: { 'content-type': 'application/json' },
      status: 413,
    },
    {
      name: 'environment without name',
      method: 'POST',
      path: '/api/environments',
      body: {},
      status: 400,
      message: /name/,
    },
    {
      name: 'environment name a number',
      method: 'POST',
      path: '/api/environments',
      body: { name: 42 },
      status: 400,
      message: /name must be a string/,
    },
    {
      name: 'environment name empty',
      method: 'POST',
      path: '/api/environments',
      body: { name: '' },
      status: 400,
      message: /name should not be empty/,
    },
    {
      name: 'environment name too long',
      method: 'POST',
      path: '/api/environments',
      body: { name: 'x'.repeat(101) },
      status: 400,
      message: /name must be shorter/,
    },
    {
      name: 'environment unknown field',
      method: 'POST',
      path: '/api/environments',
      body: { name: 'x', color: 'red' },
      status: 400,
      message: /property color should not exist/,
    },
    {
      name: 'environment duplicate',
      method: 'POST',
      path: '/api/environments',
      body: { name: 'Hostile' },
      status: 409,
      code: 'already_exists',
    },
    {
      name: 'environment body is an array',
      method: 'POST',
      path: '/api/environments',
      body: [{ name: 'x' }],
      status: 400,
    },
    {
      name: 'guidedFailure not boolean',
      method: 'POST',
      path: '/api/environments',
      body: { name: 'y', guidedFailure: 'yes' },
      status: 400,
      message: /guidedFailure/,
    },
    { name: 'unknown environment id', method: 'GET', path: `/api/environments/${UNKNOWN}`, status: 404 },
    { name: 'malformed environment id', method: 'GET', path: '/api/environments/../../etc', status: 404 },
    {
      name: 'token without environments',
      method: 'POST',
      path: '/api/registration-tokens',
      body: {},
      status: 400,
      message: /environmentIds/,
    },
    {
      name: 'token environments not a list',
      method: 'POST',
      path: '/api/registration-tokens',
      body: { environmentIds: 'Hostile' },
      status: 400,
      message: /environmentIds/,
    },
    {
      name: 'token unknown environment',
      method: 'POST',
      path: '/api/registration-tokens',
      body: { environmentIds: ['Nowhere'] },
      status: 400,
      message: /environmentIds names an unknown environment "Nowhere"/,
      code: 'unknown_reference',
    },
    {
      name: 'token empty environments',
      method: 'POST',
      path: '/api/registration-tokens',
      body: { environmentIds: [] },
      status: 400,
      message: /at least one/,
    },
    {
      name: 'token bad role',
      method: 'POST',
      path: '/api/registration-tokens',
      body: { environmentIds: [env], roles: ['a b'] },
      status: 400,
      message: /roles/,
    },
    {
      name: 'token expiry zero',
      method: 'POST',
      path: '/api/registration-tokens',
      body: { environmentIds: [env], expiresInSeconds: 0 },
      status: 400,
      message: /expiresInSeconds/,
    },
    {
      name: 'token maxUses zero',
      method: 'POST',
      path: '/api/registration-tokens',
      body: { environmentIds: [env], maxUses: 0 },
      status: 400,
      message: /maxUses/,
    },
    {
      name: 'token maxUses text',
      method: 'POST',
      path: '/api/registration-tokens',
      body: { environmentIds: [env], maxUses: 'many' },
      status: 400,
      message: /maxUses/,
    },
    {
      name: 'register without token',
      method: 'POST',
      path: '/api/agents/register',
      key: null,
      body: { name: 'x', csr: 'x' },
      status: 400,
      message: /token/,
    },
    {
      name: 'register bad token',
      method: 'POST',
      path: '/api/agents/register',
      key: null,
      body: { token: 'nope', name: 'x', csr: 'x' },
      status: 401,
      code: 'token_invalid',
    },
    {
      name: 'register bad name',
      method: 'POST',
      path: '/api/agents/register',
      key: null,
      body: { token: 'nope', name: 'a b', csr: 'x' },
      status: 400,
      message: /name must be letters/,
    },
    {
      name: 'register without csr',
      method: 'POST',
      path: '/api/agents/register',
      key: null,
      body: { token: 'nope', name: 'x' },
      status: 400,
      message: /csr/,
    },
    { name: 'unknown machine', method: 'GET', path: `/api/machines/${UNKNOWN}`, status: 404, code: 'not_found' },
    {
      name: 'malformed machine id',
      method: 'PATCH',
      path: '/api/machines/1;DROP TABLE machines',
      body: { disabled: true },
      status: 404,
    },
    { name: 'revoke unknown machine', method: 'DELETE', path: `/api/machines/${UNKNOWN}`, status: 404 },
    {
      name: 'project without name',
      method: 'POST',
      path: '/api/projects',
      body: { description: 'x' },
      status: 400,
      message: /name/,
    },
    { name: 'project duplicate', method: 'POST', path: '/api/projects', body: { name: 'Target' }, status: 409 },
    {
      name: 'project bad default timeout',
      method: 'POST',
      path: '/api/projects',
      body: { name: 'T2', defaultTimeoutSeconds: -5 },
      status: 400,
      message: /defaultTimeoutSeconds/,
    },
    { name: 'unknown project', method: 'GET', path: '/api/projects/no-such-project', status: 404 },
    {
      name: 'process stale version',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: { version: 1, steps: [] },
      status: 409,
      message: /stale/,
      code: 'stale_version',
    },
    {
      name: 'process without version',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: { steps: [] },
      status: 400,
      message: /version/,
    },
    {
      name: 'process steps not a list',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc({ a: 1 }),
      status: 400,
      message: /steps must be a list/,
    },
    {
      name: 'process bad windowSize',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({ windowSize: '0%' })]),
      status: 400,
      message: /steps\[0\]\.windowSize/,
      code: 'validation_failed',
    },
    {
      name: 'process bad maxFailures',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({ maxFailures: 'half' })]),
      status: 400,
      message: /steps\[0\]\.maxFailures/,
    },
    {
      name: 'process bad condition',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({ condition: 'maybe' })]),
      status: 400,
      message: /steps\[0\]\.condition/,
    },
    {
      name: 'process bad startTrigger',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({ startTrigger: 'now' })]),
      status: 400,
      message: /steps\[0\]\.startTrigger/,
    },
    {
      name: 'process bad action type',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({}, { type: 'rm -rf' })]),
      status: 400,
      message: /steps\[0\]\.actions\[0\]\.type/,
    },
    {
      name: 'process script missing',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({}, { script: '' })]),
      status: 400,
      message: /steps\[0\]\.actions\[0\]\.script/,
    },
    {
      name: 'process package id missing',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({}, { type: 'package' })]),
      status: 400,
      message: /packageId is required/,
    },
    {
      name: 'process package id path',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({}, { type: 'package', packageId: '../etc' })]),
      status: 400,
      message: /packageId must be/,
    },
    {
      name: 'process duplicate steps',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step(), step()]),
      status: 400,
      message: /steps\[1\]\.name/,
    },
    {
      name: 'process unknown field',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({ parallel: true })]),
      status: 400,
      message: /unknown field/,
    },
    {
      name: 'process negative timeout',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({}, { timeoutSeconds: -1 })]),
      status: 400,
      message: /timeoutSeconds/,
    },
    {
      name: 'process retries text',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({}, { retries: 'twice' })]),
      status: 400,
      message: /retries/,
    },
    {
      name: 'process rollout policy on the server',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([{ name: 'X', batches: [1], actions: [{ name: 'a', type: 'manual-intervention' }] }]),
      status: 400,
      message: /steps\[0\]\.batches needs the step to have targetRoles/,
    },
    {
      name: 'process batches not sizes',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({ batches: [0, '150%', 'x'] })]),
      status: 400,
      message: /steps\[0\]\.batches\[0\] must be a positive integer/,
    },
    {
      name: 'process approval timeout without approvals',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({ approvalTimeoutSeconds: 5 })]),
      status: 400,
      message: /approvalTimeoutSeconds needs approveEachBatch: true/,
    },
    {
      name: 'process health check without a script',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({ healthCheck: { script: '  ', retries: -1 } })]),
      status: 400,
      message: /healthCheck\.script must not be empty/,
    },
    {
      name: 'process spreadBy not a label',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({ spreadBy: 'zone name' })]),
      status: 400,
      message: /spreadBy must be a label name/,
    },
    {
      name: 'process script on the server',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([{ name: 'X', actions: [{ name: 'a', type: 'script', script: 'x' }] }]),
      status: 400,
      message: /needs the step to have targetRoles/,
    },
    {
      name: 'process unknown channel',
      method: 'PUT',
      path: `${P}/deployment-process`,
      body: proc([step({}, { channelIds: ['nope'] })]),
      status: 400,
      message: /unknown channel/,
    },
    {
      name: 'variables not a list',
      method: 'PUT',
      path: `${P}/variables`,
      body: { variables: 'x' },
      status: 400,
      message: /variables must be a list/,
    },
    {
      name: 'variable bad name',
      method: 'PUT',
      path: `${P}/variables`,
      body: { variables: [{ name: '$(reboot)', value: 'x' }] },
      status: 400,
      message: /variables\[0\]\.name/,
    },
    {
      name: 'variable reserved name',
      method: 'PUT',
      path: `${P}/variables`,
      body: { variables: [{ name: 'Cuttle.Machine.Name', value: 'x' }] },
      status: 400,
      message: /reserved/,
    },
    {
      name: 'variable value not text',
      method: 'PUT',
      path: `${P}/variables`,
      body: { variables: [{ name: 'A', value: 1 }] },
      status: 400,
      message: /variables\[0\]\.value/,
    },
    {
      name: 'variable unknown scope',
      method: 'PUT',
      path: `${P}/variables`,
      body: { variables: [{ name: 'A', value: '1', scope: { tenant: ['x'] } }] },
      status: 400,
      message: /unknown field/,
    },
    {
      name: 'variables stale version',
      method: 'PUT',
      path: `${P}/variables`,
      body: { variables: [], version: 99 },
      status: 409,
    },
    { name: 'channel without name', method: 'POST', path: `${P}/channels`, body: {}, status: 400, message: /name/ },
    { name: 'channel duplicate', method: 'POST', path: `${P}/channels`, body: { name: 'Default' }, status: 409 },
    {
      name: 'package bad id',
      method: 'POST',
      path: '/api/packages/bad%20id/1.0.0',
      raw: Buffer.from('x'),
      headers: gz,
      status: 400,
      message: /packageId must be/,
    },
    {
      name: 'package bad version',
      method: 'POST',
      path: '/api/packages/app/1.0%3B0',
      raw: Buffer.from('x'),
      headers: gz,
      status: 400,
      message: /version must be/,
    },
    {
      name: 'package wrong content type',
      method: 'POST',
      path: '/api/packages/app/1.0.0',
      raw: Buffer.from('x'),
      headers: { 'content-type': 'text/plain' },
      status: 415,
      code: 'unsupported_media_type',
    },
    {
      name: 'package empty',
      method: 'POST',
      path: '/api/packages/app/1.0.0',
      raw: Buffer.alloc(0),
      headers: gz,
      status: 400,
      message: /empty/,
    },
    {
      name: 'package not gzip',
      method: 'POST',
      path: '/api/packages/app/1.0.0',
      raw: Buffer.from('this is not a tarball'),
      headers: gz,
      status: 400,
      message: /not a valid \.tar\.gz/,
      code: 'package_refused',
    },
    {
      name: 'package over the size limit',
      method: 'POST',
      path: '/api/packages/app/9.9.9',
      raw: Buffer.alloc(2 * 1024 * 1024, 7),
      headers: gz,
      status: 413,
      code: 'payload_too_large',
    },
    {
      name: 'package checksum mismatch',
      method: 'POST',
      path: '/api/packages/app/1.0.1',
      raw: rawTar([{ name: 'ok.txt', content: 'ok' }]),
      headers: { ...gz, 'x-checksum-sha256': 'a'.repeat(64) },
      status: 400,
      message: /X-Checksum-Sha256/,
      code: 'checksum_mismatch',
    },
    {
      name: 'release without project',
      method: 'POST',
      path: '/api/releases',
      body: { version: '1' },
      status: 400,
      message: /projectId/,
    },
    {
      name: 'release unknown project',
      method: 'POST',
      path: '/api/releases',
      body: { projectId: 'Nope', version: '1' },
      status: 400,
      message: /unknown project/,
    },
    {
      name: 'release bad version',
      method: 'POST',
      path: '/api/releases',
      body: { projectId: project.id, version: '1 0' },
      status: 400,
      message: /version must be/,
    },
    {
      name: 'release duplicate version',
      method: 'POST',
      path: '/api/releases',
      body: { projectId: project.id, version: '1.0.0' },
      status: 409,
    },
    {
      name: 'release unknown channel',
      method: 'POST',
      path: '/api/releases',
      body: { projectId: project.id, version: '2', channelId: 'Nope' },
      status: 400,
      message: /channelId/,
    },
    {
      name: 'release packages not an object',
      method: 'POST',
      path: '/api/releases',
      body: { projectId: project.id, version: '2', packages: ['web'] },
      status: 400,
      message: /packages must be an object/,
    },
    {
      name: 'release unknown package',
      method: 'POST',
      path: '/api/releases',
      body: { projectId: project.id, version: '2', packages: { web: '1.0' } },
      status: 400,
      message: /packages\.web/,
    },
    { name: 'unknown release', method: 'GET', path: `/api/releases/${UNKNOWN}`, status: 404 },
    {
      name: 'deployment unknown release',
      method: 'POST',
      path: '/api/deployments',
      body: { releaseId: UNKNOWN, environmentId: env },
      status: 400,
      message: /releaseId names an unknown release/,
    },
    {
      name: 'deployment malformed release',
      method: 'POST',
      path: '/api/deployments',
      body: { releaseId: "' OR 1=1 --", environmentId: env },
      status: 400,
      message: /releaseId/,
    },
    {
      name: 'deployment unknown environment',
      method: 'POST',
      path: '/api/deployments',
      body: { releaseId: release.id, environmentId: 'Mars' },
      status: 400,
      message: /environmentId names an unknown environment/,
    },
    {
      name: 'deployment unknown machine',
      method: 'POST',
      path: '/api/deployments',
      body: { releaseId: release.id, environmentId: env, specificMachineIds: [UNKNOWN] },
      status: 400,
      message: /specificMachineIds/,
    },
    {
      name: 'deployment machines not a list',
      method: 'POST',
      path: '/api/deployments',
      body: { releaseId: release.id, environmentId: env, excludedMachineIds: 'all' },
      status: 400,
      message: /excludedMachineIds/,
    },
    { name: 'unknown deployment', method: 'GET', path: `/api/deployments/${UNKNOWN}`, status: 404 },
    {
      name: 'log negative cursor',
      method: 'GET',
      path: `/api/deployments/${UNKNOWN}/log?afterSeq=-1`,
      status: 400,
      message: /afterSeq/,
    },
    {
      name: 'log limit zero',
      method: 'GET',
      path: `/api/deployments/${UNKNOWN}/log?limit=0`,
      status: 400,
      message: /limit/,
    },
    {
      name: 'log limit text',
      method: 'GET',
      path: `/api/deployments/${UNKNOWN}/log?limit=all`,
      status: 400,
      message: /limit/,
    },
    { name: 'cancel unknown deployment', method: 'POST', path: `/api/deployments/${UNKNOWN}/cancel`, status: 404 },
    {
      name: 'preview without environment',
      method: 'GET',
      path: `/api/deployments/preview?releaseId=${release.id}`,
      status: 400,
      message: /environmentId is required/,
    },
    {
      name: 'submit unknown interruption',
      method: 'POST',
      path: `/api/interruptions/${UNKNOWN}/submit`,
      body: { result: 'proceed' },
      status: 404,
    },
    {
      name: 'submit without result',
      method: 'POST',
      path: `/api/interruptions/${UNKNOWN}/submit`,
      body: {},
      status: 400,
      message: /result/,
    },
    {
      name: 'interruptions bad state',
      method: 'GET',
      path: '/api/interruptions?state=whatever',
      status: 400,
      message: /state must be one of/,
    },
    {
      name: 'interruptions bad deployment',
      method: 'GET',
      path: '/api/interruptions?deploymentId=x',
      status: 400,
      message: /deploymentId/,
    },
    { name: 'API key without name', method: 'POST', path: '/api/api-keys', body: {}, status: 400, message: /name/ },
    {
      name: 'API key bad name',
      method: 'POST',
      path: '/api/api-keys',
      body: { name: '<script>' },
      status: 400,
      message: /name must be/,
    },
    {
      name: 'API key duplicate',
      method: 'POST',
      path: '/api/api-keys',
      body: { name: 'taken' },
      status: 409,
      code: 'already_exists',
    },
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
      if (r.status !== b.status || (b.message && !b.message.test(msg)))
        wrong.push(`${b.name}: ${r.status} ${msg.slice(0, 200)}`);
      // Every error says what went wrong as a code whose status is the table's (shared/src/api/errors.ts).
      if (ERROR_STATUS[r.body?.code as ErrorCode] !== r.status || (b.code && r.body.code !== b.code))
        wrong.push(`${b.name}: code ${r.body?.code} with ${r.status}`);
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
    [
      'a symlink pointing out',
      [{ name: 'link', type: '2', link: '../../outside' }],
      /points outside the package folder/,
    ],
    ['an absolute symlink', [{ name: 'link', type: '2', link: '/etc' }], /points outside the package folder/],
    ['a hard link', [{ name: 'passwd', type: '1', link: '/etc/passwd' }], /hard link/],
    ['a character device', [{ name: 'dev', type: '3' }], /may not contain/],
    ['a fifo', [{ name: 'fifo', type: '6' }], /may not contain/],
  ])('refuses a tarball with %s', async (_name, entries, message) => {
    tally.tarTried++;
    const r = await srv.request('POST', `/api/packages/evil/${tally.tarTried}.0.0`, undefined, {
      raw: rawTar(entries as any),
      headers: gz,
    });
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
    const k = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const c = forge.pki.createCertificationRequest();
    c.publicKey = forge.pki.publicKeyFromPem(k.publicKey);
    c.setSubject([{ name: 'commonName', value: 'hand' }]);
    c.sign(forge.pki.privateKeyFromPem(k.privateKey), forge.md.sha256.create());
    const reg = await srv.must(
      'POST',
      '/api/agents/register',
      { token, name: 'hand', roles: ['h'], csr: forge.pki.certificationRequestToPem(c) },
      [201],
      { key: null },
    );
    socket = io(`https://127.0.0.1:${srv.agentPort}`, {
      transports: ['websocket'],
      reconnection: false,
      ca: srv.ca,
      key: k.privateKey,
      cert: reg.certificate,
    });
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
      {
        type: 'lease.log',
        leaseId: 'x',
        lines: [{ seq: 1, at: new Date().toISOString(), level: 'info', text: 'before hello' }],
      },
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
      {
        type: 'lease.log',
        leaseId: 'x',
        lines: Array.from({ length: 2001 }, (_, i) => ({ seq: i + 1, at: 'now', level: 'info', text: 'x' })),
      },
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
    expect(errors).toEqual(
      expect.arrayContaining([
        expect.stringContaining('protocolVersion'),
        expect.stringContaining('lines.0.level'),
        expect.stringContaining('leaseIds'),
      ]),
    );
    // Still connected, and a proper hello is still welcomed; messages about leases it does not hold change nothing.
    const welcome = new Promise<any>((resolve) =>
      socket.on('server:message', (m: any) => m?.type === 'welcome' && resolve(m)),
    );
    socket.emit('agent:message', { type: 'hello', protocolVersion: 1, agentVersion: 'test', leases: [] });
    expect((await welcome).name).toBe('hand');
    socket.emit('agent:message', {
      type: 'lease.result',
      leaseId: UNKNOWN,
      state: 'success',
      actions: [],
      lastLogSeq: 0,
      at: new Date().toISOString(),
    });
    expect(socket.connected).toBe(true);
  });

  // A message over the size limit closes that connection only; the server keeps serving.
  it('drops a connection that sends an oversized message', async () => {
    const closed = new Promise<string>((resolve) => socket.once('disconnect', (reason) => resolve(reason)));
    socket.emit('agent:message', {
      type: 'lease.log',
      leaseId: 'x',
      lines: [{ seq: 1, at: 'now', level: 'info', text: 'x'.repeat(5 * 1024 * 1024) }],
    });
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
      {
        name: 'Loud',
        targetRoles: ['h'],
        actions: [
          {
            name: 'a',
            type: 'script',
            script: "head -c 40000 /dev/zero | tr '\\0' x; echo\nseq 1 100000 | sed 's/^/flood line /'",
          },
        ],
      },
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
    expect(
      (await srv.request('POST', '/api/packages/after-flood/1.0.0', undefined, { raw: pkg, headers: gz })).status,
    ).toBe(201);
  });
});

/** A pax header giving the next entry a path or link target of any length, as tar writes long names. */
function pax(fields: Record<string, string>) {
  const content = Object.entries(fields)
    .map(([k, v]) => {
      const rest = ` ${k}=${v}\n`;
      let len = Buffer.byteLength(rest) + 1;
      while (String(len).length + Buffer.byteLength(rest) !== len) len = String(len).length + Buffer.byteLength(rest);
      return `${len}${rest}`;
    })
    .join('');
  return { name: 'PaxHeader', type: 'x', content };
}

/** Polls /api/health while `work` runs: the longest answer shows whether the event loop stalled meanwhile. */
async function whileHealthAnswers<T>(
  work: () => Promise<T>,
): Promise<{ result: T; answers: number; slowestMs: number }> {
  let done = false;
  let answers = 0;
  let slowestMs = 0;
  const poll = (async () => {
    while (!done) {
      const t = Date.now();
      const r = await srv.request('GET', '/api/health', undefined, { key: null });
      slowestMs = Math.max(slowestMs, Date.now() - t);
      if (r.status === 200) answers++;
      await new Promise((res) => setTimeout(res, 50));
    }
  })();
  // The poll's request in flight when the work ends is awaited and counted: fast work still proves health answered.
  let result: T;
  try {
    result = await work();
  } finally {
    done = true;
    await poll;
  }
  return { result, answers, slowestMs };
}

type Variant = {
  name: string;
  method: string;
  path: string;
  body?: unknown;
  raw?: Buffer | string;
  headers?: Record<string, string>;
  key?: string | null;
  status?: number;
  message: RegExp;
};

/**
 * Sends a class's variants while /api/health is polled; each must be refused with its status (400 unless said) and a
 * message matching its pattern (which names the field), none with a 5xx, and health must keep answering throughout.
 */
async function refuseAll(cls: string, variants: Variant[]) {
  const entry = (classes[cls] ??= { tried: 0, refused: 0 });
  const wrong: string[] = [];
  const { answers, slowestMs } = await whileHealthAnswers(async () => {
    for (const v of variants) {
      const raw = typeof v.raw === 'string' ? Buffer.from(v.raw) : v.raw;
      const r = await srv.request(v.method, v.path, v.body, {
        key: v.key,
        raw,
        headers: raw && !v.headers ? { 'content-type': 'application/json' } : v.headers,
      });
      entry.tried++;
      tally.tried++;
      if (r.status >= 400 && r.status < 500) tally.fourxx++;
      if (r.status >= 500) tally.fivexx++;
      const msg = Array.isArray(r.body?.message) ? r.body.message.join('; ') : String(r.body?.message ?? r.text);
      if (r.status === (v.status ?? 400) && v.message.test(msg)) entry.refused++;
      else wrong.push(`${v.name}: ${r.status} ${msg.slice(0, 300)}`);
    }
  });
  expect(wrong).toEqual([]);
  expect(answers).toBeGreaterThan(0);
  expect(slowestMs).toBeLessThan(5_000);
}

describe('second round', () => {
  const P = () => `/api/projects/${project.id}`;
  const deep = (n: number, leaf = '"x"', open = '[', close = ']') => open.repeat(n) + leaf + close.repeat(n);
  const deepObject = (n: number) => '{"a":'.repeat(n) + '1' + '}'.repeat(n);

  // JSON nested ten thousand levels deep, as the whole body or in any field, is a 400 before validation runs (it
  // overflowed the stack of the validation layer: a 500).
  it('refuses deeply nested JSON on every endpoint', async () => {
    await refuseAll('nesting', [
      {
        name: 'whole body, arrays',
        method: 'POST',
        path: '/api/environments',
        raw: deep(10_000, '1'),
        message: /^request body(\[0\])+ is nested too deeply \(at most 32 levels\)/,
      },
      {
        name: 'whole body, objects',
        method: 'POST',
        path: '/api/projects',
        raw: deepObject(10_000),
        message: /^a(\.a)+ is nested too deeply/,
      },
      {
        name: 'environment name',
        method: 'POST',
        path: '/api/environments',
        raw: `{"name":${deep(10_000)}}`,
        message: /^name(\[0\])+ is nested too deeply/,
      },
      {
        name: 'process steps',
        method: 'PUT',
        path: `${P()}/deployment-process`,
        raw: `{"version":1,"steps":${deep(10_000)}}`,
        message: /^steps(\[0\])+ is nested too deeply/,
      },
      {
        name: 'a step action',
        method: 'PUT',
        path: `${P()}/deployment-process`,
        raw: `{"version":1,"steps":[{"name":"S","actions":${deep(5_000, deepObject(5_000))}}]}`,
        message: /^steps\[0\]\.actions.* is nested too deeply/,
      },
      {
        name: 'variables',
        method: 'PUT',
        path: `${P()}/variables`,
        raw: `{"variables":[{"name":"A","value":${deep(10_000)}}]}`,
        message: /^variables\[0\]\.value.* is nested too deeply/,
      },
      {
        name: 'release packages',
        method: 'POST',
        path: '/api/releases',
        raw: `{"projectId":"${project.id}","version":"9","packages":${deepObject(10_000)}}`,
        message: /^packages(\.a)+ is nested too deeply/,
      },
      {
        name: 'deployment machines',
        method: 'POST',
        path: '/api/deployments',
        raw: `{"releaseId":"${release.id}","environmentId":"${env}","specificMachineIds":${deep(10_000)}}`,
        message: /^specificMachineIds.* is nested too deeply/,
      },
      {
        name: 'registration (no key)',
        method: 'POST',
        path: '/api/agents/register',
        key: null,
        raw: `{"token":${deep(10_000)},"name":"x","csr":"x"}`,
        message: /^token.* is nested too deeply/,
      },
      {
        name: 'interruption answer',
        method: 'POST',
        path: `/api/interruptions/${UNKNOWN}/submit`,
        raw: `{"result":${deep(10_000)}}`,
        message: /^result.* is nested too deeply/,
      },
    ]);
  });

  // A NUL character reaches no database: in a body field, an object key, a path segment or a query parameter it is a
  // 400 naming where it is (PostgreSQL stores it neither in text nor in jsonb: a 500 before).
  it('refuses NUL characters wherever text arrives', async () => {
    const step = { name: 'S', targetRoles: ['h'], actions: [{ name: 'a', type: 'script', script: 'true' }] };
    await refuseAll('NUL', [
      {
        name: 'environment name',
        method: 'POST',
        path: '/api/environments',
        body: { name: 'a\u0000b' },
        message: /^name must not contain NUL characters/,
      },
      {
        name: 'project name',
        method: 'POST',
        path: '/api/projects',
        body: { name: 'P\u0000' },
        message: /^name must not contain NUL/,
      },
      {
        name: 'project description',
        method: 'PATCH',
        path: P(),
        body: { description: '\u0000' },
        message: /^description must not contain NUL/,
      },
      {
        name: 'variable value',
        method: 'PUT',
        path: `${P()}/variables`,
        body: { variables: [{ name: 'A', value: 'x\u0000y' }] },
        message: /^variables\[0\]\.value must not contain NUL/,
      },
      {
        name: 'variable scope role',
        method: 'PUT',
        path: `${P()}/variables`,
        body: { variables: [{ name: 'A', value: 'x', scope: { roles: ['\u0000'] } }] },
        message: /^variables\[0\]\.scope\.roles\[0\] must not contain NUL/,
      },
      {
        name: 'step name',
        method: 'PUT',
        path: `${P()}/deployment-process`,
        body: { version: 1, steps: [{ ...step, name: 'S\u0000' }] },
        message: /^steps\[0\]\.name must not contain NUL/,
      },
      {
        name: 'action script',
        method: 'PUT',
        path: `${P()}/deployment-process`,
        body: { version: 1, steps: [{ ...step, actions: [{ name: 'a', type: 'script', script: 'echo \u0000' }] }] },
        message: /^steps\[0\]\.actions\[0\]\.script must not contain NUL/,
      },
      {
        name: 'an object key',
        method: 'POST',
        path: '/api/releases',
        body: { projectId: project.id, version: '9', packages: { 'w\u0000': '1' } },
        message: /^packages has a key with a NUL character/,
      },
      {
        name: 'release version',
        method: 'POST',
        path: '/api/releases',
        body: { projectId: project.id, version: '1\u0000' },
        message: /^version must not contain NUL/,
      },
      {
        name: 'machine label value',
        method: 'PATCH',
        path: `/api/machines/${UNKNOWN}`,
        body: { labels: { zone: 'a\u0000' } },
        message: /^labels\.zone must not contain NUL/,
      },
      {
        name: 'machine label name',
        method: 'POST',
        path: '/api/agents/register',
        key: null,
        body: { token: 'x', name: 'n', csr: 'x', labels: { 'z\u0000': 'a' } },
        message: /^labels has a key with a NUL character/,
      },
      {
        name: 'machines label filter',
        method: 'GET',
        path: '/api/machines?label=zone%3Da%00',
        message: /^label must not contain NUL/,
      },
      {
        name: 'API key name',
        method: 'POST',
        path: '/api/api-keys',
        body: { name: 'k\u0000' },
        message: /^name must not contain NUL/,
      },
      {
        name: 'interruption notes',
        method: 'POST',
        path: `/api/interruptions/${UNKNOWN}/submit`,
        body: { result: 'proceed', notes: '\u0000' },
        message: /^notes must not contain NUL/,
      },
      { name: 'path segment', method: 'GET', path: '/api/projects/a%00b', message: /^id must not contain NUL/ },
      {
        name: 'path segment of a package upload',
        method: 'POST',
        path: '/api/packages/a%00/1.0.0',
        raw: Buffer.from('x'),
        headers: gz,
        message: /^packageId must not contain NUL/,
      },
      {
        name: 'query parameter',
        method: 'GET',
        path: '/api/releases?projectId=a%00b',
        message: /^projectId must not contain NUL/,
      },
      {
        name: 'machines filter',
        method: 'GET',
        path: '/api/machines?role=a%00',
        message: /^role must not contain NUL/,
      },
      {
        name: 'deployments filter',
        method: 'GET',
        path: '/api/deployments?state=%00',
        message: /^state must not contain NUL/,
      },
    ]);
  });

  // Keys named __proto__, constructor or prototype, which the validation layer deletes from every body against
  // prototype pollution, are refused naming where they are, never dropped without a word (a label or a package of
  // that name would have vanished from an accepted request).
  it('refuses keys the framework would strip', async () => {
    await refuseAll('stripped keys', [
      {
        name: 'constructor at the top',
        method: 'POST',
        path: '/api/environments',
        raw: '{"name": "Strip", "constructor": {"prototype": {"polluted": true}}}',
        message: /^request body has the key "constructor", which is reserved/,
      },
      {
        name: '__proto__ at the top',
        method: 'POST',
        path: '/api/environments',
        raw: '{"name": "Strip", "__proto__": {"polluted": true}}',
        message: /^request body has the key "__proto__", which is reserved/,
      },
      {
        name: 'a label named constructor',
        method: 'PATCH',
        path: `/api/machines/${UNKNOWN}`,
        raw: '{"labels": {"zone": "a", "constructor": "x"}}',
        message: /^labels has the key "constructor", which is reserved/,
      },
      {
        name: 'a label named __proto__',
        method: 'PATCH',
        path: `/api/machines/${UNKNOWN}`,
        raw: '{"labels": {"__proto__": {"zone": "a"}}}',
        message: /^labels has the key "__proto__", which is reserved/,
      },
      {
        name: 'a package named prototype',
        method: 'POST',
        path: '/api/releases',
        raw: JSON.stringify({ projectId: project.id, version: '9', packages: { prototype: '1' } }),
        message: /^packages has the key "prototype", which is reserved/,
      },
      {
        name: 'deep in a process',
        method: 'PUT',
        path: `${P()}/deployment-process`,
        raw: JSON.stringify({ version: 1, steps: [step({}, { constructor: 1 })] }),
        message: /^steps\[0\]\.actions\[0\] has the key "constructor", which is reserved/,
      },
    ]);
    expect((await srv.must('GET', '/api/environments')).map((e: any) => e.name)).not.toContain('Strip');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  // Numeric query parameters are whole numbers within their range (past bigint or integer range they failed in the
  // database: a 500); a parameter given twice is refused rather than read as a list.
  it('validates numeric and repeated query parameters', async () => {
    const log = `/api/deployments/${UNKNOWN}/log`;
    await refuseAll('query numbers', [
      {
        name: 'afterSeq past bigint',
        method: 'GET',
        path: `${log}?afterSeq=99999999999999999999`,
        message: /^afterSeq must be an integer from 0 to 9007199254740991/,
      },
      {
        name: 'afterSeq in exponent form',
        method: 'GET',
        path: `${log}?afterSeq=1e30`,
        message: /^afterSeq must be an integer/,
      },
      {
        name: 'afterSeq hexadecimal',
        method: 'GET',
        path: `${log}?afterSeq=0x10`,
        message: /^afterSeq must be an integer/,
      },
      {
        name: 'afterSeq with a fraction',
        method: 'GET',
        path: `${log}?afterSeq=1.5`,
        message: /^afterSeq must be an integer/,
      },
      {
        name: 'limit past integer',
        method: 'GET',
        path: `${log}?limit=2147483648`,
        message: /^limit must be an integer from 1 to 10000/,
      },
      {
        name: 'limit negative',
        method: 'GET',
        path: `${log}?limit=-5`,
        message: /^limit must be an integer from 1 to 10000/,
      },
      {
        name: 'deployments limit huge',
        method: 'GET',
        path: '/api/deployments?limit=1e400',
        message: /^limit must be an integer from 1 to 1000/,
      },
      {
        name: 'deployments limit text',
        method: 'GET',
        path: '/api/deployments?limit=many',
        message: /^limit must be an integer from 1 to 1000/,
      },
      {
        name: 'parameter given twice',
        method: 'GET',
        path: '/api/releases?projectId=a&projectId=b',
        message: /^projectId must be given once/,
      },
      {
        name: 'log cursor given twice',
        method: 'GET',
        path: `${log}?afterSeq=1&afterSeq=2`,
        message: /^afterSeq must be given once/,
      },
      {
        name: 'label filter given twice',
        method: 'GET',
        path: '/api/machines?label=zone=a&label=zone=b',
        message: /^label must be given once/,
      },
    ]);
  });

  // Every CSR that cannot be parsed or verified is a 400 with a reason, and a refused registration does not use
  // up the token: a good CSR registers with it afterwards (the token allows one use).
  it('refuses corrupted CSRs without using up the token', async () => {
    const { token } = await srv.must('POST', '/api/registration-tokens', {
      environmentIds: [env],
      roles: ['h'],
      maxUses: 1,
    });
    const k = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const good = () => {
      const c = forge.pki.createCertificationRequest();
      c.publicKey = forge.pki.publicKeyFromPem(k.publicKey);
      c.setSubject([{ name: 'commonName', value: 'csr-ok' }]);
      c.sign(forge.pki.privateKeyFromPem(k.privateKey), forge.md.sha256.create());
      return c;
    };
    const bent = (sig: (s: string) => string) => {
      const asn1 = forge.pki.certificationRequestToAsn1(good());
      const bits = (asn1.value as forge.asn1.Asn1[])[2];
      bits.value = sig(bits.value as string);
      return forge.pem.encode({ type: 'CERTIFICATE REQUEST', body: forge.asn1.toDer(asn1).getBytes() });
    };
    const reg = (name: string, csr: string): Variant => ({
      name,
      method: 'POST',
      path: '/api/agents/register',
      key: null,
      body: { token, name: 'csr-ok', roles: ['h'], csr },
      message: /^csr /,
    });
    await refuseAll('CSR', [
      reg(
        'a flipped signature byte',
        bent((s) => s.slice(0, 10) + String.fromCharCode(s.charCodeAt(10) ^ 0xff) + s.slice(11)),
      ),
      reg(
        'a zero signature',
        bent((s) => '\0'.repeat(s.length)),
      ),
      reg(
        'a signature of ones',
        bent((s) => '\0' + '\xff'.repeat(s.length - 1)),
      ),
      reg(
        'a truncated signature',
        bent((s) => s.slice(0, 40)),
      ),
      reg(
        'a doubled signature',
        bent((s) => s + s),
      ),
      reg('not PEM at all', 'hello'),
      reg('PEM of garbage', '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'),
    ]);
    const ok = await srv.request(
      'POST',
      '/api/agents/register',
      { token, name: 'csr-ok', roles: ['h'], csr: forge.pki.certificationRequestToPem(good()) },
      { key: null },
    );
    expect(ok.status).toBe(201);
    await srv.must('DELETE', `/api/machines/${ok.body.machineId}`);
  });

  // Collections are bounded at what a real user needs, before any per-item work: a release naming two hundred
  // thousand packages (a few MB) answered after 35 s with the event loop busy; now every such body is a quick 400
  // and /api/health keeps answering (checked by refuseAll).
  it('bounds collection sizes in every DTO', async () => {
    const many = <T>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));
    const packages = Object.fromEntries(many(200_000, (i) => [`p${i}`, `1.0.${i}`] as const));
    await refuseAll('collection sizes', [
      {
        name: '200,000 packages',
        method: 'POST',
        path: '/api/releases',
        body: { projectId: project.id, version: '9', packages },
        message: /^packages has 200000 keys \(at most 1000\)/,
      },
      {
        name: '1,001 packages',
        method: 'POST',
        path: '/api/releases',
        body: {
          projectId: project.id,
          version: '9',
          packages: Object.fromEntries(many(1_001, (i) => [`p${i}`, '1'] as const)),
        },
        message: /^packages has 1001 keys \(at most 1000\)/,
      },
      {
        name: '20,000 variables',
        method: 'PUT',
        path: `${P()}/variables`,
        body: { variables: many(20_000, (i) => ({ name: `V${i}`, value: 'x' })) },
        message: /^variables has 20000 items \(at most 10000\)/,
      },
      {
        name: '6,000 variables',
        method: 'PUT',
        path: `${P()}/variables`,
        body: { variables: many(6_000, (i) => ({ name: `V${i}`, value: 'x' })) },
        message: /^variables must have at most 5000 variables/,
      },
      {
        name: '201 steps',
        method: 'PUT',
        path: `${P()}/deployment-process`,
        body: {
          version: 1,
          steps: many(201, (i) => ({
            name: `S${i}`,
            targetRoles: ['h'],
            actions: [{ name: 'a', type: 'script', script: 'true' }],
          })),
        },
        message: /^steps must have at most 200 steps/,
      },
      {
        name: '10,001 machine ids',
        method: 'POST',
        path: '/api/deployments',
        body: { releaseId: release.id, environmentId: env, specificMachineIds: many(10_001, () => UNKNOWN) },
        message: /^specificMachineIds has 10001 items \(at most 10000\)/,
      },
      {
        name: '1,001 machine labels',
        method: 'PATCH',
        path: `/api/machines/${UNKNOWN}`,
        body: { labels: Object.fromEntries(many(1_001, (i) => [`l${i}`, 'v'] as const)) },
        message: /^labels has 1001 keys \(at most 1000\)/,
      },
      {
        name: '51 machine labels at registration',
        method: 'POST',
        path: '/api/agents/register',
        key: null,
        body: { token: 'x', name: 'n', csr: 'x', labels: Object.fromEntries(many(51, (i) => [`l${i}`, 'v'] as const)) },
        message: /^labels has 51 labels \(at most 50\)/,
      },
      {
        name: '101 token environments',
        method: 'POST',
        path: '/api/registration-tokens',
        body: { environmentIds: many(101, () => env) },
        message: /environmentIds must contain no more than 100 elements/,
      },
      {
        name: 'a 1 MB project id',
        method: 'POST',
        path: '/api/releases',
        body: { projectId: 'p'.repeat(1 << 20), version: '9' },
        message: /projectId must be shorter than or equal to 200 characters/,
      },
    ]);
  });

  // A package the agent would refuse is refused at upload, judged the same way (links resolved through the archive's
  // other links, names and paths as file systems bound them, folders as deep as real packages nest, and the unpacked
  // size: this server allows 2 MB), with a 400 naming the entry.
  it('refuses at upload what the agent would refuse to unpack', async () => {
    const block = randomBytes(768).toString('base64'); // 1 KiB gzip can only shrink by repeating it
    const upload = (name: string, entries: Parameters<typeof rawTar>[0], message: RegExp): Variant => ({
      name,
      method: 'POST',
      path: `/api/packages/second-round/${(classes['package checks']?.tried ?? 0) + 1}.0.0`,
      raw: rawTar(entries),
      headers: gz,
      message,
    });
    const cases: Array<[string, Parameters<typeof rawTar>[0], RegExp]> = [
      [
        'a link escaping through a link to "."',
        [
          { name: 'y/', type: '5' },
          { name: 'x', type: '2', link: '.' },
          { name: 'a', type: '2', link: 'x/y/../..' },
        ],
        /symlink "a" -> "x\/y\/\.\.\/\.\." points outside the package folder/,
      ],
      [
        'a link escaping through a link pointing up',
        [
          { name: 'd/', type: '5' },
          { name: 'd/up', type: '2', link: '..' },
          { name: 'esc', type: '2', link: 'd/up/..' },
        ],
        /symlink "esc" .* points outside/,
      ],
      [
        'a file written through an in-package link',
        [
          { name: 'real/', type: '5' },
          { name: 'alias', type: '2', link: 'real' },
          { name: 'alias/x', content: 'x' },
        ],
        /"alias\/x" would be written through symlink "alias"/,
      ],
      [
        'a loop of links',
        [
          { name: 'p', type: '2', link: 'q/x' },
          { name: 'q', type: '2', link: 'p/y' },
        ],
        /points outside/,
      ],
      [
        'a link that looks relative but is absolute',
        [{ name: 'l', type: '2', link: '//etc/passwd' }],
        /points outside the package folder/,
      ],
      [
        'a name of 300 bytes',
        [pax({ path: 'n'.repeat(300) }), { name: 'short', content: 'x' }],
        /has a name of 300 bytes \(at most 255\)/,
      ],
      [
        'a path of 5,000 bytes',
        [pax({ path: 'd/'.repeat(2_499) + 'ff' }), { name: 'short', content: 'x' }],
        /has a path of 5000 bytes \(at most 1024\)/,
      ],
      [
        'a link target of 2,000 bytes',
        [pax({ linkpath: 'a/'.repeat(1_000) }), { name: 'l', type: '2', link: 'x' }],
        /has a target of 2000 bytes \(at most 1024\)/,
      ],
      [
        'folders 200 deep',
        [{ name: 'f', content: 'x' }, pax({ path: 'd/'.repeat(200) + 'f' }), { name: 'short', content: 'x' }],
        /is 200 folders deep \(at most 128\)/,
      ],
      [
        '3 MB unpacked from 12 KB',
        [
          { name: 'a.bin', content: Buffer.from(block.repeat(1024)) },
          { name: 'b.bin', content: Buffer.from(block.repeat(2048)) },
        ],
        /unpacks to more than 2 MB \(at entry "b\.bin"/,
      ],
    ];
    await refuseAll(
      'package checks',
      cases.map(([n, e, m]) => upload(n, e, m)),
    );
    expect((await srv.must('GET', '/api/packages')).some((x: any) => x.packageId === 'second-round')).toBe(false);
  });

  // Every number of the process model is checked against its real range when the process is saved (maxFailures 1e308
  // was accepted, then refused when deploying with a misleading message).
  it('validates the numbers of a process when it is saved', async () => {
    const put = (
      name: string,
      stepOver: Record<string, unknown>,
      actionOver: Record<string, unknown>,
      message: RegExp,
    ): Variant => ({
      name,
      method: 'PUT',
      path: `${P()}/deployment-process`,
      body: {
        version: 1,
        steps: [
          {
            name: 'S',
            targetRoles: ['h'],
            ...stepOver,
            actions: [{ name: 'a', type: 'script', script: 'true', ...actionOver }],
          },
        ],
      },
      message,
    });
    await refuseAll('late validation', [
      put(
        'maxFailures 1e308',
        { maxFailures: 1e308 },
        {},
        /^steps\[0\]\.maxFailures must be a non-negative integer or a percentage like "10%" \(a count of at most 100000\)/,
      ),
      put('maxFailures past the count bound', { maxFailures: 100_001 }, {}, /^steps\[0\]\.maxFailures/),
      put(
        'windowSize past integer',
        { windowSize: 2 ** 31 },
        {},
        /^steps\[0\]\.windowSize must be a positive integer or a percentage like "25%"/,
      ),
      put('windowSize 1e21', { windowSize: 1e21 }, {}, /^steps\[0\]\.windowSize/),
      put(
        'timeoutSeconds 1e308',
        {},
        { timeoutSeconds: 1e308 },
        /steps\[0\]\.actions\[0\]\.timeoutSeconds must be at most 604800/,
      ),
      put('retries 1e10', {}, { retries: 1e10 }, /^steps\[0\]\.actions\[0\]\.retries must be at most 100/),
      put(
        'retryDelaySeconds 2^53',
        {},
        { retryDelaySeconds: 2 ** 53 },
        /steps\[0\]\.actions\[0\]\.retryDelaySeconds must be at most 86400/,
      ),
      {
        name: 'project default timeout',
        method: 'POST',
        path: '/api/projects',
        body: { name: 'Late', defaultTimeoutSeconds: 1e308 },
        message: /defaultTimeoutSeconds must not be greater than 604800/,
      },
      {
        name: 'token expiry',
        method: 'POST',
        path: '/api/registration-tokens',
        body: { environmentIds: [env], expiresInSeconds: 1e308 },
        message: /expiresInSeconds must not be greater than/,
      },
    ]);
  });

  // A package whose extraction fails ends its target as a script failure with the reason, cut to the protocol's
  // limit, within seconds: here the agent's work folder is so deep that the package's paths pass Linux's PATH_MAX,
  // and the failure (naming a 4,000-character path) was dropped as too long, leaving the target to fail 30 s later as
  // "agent lost" although the agent was alive.
  it('reports an extraction failure too long for the protocol as a script failure, at once', async () => {
    const work = join(srv.dir, ...Array.from({ length: 14 }, (_, i) => `${i}`.padEnd(250, 'w')));
    mkdirSync(work, { recursive: true });
    const { token } = await srv.must('POST', '/api/registration-tokens', { environmentIds: [env], roles: ['deep'] });
    const agent = startAgent(srv, { name: 'deep-1', roles: ['deep'], environments: ['Hostile'], token, work });
    await waitOnline(srv, ['deep-1']);
    const pkg = rawTar([
      pax({ path: Array.from({ length: 4 }, () => 'p'.repeat(250)).join('/') + '/file' }),
      { name: 'short', content: 'x' },
    ]);
    expect((await srv.request('POST', '/api/packages/deep/1.0.0', undefined, { raw: pkg, headers: gz })).status).toBe(
      201,
    );
    const p = await createProject(srv, 'Deep', [
      { name: 'Unpack', targetRoles: ['deep'], actions: [{ name: 'pkg', type: 'package', packageId: 'deep' }] },
    ]);
    const dep = await startDeployment(srv, p.id, env);
    const d = await srv.waitDeployment(dep.id, 25_000); // agent lost would take the lease TTL (30 s)
    const target = d.steps[0].targets[0];
    const entry = (classes['agent errors'] ??= { tried: 0, refused: 0 });
    entry.tried++;
    expect(d.state).toBe('failed');
    expect(target.failureKind).toBe('script');
    expect(target.error).toMatch(/ENAMETOOLONG/);
    expect(target.error.length).toBeLessThanOrEqual(4_000);
    expect(target.error.endsWith(' …[truncated]')).toBe(true);
    expect(new Date(target.finishedAt).getTime() - new Date(target.startedAt).getTime()).toBeLessThan(15_000);
    entry.refused++;
    await agent.stop();
  }, 60_000);

  // The agent port: a message nested ten thousand deep is a protocol error like any malformed one, and NUL
  // characters in an agent's text are taken out (a script may print them) or refused in ids.
  it('handles deep and NUL-laden socket messages', async () => {
    const { token } = await srv.must('POST', '/api/registration-tokens', { environmentIds: [env], roles: ['h'] });
    const k = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const c = forge.pki.createCertificationRequest();
    c.publicKey = forge.pki.publicKeyFromPem(k.publicKey);
    c.setSubject([{ name: 'commonName', value: 'hand2' }]);
    c.sign(forge.pki.privateKeyFromPem(k.privateKey), forge.md.sha256.create());
    const reg = await srv.must(
      'POST',
      '/api/agents/register',
      { token, name: 'hand2', roles: ['h'], csr: forge.pki.certificationRequestToPem(c) },
      [201],
      { key: null },
    );
    const socket = io(`https://127.0.0.1:${srv.agentPort}`, {
      transports: ['websocket'],
      reconnection: false,
      ca: srv.ca,
      key: k.privateKey,
      cert: reg.certificate,
    });
    const errors: string[] = [];
    const welcomes: any[] = [];
    socket.on('server:message', (m: any) => {
      if (m?.type === 'protocol.error') errors.push(m.message);
      if (m?.type === 'welcome') welcomes.push(m);
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', reject);
    });
    socket.emit('agent:message', { type: 'hello', protocolVersion: 1, agentVersion: 'v\u00001', leases: [] });
    await waitFor('a welcome despite a NUL in the version', async () => welcomes.length > 0, 10_000, 50);
    // Written as a socket.io packet by hand: the client's own encoder would overflow its stack on such a value.
    const deepLines = '['.repeat(10_000) + '"x"' + ']'.repeat(10_000);
    (socket.io as any).engine.send(`2["agent:message",{"type":"lease.log","leaseId":"x","lines":${deepLines}}]`);
    socket.emit('agent:message', { type: 'heartbeat', leaseIds: ['a\u0000'] });
    await waitFor('two protocol errors', async () => errors.length >= 2, 10_000, 50);
    const entry = (classes['socket'] ??= { tried: 0, refused: 0 });
    entry.tried += 3;
    expect(errors[0]).toMatch(/^invalid message: lines/);
    expect(errors[1]).toMatch(/^invalid message: leaseIds\.0: must not contain NUL/);
    expect(socket.connected).toBe(true);
    const machine = (await srv.must('GET', '/api/machines')).find((m: any) => m.name === 'hand2');
    expect(machine.agentVersion).toBe('v1');
    entry.refused += 3; // two refused, and the NUL taken out of the version
    socket.close();
    expect((await srv.request('GET', '/api/health', undefined, { key: null })).status).toBe(200);
  });
});
