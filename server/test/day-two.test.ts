/**
 * Day two on the server, with real agents: health known as soon as an agent connects, target triggers
 * (autoDeployNewMachines: a machine that arrives gets the environment's last successful release without anyone
 * deploying), and scheduled deployments (queueAt starting on time, queueExpiresAt cancelling one that could not start,
 * a schedule surviving a restart). What ran where is read from files the scripts write in the agents' homes, as well
 * as from the API. Server retention is tested against the database (server/src/retention/retention.db.test.ts).
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createProject,
  ROOT,
  sleep,
  startAgent,
  startServer,
  stopAll,
  waitFor,
  waitOnline,
  type TestAgent,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
let envId: string;
const agents: Record<string, TestAgent> = {};
const ids: Record<string, string> = {};

const token = async (roles = ['web']) =>
  (await srv.must('POST', '/api/registration-tokens', { environmentIds: [envId], roles, maxUses: 1 })).token;

async function agent(name: string, roles = ['web']) {
  agents[name] = startAgent(srv, { name, roles, environments: ['Live'], token: await token(roles) });
  const m = (await waitOnline(srv, [name], 90_000)).find((x: any) => x.name === name);
  ids[name] = m.id;
  return m;
}

/** Lines the scripts of a machine appended to `<agent home>/<file>`. */
function recorded(machine: string, file: string): string[] {
  const f = join(agents[machine].home, file);
  return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').filter(Boolean) : [];
}

const deploy = (releaseId: string, extra: Record<string, unknown> = {}) =>
  srv.request('POST', '/api/deployments', { releaseId, environmentId: envId, ...extra });
const msg = (r: { body: any }) =>
  Array.isArray(r.body?.message) ? r.body.message.join('; ') : String(r.body?.message);

beforeAll(async () => {
  // The scheduled health round is far away (the default 5 minutes): any health seen here comes from the connect.
  srv = await startServer();
  envId = (await srv.must('POST', '/api/environments', { name: 'Live' })).id;
}, 120_000);

afterAll(async () => {
  for (const a of Object.values(agents)) await a.stop();
  await srv?.stop();
  await stopAll();
});

// An agent's health is known right after it connects (healthy, with its round trip and free disk), not "unknown"
// until the next scheduled round five minutes later.
it('checks health when an agent connects', async () => {
  const started = Date.now();
  await agent('web-01');
  const m = await waitFor(
    'web-01 health known',
    async () => {
      const x = await srv.must('GET', `/api/machines/${ids['web-01']}`);
      return x.health !== 'unknown' ? x : null;
    },
    20_000,
    200,
  );
  expect(m.health).toBe('healthy');
  expect(m.freeDiskBytes).toBeGreaterThan(0);
  expect(Date.parse(m.healthCheckedAt)).toBeGreaterThanOrEqual(started - 1000);
  expect(Date.now() - started).toBeLessThan(60_000);
});

