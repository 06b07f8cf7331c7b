/**
 * Health as operators and load balancers see it: readiness, on-demand and scheduled agent health checks with the
 * reason when unhealthy.
 */
import { startAgent, startServer, stopAll, waitFor, waitOnline, type TestServer } from './support/fixtures.js';

let srv: TestServer;

beforeAll(async () => {
  // A disk requirement no machine meets, and a check every second.
  srv = await startServer({ env: { CUTTLE_MIN_FREE_DISK_MB: String(1024 * 1024 * 1024), CUTTLE_HEALTH_CHECK_INTERVAL_SECONDS: '1' } });
}, 120_000);

afterAll(async () => {
  await srv?.stop();
  await stopAll();
});

// Ready means the database answers and the migrations are applied; no API key is needed.
it('reports readiness', async () => {
  const r = await srv.request('GET', '/api/health/ready', undefined, { key: null });
  expect(r.status).toBe(200);
  expect(r.body).toMatchObject({ status: 'ready', database: 'up', migrations: 'applied' });
});

// A machine short of disk is unhealthy with the numbers in the reason; one whose agent went away becomes unhealthy
// "not connected" on the schedule.
it('marks machines unhealthy with the reason', async () => {
  const env = await srv.must('POST', '/api/environments', { name: 'H' });
  const { token } = await srv.must('POST', '/api/registration-tokens', { environmentIds: [env.id], roles: ['h'] });
  const agent = startAgent(srv, { name: 'h-1', roles: ['h'], environments: ['H'], token });
  const m = (await waitOnline(srv, ['h-1'])).find((x: any) => x.name === 'h-1');
  const r = await srv.must('POST', `/api/machines/${m.id}/health-check`);
  expect(r).toMatchObject({ machineId: m.id, health: 'unhealthy', agentVersion: '0.1.0' });
  expect(r.reason).toMatch(/^only \d+ MB free in .+ \(at least \d+ MB needed\)$/);
  expect(r.roundTripMs).toBeGreaterThanOrEqual(0);
  expect(r.freeDiskBytes).toBeGreaterThan(0);
  expect((await srv.must('GET', `/api/machines/${m.id}`)).healthReason).toBe(r.reason);
  await agent.stop();
  await waitFor('h-1 unhealthy: not connected', async () => (await srv.must('GET', `/api/machines/${m.id}`)).healthReason?.startsWith('not connected'), 30_000);
  expect((await srv.must('POST', `/api/machines/${m.id}/health-check`)).health).toBe('unhealthy');
});
