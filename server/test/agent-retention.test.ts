/**
 * Retention on agents: after a successful package action an agent keeps the project's `retention.keepReleases`
 * newest installation folders of the package and deletes older ones, and its package cache stays within
 * `--cache-mb` (least recently used archives out). What went is said in the deployment's log and the agent's.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  ROOT,
  createProject,
  makeTarGz,
  startAgent,
  startServer,
  stopAll,
  waitOnline,
  type TestAgent,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
let env: string;
let agent: TestAgent;

beforeAll(async () => {
  srv = await startServer();
  env = (await srv.must('POST', '/api/environments', { name: 'Prod' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', { environmentIds: [env], roles: ['web'] });
  // A cache of 1 MB: smaller than two of this test's packages (about 0.7 MB each).
  agent = startAgent(srv, { name: 'web-01', roles: ['web'], environments: ['Prod'], token, args: ['--cache-mb', '1'] });
  await waitOnline(srv, ['web-01'], 90_000);
}, 150_000);

afterAll(async () => {
  await agent?.stop();
  await srv?.stop();
  await stopAll();
});

describe('retention on agents', () => {
  // retention is a project setting: 3 by default, changed by PATCH, refused below 1 naming the field.
  it('has a default and refuses bad values', async () => {
    const p = await srv.must('POST', '/api/projects', { name: 'Defaults' });
    expect(p.retention).toEqual({ keepReleases: 3 });
    const patched = await srv.must('PATCH', `/api/projects/${p.id}`, { retention: { keepReleases: 5 } });
    expect(patched.retention).toEqual({ keepReleases: 5 });
    expect((await srv.must('GET', `/api/projects/${p.id}`)).retention).toEqual({ keepReleases: 5 });
    for (const [body, message] of [
      [{ retention: { keepReleases: 0 } }, 'retention.keepReleases must be at least 1'],
      [{ retention: { keepReleases: 'x' } }, 'retention.keepReleases must be a whole number'],
      [{ retention: 3 }, 'retention must be an object'],
    ] as const) {
      const r = await srv.request('PATCH', `/api/projects/${p.id}`, body);
      expect(r.status).toBe(400);
      expect(JSON.stringify(r.body.message)).toContain(message);
    }
  });

  // A cache bound that is not a whole number of megabytes is bad usage (exit 2), naming the option.
  it('refuses a bad --cache-mb', () => {
    for (const bad of ['0', '1.5', 'lots']) {
      const r = spawnSync(
        process.execPath,
        ['dist/agent/src/main.js', 'run', '--home', join(srv.dir, 'never'), '--cache-mb', bad],
        { cwd: ROOT, encoding: 'utf8' },
      );
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`option '--cache-mb <n>' argument '${bad}' is invalid`);
      expect(r.stderr).toContain('must be a whole number of megabytes');
    }
  });

  // Five deployments of five versions with keepReleases 2 leave the two newest installation folders; the cache,
  // bounded below two packages, holds only the newest archive; each removal is logged.
  it('keeps two installation folders of five and a bounded cache', async () => {
    const p = await createProject(srv, 'Retained', [
      { name: 'Deploy', targetRoles: ['web'], actions: [{ name: 'Install', type: 'package', packageId: 'big' }] },
    ]);
    await srv.must('PATCH', `/api/projects/${p.id}`, { retention: { keepReleases: 2 } });
    const logs: string[][] = [];
    for (let i = 0; i < 5; i++) {
      // Random bytes as base64: about 0.75 MB once gzipped, so two of them pass the 1 MB bound.
      const pkg = await makeTarGz(srv.dir, { 'blob.txt': randomBytes(700_000).toString('base64') });
      const version = `1.0.${i}`;
      await srv.must('POST', `/api/packages/big/${version}`, undefined, [201], {
        raw: pkg,
        headers: { 'content-type': 'application/gzip' },
      });
      const rel = await srv.must('POST', '/api/releases', { projectId: p.id, version, packages: { big: version } });
      const dep = await srv.must('POST', '/api/deployments', { releaseId: rel.id, environmentId: env });
      const d = await srv.waitDeployment(dep.id);
      expect(d.state).toBe('success');
      logs.push((await srv.readLog(d.id)).map((e: any) => e.text));
    }
    const installs = readdirSync(join(agent.workDir, 'big')).filter((f) => !f.startsWith('.'));
    expect(installs.sort()).toEqual(['1.0.3', '1.0.4']);
    const cached = readdirSync(join(agent.home, 'packages')).filter((f) => f.endsWith('.tar.gz'));
    expect(cached).toHaveLength(1);

    // Nothing removed while two or fewer existed; from the third on, the oldest one, named.
    expect(logs[0].some((t) => t.startsWith('Retention'))).toBe(false);
    expect(logs[1].some((t) => t.startsWith('Retention'))).toBe(false);
    for (const i of [2, 3, 4])
      expect(logs[i]).toContain(
        `Retention (keep 2): removed 1 older installation folder(s) of big: ${join(agent.workDir, 'big', `1.0.${i - 2}`)}`,
      );
    for (const i of [1, 2, 3, 4])
      expect(
        logs[i].some((t) => /^Package cache: evicted [0-9a-f]{12}… \(\d+ bytes, least recently used\)/.test(t)),
      ).toBe(true);
    const agentLog = agent.log();
    expect(agentLog).toContain('removed older installation folders');
    expect(agentLog).toContain('evicted a package from the cache');
  });
});