describe('target triggers', () => {
  let app: any;
  let rel: any;

  beforeAll(async () => {
    app = await createProject(
      srv,
      'Shop',
      [
        {
          name: 'Install',
          targetRoles: ['web'],
          actions: [
            {
              name: 'Put',
              type: 'script',
              script: 'echo "#{Cuttle.Release.Number} $CUTTLE_DEPLOYMENT_ID" >> ../installed.log',
            },
          ],
        },
      ],
      { autoDeployNewMachines: true },
    );
    expect(app.autoDeployNewMachines).toBe(true);
    rel = await srv.must('POST', '/api/releases', { projectId: app.id, version: '1.4.0' });
    const d = await srv.must('POST', '/api/deployments', { releaseId: rel.id, environmentId: envId });
    expect((await srv.waitDeployment(d.id)).state).toBe('success');
    // A later release that failed is not what a new machine gets: the last successful one is.
    const broken = await createBrokenRelease(app.id);
    const f = await srv.must('POST', '/api/deployments', { releaseId: broken.id, environmentId: envId });
    expect((await srv.waitDeployment(f.id)).state).toBe('failed');
  }, 120_000);

  /** Release 1.5.0 of the project, whose script fails everywhere (the process is put back afterwards). */
  async function createBrokenRelease(projectId: string) {
    const proc = await srv.must('GET', `/api/projects/${projectId}/deployment-process`);
    const failing = [{ ...proc.steps[0], actions: [{ name: 'Put', type: 'script', script: 'exit 4' }] }];
    const v = (
      await srv.must('PUT', `/api/projects/${projectId}/deployment-process`, { version: proc.version, steps: failing })
    ).version;
    const r = await srv.must('POST', '/api/releases', { projectId, version: '1.5.0' });
    await srv.must('PUT', `/api/projects/${projectId}/deployment-process`, { version: v, steps: proc.steps });
    return r;
  }

  /** The deployments a trigger made for a machine, newest first. */
  async function triggered(machineId: string) {
    const list: any[] = await srv.must('GET', `/api/deployments?projectId=${app.id}`);
    return list.filter((d) => d.trigger === 'new-machine' && d.triggerMachineId === machineId);
  }

  // Invariant: a machine that registers in the environment with a role the process uses gets the environment's last
  // successful release (1.4.0, not the failed 1.5.0) without anyone deploying: a deployment limited to it, made by
  // the trigger, which runs there and only there. Its list entry says so (trigger, triggerMachineId, createdBy).
  it('deploys the last successful release to a machine that registers', async () => {
    await agent('web-02');
    const [d] = await waitFor('a trigger deployment for web-02', async () => {
      const list = await triggered(ids['web-02']);
      return list.length ? list : null;
    });
    expect(d).toMatchObject({ releaseId: rel.id, environmentId: envId, createdBy: { name: 'trigger' } });
    const done = await srv.waitDeployment(d.id);
    expect(done.state).toBe('success');
    expect(done.specificMachineIds).toEqual([ids['web-02']]);
    expect(done.steps[0].targets.map((t: any) => t.machineName)).toEqual(['web-02']);
    expect(recorded('web-02', 'installed.log')).toEqual([`1.4.0 ${d.id}`]);
    // web-01 got nothing from the trigger (only the two deployments asked for).
    expect(recorded('web-01', 'installed.log')).toEqual([expect.stringMatching(/^1\.4\.0 /)]);
    const m = await srv.must('GET', `/api/machines/${ids['web-02']}`);
    expect(m.lastTriggerError).toBeUndefined();
    expect(m.lastTriggerAt).toEqual(expect.any(String));
    // A machine whose roles no step uses gets nothing.
    await agent('db-01', ['db']);
    await sleep(2000);
    expect(await triggered(ids['db-01'])).toEqual([]);
  });

  // Invariant: a machine enabled again arrives again (a new trigger deployment once the last one ended); while it is
  // disabled, or while its trigger deployment is still pending, no second one is made.
  it('deploys to a machine that is enabled again, once', async () => {
    await srv.must('PATCH', `/api/machines/${ids['web-02']}`, { disabled: true });
    const before = (await triggered(ids['web-02'])).length;
    // Two enables in a row (the second a no-op on the flag) make one deployment.
    await srv.must('PATCH', `/api/machines/${ids['web-02']}`, { disabled: false });
    await srv.must('PATCH', `/api/machines/${ids['web-02']}`, { environmentIds: [envId] });
    const list = await waitFor('a second trigger deployment', async () => {
      const l = await triggered(ids['web-02']);
      return l.length > before ? l : null;
    });
    expect((await srv.waitDeployment(list[0].id)).state).toBe('success');
    await sleep(1000);
    expect((await triggered(ids['web-02'])).length).toBe(before + 1);
    expect(recorded('web-02', 'installed.log')).toHaveLength(2);
  });

  // Invariant: a trigger deployment that fails is visible in the deployment list, failed, with its trigger and machine.
  it('shows a failed trigger deployment in the list', async () => {
    const other = await createProject(
      srv,
      'Fragile',
      [
        {
          name: 'Go',
          targetRoles: ['web'],
          actions: [{ name: 'Check', type: 'script', script: '[ -f ../ok ] || exit 7' }],
        },
      ],
      { autoDeployNewMachines: true },
    );
    // It succeeded once on web-01 (which has ../ok), so there is a release to give to new machines.
    writeFileSync(join(agents['web-01'].home, 'ok'), '');
    const r = await srv.must('POST', '/api/releases', { projectId: other.id, version: '2.0.0' });
    const d = await srv.must('POST', '/api/deployments', {
      releaseId: r.id,
      environmentId: envId,
      specificMachineIds: [ids['web-01']],
    });
    expect((await srv.waitDeployment(d.id)).state).toBe('success');
    await agent('web-03');
    const failed = await waitFor(
      'the failed trigger deployment of Fragile',
      async () => {
        const list: any[] = await srv.must('GET', `/api/deployments?projectId=${other.id}&state=failed`);
        return list.find((x) => x.trigger === 'new-machine' && x.triggerMachineId === ids['web-03']) ?? null;
      },
      60_000,
    );
    expect(failed).toMatchObject({ state: 'failed', releaseId: r.id });
  });
});

