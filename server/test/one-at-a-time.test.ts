/**
 * The window is a promise about the environment, with real agents and real scripts: deployments of one project to one
 * environment run one at a time, in creation order (a later one stays queued behind the earlier one); a machine runs
 * one deployment's scripts at a time, whatever the project (a target whose machine is busy waits without a slot),
 * unless the projects opt out; a queued deployment can be cancelled; and both rules hold across two server nodes on
 * one PostgreSQL. What ran when comes from the timestamps the scripts themselves write on each machine.
 */
import {
  createProject,
  intervals,
  maxOverlap,
  startDeployment,
  startFleet,
  startServer,
  stopAll,
  timed,
  timesIn,
  waitFor,
  waitOnline,
  type TestFleet,
  type TestServer,
} from './support/fixtures.js';

let srv: TestServer;
let fleet: TestFleet;
let env: string;

beforeAll(async () => {
  srv = await startServer();
  env = (await srv.must('POST', '/api/environments', { name: 'Shared' })).id;
  const { token } = await srv.must('POST', '/api/registration-tokens', {
    environmentIds: [env],
    roles: ['app'],
    maxUses: 4,
  });
  fleet = startFleet(srv, { prefix: 'host', count: 4, roles: ['app'], environments: ['Shared'], token });
  await waitOnline(srv, fleet.names);
}, 120_000);

afterAll(async () => {
  await fleet?.stop();
  await srv?.stop();
  await stopAll();
});

const homes = () => fleet.names.map((n) => fleet.home(n));
/** The most scripts (of any of `tags`) that ran at once on one machine. */
const perMachineOverlap = (tags: string[]) =>
  Math.max(...homes().map((h) => maxOverlap(tags.flatMap((t) => intervals([h], t)))));
const roll = (tag: string, seconds: number, windowSize: number) => [
  {
    name: 'Roll',
    targetRoles: ['app'],
    windowSize,
    actions: [{ name: 'run', type: 'script', script: timed(tag, seconds) }],
  },
];
const deploy = async (s: TestServer, projectId: string, version: string) => {
  const rel = await s.must('POST', '/api/releases', { projectId, version });
  return s.must('POST', '/api/deployments', { releaseId: rel.id, environmentId: env });
};

// Two deployments of one project to one environment, created back to back (a pipeline that fires twice): the second
// is queued behind the first and starts after it ends, so at most the window is in flight across both.
it('runs deployments of one project and environment one at a time, in creation order', async () => {
  const p = await createProject(srv, 'Twice', roll('tw-#{Cuttle.Release.Number}', 1, 2));
  const [a, b] = await Promise.all([deploy(srv, p.id, '1.0.0'), deploy(srv, p.id, '1.0.1')]);
  const [first, second] = a.createdAt <= b.createdAt ? [a, b] : [b, a];
  const waiting = await srv.must('GET', `/api/deployments/${second.id}`);
  expect(waiting.state).toBe('queued');
  expect(waiting.queuedBehind).toBe(first.id);
  expect(
    (await srv.must('GET', `/api/deployments?projectId=${p.id}`)).find((d: any) => d.id === second.id).queuedBehind,
  ).toBe(first.id);
  const [d1, d2] = [await srv.waitDeployment(first.id), await srv.waitDeployment(second.id)];
  expect([d1.state, d2.state]).toEqual(['success', 'success']);
  expect(new Date(d2.startedAt).getTime()).toBeGreaterThanOrEqual(new Date(d1.finishedAt).getTime());
  // Scripts of both releases, from the machines' own clocks: never more than the window at once, and every script of
  // the second after every script of the first.
  const [r1, r2] = [intervals(homes(), `tw-${d1.releaseVersion}`), intervals(homes(), `tw-${d2.releaseVersion}`)];
  expect([r1.length, r2.length]).toEqual([4, 4]);
  expect(maxOverlap([...r1, ...r2])).toBe(2);
  expect(Math.min(...r2.map(([s]) => s))).toBeGreaterThanOrEqual(Math.max(...r1.map(([, e]) => e)));
  const log = await srv.readLog(second.id);
  expect(log.some((e: any) => e.text.startsWith(`Queued behind deployment ${first.id}`))).toBe(true);
}, 90_000);

