/**
 * Health as operators and load balancers see it: readiness, on-demand and scheduled agent health checks with the
 * reason when unhealthy.
 */
import { startAgent, startServer, stopAll, waitFor, waitOnline, type TestServer } from './support/fixtures.js';

let srv: TestServer;

beforeAll(async () => {
  // A disk requirement no machine meets, and a check every second.
  srv = await startServer({
    env: { CUTTLE_MIN_FREE_DISK_MB: String(1024 * 1024 * 1024), CUTTLE_HEALTH_CHECK_INTERVAL_SECONDS: '1' },
  });
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
  await waitFor(
    'h-1 unhealthy: not connected',
    async () => (await srv.must('GET', `/api/machines/${m.id}`)).healthReason?.startsWith('not connected'),
    30_000,
  );
  expect((await srv.must('POST', `/api/machines/${m.id}/health-check`)).health).toBe('unhealthy');
});

// The OpenAPI document is generated from the code and covers every endpoint of docs/api.md; both the page and
// the JSON are public.
it('documents the REST API at /api/docs', async () => {
  const page = await srv.request('GET', '/api/docs', undefined, { key: null });
  expect(page.status).toBe(200);
  expect(page.text).toMatch(/swagger/i);
  const doc = (await srv.request('GET', '/api/docs-json', undefined, { key: null })).body;
  const contract: Array<[string, string]> = [
    ['post', '/api/environments'],
    ['get', '/api/environments'],
    ['post', '/api/registration-tokens'],
    ['post', '/api/agents/register'],
    ['get', '/api/machines'],
    ['get', '/api/machines/{id}'],
    ['patch', '/api/machines/{id}'],
    ['delete', '/api/machines/{id}'],
    ['post', '/api/machines/{id}/health-check'],
    ['post', '/api/projects'],
    ['get', '/api/projects'],
    ['get', '/api/projects/{id}'],
    ['get', '/api/projects/{id}/deployment-process'],
    ['put', '/api/projects/{id}/deployment-process'],
    ['post', '/api/projects/{id}/channels'],
    ['get', '/api/projects/{id}/channels'],
    ['put', '/api/projects/{id}/variables'],
    ['post', '/api/packages/{packageId}/{version}'],
    ['get', '/api/packages'],
    ['post', '/api/releases'],
    ['post', '/api/deployments'],
    ['get', '/api/deployments/{id}'],
    ['get', '/api/deployments/{id}/log'],
    ['post', '/api/deployments/{id}/cancel'],
    ['get', '/api/deployments/preview'],
    ['get', '/api/interruptions'],
    ['post', '/api/interruptions/{id}/submit'],
    ['get', '/api/health'],
  ];
  const missing = contract.filter(([m, p]) => !doc.paths?.[p]?.[m]);
  expect(missing).toEqual([]);
  expect(doc.components.securitySchemes.apiKey).toMatchObject({ type: 'apiKey', in: 'header', name: 'X-Api-Key' });
  const steps =
    doc.paths['/api/projects/{id}/deployment-process'].put.requestBody.content['application/json'].schema.properties
      .steps;
  expect(steps.items.properties).toHaveProperty('windowSize');
});
