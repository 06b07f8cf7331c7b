/**
 * What each route needs: the one table the API key guard checks every request against (not checks scattered over
 * controllers and services). A route is `METHOD /path/:param`, as its controller declares it. Each entry names the
 * permission the route needs and, for routes about one environment or project, where that scope is found: in the
 * path (a deployment id leads to its environment and project, an interruption to its deployment's, a release to its
 * project, a machine to its environments), the body or the query. A route missing from the table is admin-only
 * (fail closed); permissions.spec.ts fails when a controller's route has no entry.
 *
 * Roles are cumulative: viewer reads; deployer also creates releases and deployments, uploads packages, pauses,
 * resumes, cancels, retries and rolls back; approver also answers interruptions; admin does everything else too
 * (keys, environments, machines and registration tokens, projects and their process, variables and channels,
 * lifecycles, the audit log). A key limited to environments or projects holds its permissions there only.
 */
import { METHOD_METADATA, PATH_METADATA } from '@nestjs/common/constants.js';
import { RequestMethod } from '@nestjs/common';
import { PERMISSIONS, type ApiKeyRole, type Permission } from '#shared/api/types.js';

/** What a scope reference in a request names; the guard turns it into an environment and/or a project. */
export type ScopeKind = 'deployment' | 'interruption' | 'release' | 'project' | 'environment' | 'machine';

/** Where a request names the resource whose environment or project the permission must cover. */
export interface ScopeSource {
  in: 'param' | 'body' | 'query';
  field: string;
  kind: ScopeKind;
}

export interface RouteRule {
  permission: Permission;
  /** Absent: the route is not about one environment or project (lists filter to the key's scope themselves). */
  scope?: ScopeSource[];
}

/** A route that needs no key at all (it is also marked @Public() on its handler). */
export const PUBLIC = 'public' as const;

const param = (kind: ScopeKind, field = 'id'): ScopeSource => ({ in: 'param', field, kind });
const body = (kind: ScopeKind, field: string): ScopeSource => ({ in: 'body', field, kind });
const query = (kind: ScopeKind, field: string): ScopeSource => ({ in: 'query', field, kind });
const rule = (permission: Permission, ...scope: ScopeSource[]): RouteRule =>
  scope.length ? { permission, scope } : { permission };

export const ROUTE_PERMISSIONS: Readonly<Record<string, RouteRule | typeof PUBLIC>> = {
  // API keys and the key itself
  'POST /api/api-keys': rule('manage-keys'),
  'GET /api/api-keys': rule('manage-keys'),
  'DELETE /api/api-keys/:id': rule('manage-keys'),
  'GET /api/me': rule('read'),

  // Environments
  'POST /api/environments': rule('manage-environments'),
  'GET /api/environments': rule('read'),
  'GET /api/environments/:id': rule('read', param('environment')),
  'PATCH /api/environments/:id': rule('manage-environments', param('environment')),

  // Machines and registration
  'POST /api/registration-tokens': rule('manage-machines'),
  'POST /api/agents/register': PUBLIC,
  'GET /api/machines': rule('read'),
  'GET /api/machines/:id': rule('read', param('machine')),
  'PATCH /api/machines/:id': rule('manage-machines', param('machine')),
  'DELETE /api/machines/:id': rule('manage-machines', param('machine')),
  'POST /api/machines/:id/health-check': rule('manage-machines', param('machine')),

  // Projects, their process, variables and channels (edits are admin's: see docs/api.md, "Roles")
  'POST /api/projects': rule('manage-projects'),
  'GET /api/projects': rule('read'),
  'GET /api/projects/:id': rule('read', param('project')),
  'PATCH /api/projects/:id': rule('manage-projects', param('project')),
  'GET /api/projects/:id/variables': rule('read', param('project')),
  'PUT /api/projects/:id/variables': rule('edit-variables', param('project')),
  'GET /api/projects/:id/deployment-process': rule('read', param('project')),
  'PUT /api/projects/:id/deployment-process': rule('edit-process', param('project')),
  'POST /api/projects/:id/channels': rule('manage-projects', param('project')),
  'GET /api/projects/:id/channels': rule('read', param('project')),
  'PATCH /api/projects/:id/channels/:channelId': rule('manage-projects', param('project')),

  // Packages (a package belongs to no project: a scoped deployer may upload too)
  'POST /api/packages/:packageId/:version': rule('upload-packages'),
  'GET /api/packages': rule('read'),

  // Releases
  'POST /api/releases': rule('create-release', body('project', 'projectId')),
  'GET /api/releases': rule('read', query('project', 'projectId')),
  'GET /api/releases/:id': rule('read', param('release')),
  'GET /api/releases/:id/progression': rule('read', param('release')),

  // Deployments
  'POST /api/deployments': rule('deploy', body('release', 'releaseId'), body('environment', 'environmentId')),
  'GET /api/deployments': rule('read', query('project', 'projectId'), query('environment', 'environmentId')),
  'GET /api/deployments/preview': rule('read', query('release', 'releaseId'), query('environment', 'environmentId')),
  'GET /api/deployments/:id': rule('read', param('deployment')),
  'GET /api/deployments/:id/log': rule('read', param('deployment')),
  'POST /api/deployments/:id/pause': rule('pause', param('deployment')),
  'POST /api/deployments/:id/resume': rule('resume', param('deployment')),
  'POST /api/deployments/:id/cancel': rule('cancel', param('deployment')),
  'POST /api/deployments/:id/retry-failed': rule('retry', param('deployment')),
  'POST /api/deployments/:id/rollback': rule('rollback', param('deployment')),

  // Interruptions (manual interventions, guided failures, batch approvals)
  'GET /api/interruptions': rule('read', query('deployment', 'deploymentId')),
  'GET /api/interruptions/:id': rule('read', param('interruption')),
  'POST /api/interruptions/:id/submit': rule('approve', param('interruption')),

  // Lifecycles and the audit log
  'GET /api/lifecycles': rule('read'),
  'GET /api/lifecycles/:id': rule('read'),
  'POST /api/lifecycles': rule('manage-lifecycles'),
  'PATCH /api/lifecycles/:id': rule('manage-lifecycles'),
  'DELETE /api/lifecycles/:id': rule('manage-lifecycles'),
  'GET /api/events': rule('read-events'),

  // Webhooks: their URLs and secrets reach outside, so only an admin manages (and reads) them
  'POST /api/webhooks': rule('manage-webhooks'),
  'GET /api/webhooks': rule('manage-webhooks'),
  'GET /api/webhooks/:id': rule('manage-webhooks'),
  'PATCH /api/webhooks/:id': rule('manage-webhooks'),
  'DELETE /api/webhooks/:id': rule('manage-webhooks'),
  'GET /api/webhooks/:id/deliveries': rule('manage-webhooks'),

  // Health (no key)
  'GET /api/health': PUBLIC,
  'GET /api/health/ready': PUBLIC,
};

