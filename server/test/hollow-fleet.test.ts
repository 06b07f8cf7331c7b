/**
 * Hollow agents (`fleet --hollow`), the scale benchmark's measuring instrument: real agents (keys, certificates, TLS,
 * journal, leases, log sequence, results, package downloads) whose runner starts no process and unpacks nothing.
 * A real server and 20 hollow agents: a script step and a package step succeed on every target, each script action
 * with its one line, and nothing ran: no script's file, no installation folder, no deploy.sh's mark; the package is
 * in every agent's cache, verified.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createCsrPem, parseRegistrationToken } from '#shared/pki/index.js';
import { join } from 'node:path';
import {
  createProject,
  makeTarGz,
  startAgent,
  startFleet,
  startServer,
  stopAll,
  waitOnline,
  type TestFleet,
  type TestServer,
} from './support/fixtures.js';

const COUNT = 20;
const HOLLOW_LINE = 'hollow agent: script not run';
let srv: TestServer;
let fleet: TestFleet;
let envId: string;

beforeAll(async () => {
  srv = await startServer();
  envId = (await srv.must('POST', '/api/environments', { name: 'Hollow' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [envId],
    roles: ['web'],
    maxUses: COUNT,
  });
  fleet = startFleet(srv, {
    prefix: 'hol',
    count: COUNT,
    roles: ['web'],
    environments: ['Hollow'],
    token,
    hollow: true,
  });
  await waitOnline(srv, fleet.names, 120_000);
}, 180_000);

afterAll(async () => {
  await fleet?.stop();
  await srv?.stop();
  await stopAll();
});

it('runs a script step and a package step on every hollow target without running or unpacking anything', async () => {
  // deploy.sh and the action's script would each leave a mark in the agent's home (two levels above the install).
  const pkg = await makeTarGz(srv.dir, { 'deploy.sh': '#!/bin/bash\ntouch ../../../deployed\n', VERSION: '1.0.0\n' });
  await srv.must('POST', '/api/packages/site/1.0.0', undefined, [201], {
    raw: pkg,
    headers: { 'content-type': 'application/gzip' },
  });
  const p = await createProject(srv, 'Hollow', [
    {
      name: 'Script',
      targetRoles: ['web'],
      windowSize: 5,
      actions: [{ name: 'Touch', type: 'script', script: 'touch ../ran; echo ran' }],
    },
    {
      name: 'Site',
      targetRoles: ['web'],
      windowSize: 5,
      actions: [{ name: 'Install', type: 'package', packageId: 'site', script: 'touch ../../../scripted' }],
    },
  ]);
  const rel = await srv.must('POST', '/api/releases', {
    projectId: p.id,
    version: '1.0.0',
    packages: { site: '1.0.0' },
  });
  const dep = await srv.must('POST', '/api/deployments', { releaseId: rel.id, environmentId: envId });
  const d = await srv.waitDeployment(dep.id, 120_000);
  const sha256 = createHash('sha256').update(pkg).digest('hex');
  expect(d.state).toBe('success');
  for (const s of d.steps) {
    expect(s.targets.map((t: any) => t.machineName).sort()).toEqual(fleet.names);
    for (const t of s.targets) {
      expect(t.state).toBe('success');
      expect(t.actions.every((a: any) => a.state === 'success' && a.exitCode === 0)).toBe(true);
    }
  }

  const log = await srv.readLog(d.id);
  for (const t of d.steps[0].targets) {
    const mine = log.filter((e: any) => e.machineId === t.machineId);
    // One line of the script's own: the hollow runner's; `echo ran` never ran.
    expect(mine.filter((e: any) => e.text === HOLLOW_LINE)).toHaveLength(1);
    expect(mine.some((e: any) => e.text === 'ran')).toBe(false);
    expect(mine.some((e: any) => e.text === 'Package site 1.0.0 verified; not unpacked (hollow agent)')).toBe(true);
  }
  for (const name of fleet.names) {
    const home = fleet.home(name);
    // No process: no mark from the script, deploy.sh or the package action's script.
    for (const mark of ['ran', 'deployed', 'scripted']) expect(existsSync(join(home, mark))).toBe(false);
    // Nothing unpacked: the work folder is empty; the archive is in the cache.
    expect(readdirSync(fleet.workDir(name))).toEqual([]);
    expect(readdirSync(join(home, 'packages'))).toContain(`${sha256}.tar.gz`);
  }
});

// Agents registered before #19 hold RSA keys: one registered with an RSA request (as the older agent sent) still gets
// its certificate, connects over mutual TLS with it, and runs a deployment; the new agents above hold ECDSA keys.
it('keeps accepting agents with RSA keys next to ECDSA ones', async () => {
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [envId],
    roles: ['old'],
    maxUses: 1,
  });
  const name = 'rsa-agent';
  const key = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({
    type: 'pkcs8',
    format: 'pem',
  }) as string;
  const reg = await srv.must(
    'POST',
    '/api/agents/register',
    { token, name, roles: ['old'], environmentIds: [envId], csr: createCsrPem(name, key) },
    [201],
    { key: null },
  );
  const home = join(srv.dir, `agent-${name}`); // where startAgent puts it: it finds the identity and uses it
  mkdirSync(home, { recursive: true });
  writeFileSync(join(home, 'agent.key'), key, { mode: 0o600 });
  writeFileSync(join(home, 'agent.crt'), reg.certificate);
  writeFileSync(join(home, 'ca.crt'), reg.caCertificate);
  writeFileSync(
    join(home, 'identity.json'),
    JSON.stringify({
      machineId: reg.machineId,
      name,
      serverUrl: srv.base,
      agentUrl: reg.agentUrl,
      caFingerprint: parseRegistrationToken(token)!.caFingerprint,
    }),
  );
  startAgent(srv, { name, roles: ['old'], environments: ['Hollow'], token });
  await waitOnline(srv, [name], 60_000);
  // The fleet's agents' keys are ECDSA.
  const { createPrivateKey } = await import('node:crypto');
  expect(createPrivateKey(readFileSync(join(fleet.home(fleet.names[0]), 'agent.key'))).asymmetricKeyType).toBe('ec');
  const p = await createProject(srv, 'Old', [
    { name: 'Say', targetRoles: ['old'], actions: [{ name: 'Echo', type: 'script', script: 'echo rsa agent ran' }] },
  ]);
  const rel = await srv.must('POST', '/api/releases', { projectId: p.id, version: '1.0.0' });
  const dep = await srv.must('POST', '/api/deployments', { releaseId: rel.id, environmentId: envId });
  const d = await srv.waitDeployment(dep.id, 60_000);
  expect(d.state).toBe('success');
  expect((await srv.readLog(d.id)).some((e: any) => e.text === 'rsa agent ran')).toBe(true);
});