// Two projects on the same four machines at once: each machine runs one deployment's script at a time, the other
// project's target waits for it (holding no slot), and both deployments succeed.
it('runs one deployment at a time on a machine, whatever the project', async () => {
  const p1 = await createProject(srv, 'Web', roll('m1', 1, 4));
  const p2 = await createProject(srv, 'Jobs', roll('m2', 1, 4));
  const [a, b] = await Promise.all([startDeployment(srv, p1.id, env), startDeployment(srv, p2.id, env)]);
  const seen = new Set<string>();
  const [da, db] = await Promise.all(
    [a, b].map((d) =>
      waitFor(
        `deployment ${d.id}`,
        async () => {
          const now = await srv.must('GET', `/api/deployments/${d.id}`);
          for (const t of now.steps[0].targets) if (t.waitingFor) seen.add(t.waitingFor);
          return ['success', 'failed', 'cancelled'].includes(now.state) ? now : null;
        },
        60_000,
        100,
      ),
    ),
  );
  expect([da.state, db.state]).toEqual(['success', 'success']);
  expect(perMachineOverlap(['m1', 'm2'])).toBe(1);
  for (const h of homes())
    expect(
      timesIn(h)
        .filter((t) => t.edge === 'start' && t.tag.startsWith('m'))
        .map((t) => t.tag)
        .sort(),
    ).toEqual(['m1', 'm2']);
  expect(seen).toEqual(new Set(['machine']));
  const logs = [...(await srv.readLog(a.id)), ...(await srv.readLog(b.id))];
  expect(logs.some((e: any) => /waiting for the machine, busy with deployment [0-9a-f-]{36}/.test(e.text))).toBe(true);
}, 90_000);

// A project that allows concurrent work on machines opts out: two such projects run on the same machines at once.
it('lets projects that opt out run on a machine together', async () => {
  const p3 = await createProject(srv, 'Agent updates', roll('c1', 1.5, 4), { allowConcurrentOnMachines: true });
  const p4 = await createProject(srv, 'Metrics', roll('c2', 1.5, 4));
  expect(
    (await srv.must('PATCH', `/api/projects/${p4.id}`, { allowConcurrentOnMachines: true })).allowConcurrentOnMachines,
  ).toBe(true);
  const [a, b] = await Promise.all([startDeployment(srv, p3.id, env), startDeployment(srv, p4.id, env)]);
  expect([(await srv.waitDeployment(a.id)).state, (await srv.waitDeployment(b.id)).state]).toEqual([
    'success',
    'success',
  ]);
  expect(perMachineOverlap(['c1', 'c2'])).toBe(2);
}, 90_000);

// A deployment queued behind another can be cancelled before it starts: it ends cancelled without running anything,
// and the one queued behind it moves up and runs after the first.
it('cancels a queued deployment before it starts', async () => {
  const p = await createProject(srv, 'Cancel queued', roll('q', 1.5, 4));
  const first = await deploy(srv, p.id, '1');
  const middle = await deploy(srv, p.id, '2');
  const last = await deploy(srv, p.id, '3');
  expect((await srv.must('GET', `/api/deployments/${last.id}`)).queuedBehind).toBe(middle.id);
  expect((await srv.request('POST', `/api/deployments/${middle.id}/cancel`)).status).toBe(202);
  const m = await srv.waitDeployment(middle.id);
  expect(m.state).toBe('cancelled');
  expect(m.startedAt).toBeNull();
  expect(m.steps[0].targets.every((t: any) => t.state === 'cancelled' && t.attempt === 0)).toBe(true);
  const [f, l] = [await srv.waitDeployment(first.id), await srv.waitDeployment(last.id)];
  expect([f.state, l.state]).toEqual(['success', 'success']);
  expect(new Date(l.startedAt).getTime()).toBeGreaterThanOrEqual(new Date(f.finishedAt).getTime());
  for (const h of homes()) expect(timesIn(h).filter((t) => t.tag === 'q' && t.edge === 'start')).toHaveLength(2);
}, 90_000);

const pgOnly = process.env.DATABASE_URL ? it : it.skip;

// Two server nodes on one PostgreSQL: deployments created on (and driven by) different nodes still take turns on a
// machine, and a project's deployments to one environment still queue, whichever node created them.
pgOnly(
  'holds both rules across two server nodes',
  async () => {
    const other = await startServer({ sameDataAs: srv });
    try {
      const p1 = await createProject(srv, 'Node A', roll('n1', 1, 4));
      const p2 = await createProject(srv, 'Node B', roll('n2', 1, 4));
      const [a, b] = await Promise.all([deploy(srv, p1.id, '1'), deploy(other, p2.id, '1')]);
      expect(
        new Set([
          (await srv.must('GET', `/api/deployments/${a.id}`)).ownerNode,
          (await srv.must('GET', `/api/deployments/${b.id}`)).ownerNode,
        ]).size,
      ).toBe(2);
      const q1 = await deploy(srv, p1.id, '2');
      const q2 = await deploy(other, p1.id, '3');
      for (const d of [a, b, q1, q2]) expect((await srv.waitDeployment(d.id)).state).toBe('success');
      expect(perMachineOverlap(['n1', 'n2'])).toBe(1);
      const [d1, d2, d3] = [
        await srv.must('GET', `/api/deployments/${a.id}`),
        await srv.must('GET', `/api/deployments/${q1.id}`),
        await srv.must('GET', `/api/deployments/${q2.id}`),
      ];
      expect(new Date(d2.startedAt).getTime()).toBeGreaterThanOrEqual(new Date(d1.finishedAt).getTime());
      expect(new Date(d3.startedAt).getTime()).toBeGreaterThanOrEqual(new Date(d2.finishedAt).getTime());
    } finally {
      await other.stop({ keepData: true });
    }
  },
  120_000,
);
