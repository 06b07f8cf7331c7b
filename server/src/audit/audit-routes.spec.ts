/**
 * The audit table's reading of requests, without a server: which route a path is, what a route the table does not
 * know is called, outcomes by status, and summaries that hold no value from a request body.
 */
import { derive, describe as describeRequest, isAudited, matchRoute, outcomeOf, safeText } from './audit-routes.js';

const names = { environment: async () => 'Production', project: async () => 'Shop' };
const P = '3f1c2f7e-1b2a-4c3d-8e9f-0a1b2c3d4e5f';

// A literal segment wins over a parameter, and parameters come back by name.
it('matches routes by method and path', () => {
  expect(matchRoute('PUT', `/api/projects/${P}/variables`)).toEqual({
    key: 'PUT /api/projects/:id/variables',
    params: { id: P },
  });
  expect(matchRoute('POST', '/api/packages/web/1.2.3')?.params).toEqual({ packageId: 'web', version: '1.2.3' });
  expect(matchRoute('POST', '/api/agents/register')?.key).toBe('POST /api/agents/register');
  expect(matchRoute('GET', `/api/projects/${P}`)).toBeUndefined();
  expect(matchRoute('POST', '/api/nowhere')).toBeUndefined();
});

// Mutations are always audited, reads only when refused; 401/403 are denied, other errors failed.
it('audits mutations and refusals', () => {
  expect(['POST', 'PUT', 'PATCH', 'DELETE'].every((m) => isAudited(m, 200))).toBe(true);
  expect([isAudited('GET', 200), isAudited('GET', 404), isAudited('GET', 401), isAudited('GET', 403)]).toEqual([
    false,
    false,
    true,
    true,
  ]);
  expect([200, 201, 204, 302, 400, 401, 403, 404, 409, 500].map(outcomeOf)).toEqual([
    'ok',
    'ok',
    'ok',
    'ok',
    'failed',
    'denied',
    'denied',
    'failed',
    'failed',
    'failed',
  ]);
});

// A route added later, or a refused read, is named from its path: resource type, uuid as id, method as verb.
it('derives names for routes it does not know', () => {
  expect(derive('POST', '/api/lifecycles')).toEqual({
    action: 'lifecycle.create',
    resourceType: 'lifecycle',
    resourceId: null,
  });
  expect(derive('GET', `/api/projects/${P}/variables`)).toEqual({
    action: 'project.variables.read',
    resourceType: 'project',
    resourceId: P,
  });
  expect(derive('POST', `/api/releases/${P}/promote`).action).toBe('release.promote');
  expect(derive('DELETE', `/api/webhooks/${P}`).action).toBe('webhook.delete');
  expect(derive('GET', '/api/registration-tokens').resourceType).toBe('registration-token');
});

// A variables change is summed up by counts: no name's value, no scope, nothing of the body but how many.
it('summarises variables without their values', async () => {
  const d = await describeRequest(
    {
      method: 'PUT',
      path: `/api/projects/${P}/variables`,
      status: 200,
      body: { variables: [{ name: 'Pw', value: 'p4ss', sensitive: true }] },
      result: {
        projectId: P,
        version: 4,
        variables: [
          { name: 'Pw', value: '********', sensitive: true },
          { name: 'Url', value: 'https://internal.example', sensitive: false },
        ],
      },
    },
    names,
  );
  expect(d).toEqual({
    action: 'project.variables.update',
    resourceType: 'project',
    resourceId: P,
    outcome: 'ok',
    summary: 'project "Shop": variables version 4, 2 variables (1 sensitive)',
  });
});

// A refused request is summed up by its error code: its message (which may quote the input) is left out.
it('summarises failures by their code', async () => {
  const d = await describeRequest(
    {
      method: 'POST',
      path: '/api/deployments',
      status: 400,
      body: undefined,
      result: { statusCode: 400, code: 'unknown_reference', message: 'environment "secret-ish" not found' },
    },
    names,
  );
  expect(d).toMatchObject({ action: 'deployment.create', outcome: 'failed', resourceId: null });
  expect(d.summary).toBe('failed: unknown_reference (400)');
});

// A create takes its id from the response; a deployment names its environment and release.
it('takes a created id from the response', async () => {
  const d = await describeRequest(
    {
      method: 'POST',
      path: '/api/deployments',
      status: 201,
      body: { releaseId: P, environmentId: P },
      result: { id: 'd-1', releaseVersion: '1.4.0', environmentId: P, state: 'queued' },
    },
    names,
  );
  expect(d).toMatchObject({ resourceId: 'd-1', summary: 'release 1.4.0 to "Production"' });
});

// Text from outside is one short line.
it('keeps summary text short and on one line', () => {
  expect(safeText('a\nb\u0000c')).toBe('a b c');
  expect(safeText('x'.repeat(100), 10)).toBe(`${'x'.repeat(9)}…`);
  expect(safeText({ toString: () => 'no' })).toBe('');
});
