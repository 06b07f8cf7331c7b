/**
 * The server as an operator runs it: configuration checked at boot, one server per data folder, the PKI and the
 * data kept across a restart, agents that come back on their own, machines shown online and offline.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { certificateFingerprint } from '#shared/pki/index.js';
import {
  freePort,
  runServerExpectingExit,
  startAgent,
  startServer,
  stopAll,
  waitFor,
  waitOnline,
  type TestServer,
} from './support/fixtures.js';

afterAll(() => stopAll());

describe('configuration at boot', () => {
  // A bad value stops the server at once with a message naming the variable, before anything listens.
  it.each([
    [{ CUTTLE_PORT: 'eighty' }, 'CUTTLE_PORT must be a TCP port number'],
    [{ CUTTLE_PORT: '70000' }, 'CUTTLE_PORT must be between 1 and 65535'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL must be a postgres:// or postgresql:// URL'],
    [{ CUTTLE_ADMIN_API_KEY: 'short' }, 'CUTTLE_ADMIN_API_KEY must be at least 16 characters'],
    [{ CUTTLE_PORT: '9000', CUTTLE_AGENT_PORT: '9000' }, 'CUTTLE_PORT and CUTTLE_AGENT_PORT must differ'],
  ])('refuses %j', async (env, message) => {
    const r = await runServerExpectingExit(env);
    expect(r.code).toBe(2);
    expect(r.output).toContain(message);
  });
});

describe('a server restarted on its data folder', () => {
  let srv: TestServer;

  // One data folder, one server: a second server on the same embedded database refuses to start.
  it('refuses a second server on the same folder', async () => {
    srv = await startServer();
    if (process.env.DATABASE_URL) return; // the lock guards the embedded database only
    const r = await runServerExpectingExit({
      CUTTLE_HOME: srv.home,
      CUTTLE_PORT: String(await freePort()),
      CUTTLE_AGENT_PORT: String(await freePort()),
      DATABASE_URL: '',
    });
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/in use by another Cuttle server \(pid \d+\)/);
    expect((await srv.request('GET', '/api/health', undefined, { key: null })).status).toBe(200);
  });

  // The CA and data survive a restart; the agent reconnects by itself (back-off) with its stored identity and
  // deploys again; a stopped agent shows offline.
  it('keeps its CA and data, and its agents come back', async () => {
    const env = await srv.must('POST', '/api/environments', { name: 'Restart' });
    const { token } = await srv.must('POST', '/api/registration-tokens', { environmentIds: [env.id], roles: ['app'] });
    const agent = startAgent(srv, { name: 'app-01', roles: ['app'], environments: [env.id], token });
    await waitOnline(srv, ['app-01']);
    const caBefore = certificateFingerprint(srv.ca);

    await srv.stop({ keepData: true });
    srv = await startServer({ reuse: srv });
    expect(certificateFingerprint(srv.ca)).toBe(caBefore);
    expect((await srv.must('GET', '/api/environments')).map((e: any) => e.name)).toContain('Restart');
    const machines = await waitOnline(srv, ['app-01'], 60_000);
    expect(machines.find((m: any) => m.name === 'app-01')).toMatchObject({
      roles: ['app'],
      environmentIds: [env.id],
      agentVersion: '0.1.0',
      disabled: false,
    });
    expect(readFileSync(join(agent.home, 'agent.crt'), 'utf8')).toContain('BEGIN CERTIFICATE');

    const p = await srv.must('POST', '/api/projects', { name: 'After restart' });
    await srv.must('PUT', `/api/projects/${p.id}/deployment-process`, {
      version: 1,
      steps: [
        { name: 'Hello', targetRoles: ['app'], actions: [{ name: 'Say', type: 'script', script: 'echo still here' }] },
      ],
    });
    const rel = await srv.must('POST', '/api/releases', { projectId: p.id, version: '1' });
    const dep = await srv.must('POST', '/api/deployments', { releaseId: rel.id, environmentId: env.id });
    const done = await srv.waitDeployment(dep.id);
    expect(done.state).toBe('success');
    expect((await srv.readLog(dep.id)).some((e: any) => e.text === 'still here')).toBe(true);

    await agent.stop();
    await waitFor(
      'app-01 offline',
      async () => (await srv.must('GET', '/api/machines')).find((m: any) => m.name === 'app-01').status === 'offline',
      30_000,
    );
    await srv.stop();
  });
});
