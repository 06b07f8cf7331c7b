/**
 * Hollow agents (`fleet --hollow`), the scale benchmark's measuring instrument: real agents (keys, certificates, TLS,
 * journal, leases, log sequence, results, package downloads) whose runner starts no process and unpacks nothing.
 * A real server and 20 hollow agents: a script step and a package step succeed on every target, each script action
 * with its one line, and nothing ran: no script's file, no installation folder, no deploy.sh's mark; the package is
 * in every agent's cache, verified.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  makeTarGz,
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