/** What a route without an entry needs: only an admin key may call it. */
export const UNLISTED: RouteRule = { permission: 'manage-keys' };

const DEPLOYER: readonly Permission[] = [
  'read',
  'create-release',
  'deploy',
  'pause',
  'resume',
  'cancel',
  'retry',
  'rollback',
  'upload-packages',
];
export const ROLE_PERMISSIONS: Readonly<Record<ApiKeyRole, readonly Permission[]>> = {
  viewer: ['read'],
  deployer: DEPLOYER,
  approver: [...DEPLOYER, 'approve'],
  admin: PERMISSIONS,
};

/** The roles that hold a permission, lowest first (for the message of a refusal). */
export const rolesWith = (p: Permission): ApiKeyRole[] =>
  (Object.keys(ROLE_PERMISSIONS) as ApiKeyRole[]).filter((r) => ROLE_PERMISSIONS[r].includes(p));

/** A permission as the verb of "key 'ci' (viewer) may not ...". */
export const PERMISSION_VERBS: Readonly<Record<Permission, string>> = {
  read: 'read',
  'create-release': 'create releases',
  deploy: 'deploy',
  pause: 'pause deployments',
  resume: 'resume deployments',
  cancel: 'cancel deployments',
  retry: 'retry deployments',
  rollback: 'roll back deployments',
  'upload-packages': 'upload packages',
  approve: 'approve',
  'manage-projects': 'manage projects',
  'edit-process': 'edit deployment processes',
  'edit-variables': 'edit variables',
  'manage-environments': 'manage environments',
  'manage-machines': 'manage machines',
  'manage-keys': 'manage API keys',
  'manage-lifecycles': 'manage lifecycles',
  'read-events': 'read the audit log',
  'manage-webhooks': 'manage webhooks',
};

/** A controller handler's route as the table spells it: `GET /api/deployments/:id`. */
export function routeOf(controller: object, handler: object): string {
  const method = Reflect.getMetadata(METHOD_METADATA, handler) as RequestMethod | undefined;
  const parts = [Reflect.getMetadata(PATH_METADATA, controller), Reflect.getMetadata(PATH_METADATA, handler)]
    .flatMap((p: string | string[] | undefined) => (Array.isArray(p) ? p : [p ?? '']))
    .flatMap((p) => p.split('/'))
    .filter(Boolean);
  return `${RequestMethod[method ?? RequestMethod.GET]} /${parts.join('/')}`;
}

/** The rule of a route: its entry, or admin-only when it has none. */
export function ruleOf(route: string): RouteRule | typeof PUBLIC {
  return ROUTE_PERMISSIONS[route] ?? UNLISTED;
}