describe('scheduled deployments', () => {
  let proj: any;
  let rel: any;

  beforeAll(async () => {
    proj = await createProject(srv, 'Nightly', [
      {
        name: 'Run',
        targetRoles: ['web'],
        actions: [
          {
            name: 'Stamp',
            type: 'script',
            script: 'if [ -f ../slow ]; then sleep 6; fi; date +%s%3N >> ../nightly.log',
          },
        ],
      },
    ]);
    rel = await srv.must('POST', '/api/releases', { projectId: proj.id, version: '1.0.0' });
  });

  // Invariant: a deployment scheduled 3 s ahead is `scheduled` (no steps laid out, nothing runs) until then, and
  // starts on time: not before its queueAt, and within a few seconds after it.
  it('starts a schedule 3 s ahead on time', async () => {
    const queueAt = new Date(Date.now() + 3000);
    const r = await deploy(rel.id, { queueAt: queueAt.toISOString(), specificMachineIds: [ids['web-01']] });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ state: 'scheduled', queueAt: queueAt.toISOString(), steps: [] });
    const listed: any[] = await srv.must('GET', `/api/deployments?projectId=${proj.id}&state=scheduled`);
    expect(listed.map((d) => d.id)).toEqual([r.body.id]);
    expect(listed[0].queueAt).toBe(queueAt.toISOString());
    await sleep(1500);
    expect((await srv.must('GET', `/api/deployments/${r.body.id}`)).state).toBe('scheduled');
    expect(recorded('web-01', 'nightly.log')).toEqual([]);
    const done = await srv.waitDeployment(r.body.id);
    expect(done.state).toBe('success');
    expect(Date.parse(done.startedAt)).toBeGreaterThanOrEqual(queueAt.getTime());
    expect(Date.parse(done.startedAt)).toBeLessThan(queueAt.getTime() + 5000);
    const [ran] = recorded('web-01', 'nightly.log').map(Number);
    expect(ran).toBeGreaterThanOrEqual(queueAt.getTime());
    const log = (await srv.readLog(r.body.id)).map((e) => e.text);
    expect(log[0]).toMatch(/^Scheduled: Nightly release 1\.0\.0 to Live is queued at /);
    expect(log).toContain(`Its scheduled time ${queueAt.toISOString()} came: queued`);
  });

  // Invariant: a scheduled deployment that could not start by its queueExpiresAt (queued behind a long one of the
  // same project and environment) ends `cancelled` with the reason in `error` and its log, and never runs.
  it('cancels one that expires before it could start', async () => {
    writeFileSync(join(agents['web-02'].home, 'slow'), '');
    const long = await deploy(rel.id, { specificMachineIds: [ids['web-02']] });
    await waitFor(
      'the long one to run',
      async () => (await srv.must('GET', `/api/deployments/${long.body.id}`)).state === 'executing',
    );
    const proc = await srv.must('GET', `/api/projects/${proj.id}/deployment-process`);
    expect(proc.steps.length).toBe(1);
    const queueAt = new Date(Date.now() + 1000);
    const expires = new Date(Date.now() + 2500);
    const r = await deploy(rel.id, {
      queueAt: queueAt.toISOString(),
      queueExpiresAt: expires.toISOString(),
      specificMachineIds: [ids['web-03']],
    });
    expect(r.status).toBe(201);
    const ended = await srv.waitDeployment(r.body.id, 30_000);
    expect(ended.state).toBe('cancelled');
    expect(ended.startedAt).toBeNull();
    expect(ended.error).toBe(`not started by its expiry (queueExpiresAt ${expires.toISOString()})`);
    expect(Date.parse(ended.finishedAt)).toBeGreaterThanOrEqual(expires.getTime());
    const list: any[] = await srv.must('GET', `/api/deployments?projectId=${proj.id}&state=cancelled`);
    expect(list.find((d) => d.id === r.body.id)?.error).toMatch(/^not started by its expiry/);
    expect((await srv.readLog(r.body.id)).map((e) => e.text)).toContain(`Deployment cancelled: ${ended.error}`);
    expect(recorded('web-03', 'nightly.log')).toEqual([]);
    await srv.waitDeployment(long.body.id);
  });

  // Invariant: bad schedules are a 400 naming the field, and create nothing; a scheduled deployment cancelled
  // before its time ends `cancelled` at once.
  it('refuses bad schedules and cancels a scheduled one at once', async () => {
    const before = (await srv.must('GET', `/api/deployments?projectId=${proj.id}`)).length;
    const soon = new Date(Date.now() + 60_000).toISOString();
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ queueAt: new Date(Date.now() - 60_000).toISOString() }, /^queueAt must not be in the past/],
      [{ queueAt: 'tomorrow' }, /^queueAt must be an ISO-8601 time/],
      [{ queueAt: soon, queueExpiresAt: soon }, /^queueExpiresAt must be after queueAt/],
      [{ queueAt: 42 }, /queueAt must be a string/],
      [{ queueExpiresAt: new Date(Date.now() - 1000).toISOString() }, /^queueExpiresAt must be in the future/],
    ];
    for (const [body, message] of bad) {
      const r = await deploy(rel.id, body);
      expect([body, r.status, r.body.code]).toEqual([body, 400, 'validation_failed']);
      expect(msg(r)).toMatch(message);
    }
    expect((await srv.must('GET', `/api/deployments?projectId=${proj.id}`)).length).toBe(before);
    const r = await deploy(rel.id, { queueAt: soon });
    expect(r.body.state).toBe('scheduled');
    await srv.must('POST', `/api/deployments/${r.body.id}/cancel`);
    const d = await srv.must('GET', `/api/deployments/${r.body.id}`);
    expect(d).toMatchObject({ state: 'cancelled', error: 'cancelled before its scheduled time' });
  });

  // Invariant: the CLI schedules with --at (and --expires), says so, and with --wait waits for the time and then
  // follows the deployment to its end (exit 0); `cuttle deployments --state scheduled` lists scheduled ones with their
  // time; a malformed --at is bad usage (exit 2) naming it, before anything is asked of the server.
  it('schedules from the CLI and lists scheduled deployments', async () => {
    const key = (await srv.must('POST', '/api/api-keys', { name: 'cli-day-two', role: 'admin' })).key;
    const ca = join(srv.dir, 'day-two-ca.crt');
    writeFileSync(ca, srv.ca);
    const cli = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const p = spawn(process.execPath, ['bin/cuttle.js', ...args], {
          cwd: ROOT,
          env: {
            ...process.env,
            CUTTLE_SERVER: srv.base,
            CUTTLE_API_KEY: key,
            CUTTLE_CA_FILE: ca,
            CUTTLE_CONFIG: join(srv.dir, 'none.json'),
          },
        });
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (c) => (stdout += c));
        p.stderr.on('data', (c) => (stderr += c));
        p.on('close', (code) => resolve({ code, stdout, stderr }));
      });
    const base = ['deploy', '--project', 'Nightly', '--release', '1.0.0', '--environment', 'Live'];
    const bad = await cli([...base, '--at', 'tonight']);
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining('--at must be an ISO-8601 time')]);
    const later = new Date(Date.now() + 3_600_000).toISOString();
    const far = await cli([...base, '--at', later, '--expires', new Date(Date.now() + 7_200_000).toISOString()]);
    expect([far.code, far.stderr]).toEqual([0, expect.stringContaining(`scheduled for ${later}`)]);
    const listed = await cli(['deployments', '--project', 'Nightly', '--state', 'scheduled', '--json']);
    expect(JSON.parse(listed.stdout)).toEqual([
      expect.objectContaining({ id: far.stdout.trim(), state: 'scheduled', queueAt: later }),
    ]);
    const table = await cli(['deployments', '--project', 'Nightly', '--state', 'scheduled']);
    expect(table.stdout).toContain(`at ${later}`);
    await srv.must('POST', `/api/deployments/${far.stdout.trim()}/cancel`);
    const soon = new Date(Date.now() + 2000).toISOString();
    const waited = await cli([...base, '--at', soon, '--wait']);
    expect(waited.stderr).toContain(`scheduled: queued at ${soon}`);
    expect(waited.code).toBe(0);
  });

  // Invariant: a schedule lives in the database: a server stopped while a deployment is scheduled and started again
  // after its time queues it then (late, as soon as it is back) and runs it.
  it('survives a restart', async () => {
    const queueAt = new Date(Date.now() + 4000);
    const r = await deploy(rel.id, { queueAt: queueAt.toISOString(), specificMachineIds: [ids['web-01']] });
    await srv.stop({ keepData: true });
    await sleep(Math.max(0, queueAt.getTime() - Date.now()) + 500);
    srv = await startServer({ reuse: srv });
    const done = await srv.waitDeployment(r.body.id, 90_000);
    expect(done.state).toBe('success');
    expect(Date.parse(done.startedAt)).toBeGreaterThanOrEqual(queueAt.getTime());
  }, 180_000);
});
