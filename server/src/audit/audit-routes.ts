/**
 * What an audited request was, for people: its action, the resource it touched and a short summary, from one table
 * keyed by route. Pure (no database, no framework): the recorder (audit.recorder.ts) hands it what it saw.
 *
 * A summary is built only from fields that cannot carry a secret: names, versions, counts, states, the fields a
 * PATCH changed (their names, not their values), status codes and error codes. It never reads a variable's value, a
 * key, a token, a certificate or a script, and reads the request body only after the request succeeded (so the
 * body passed validation); a refused or failed request is summed up by its error code alone.
 */
import type { AuditOutcome } from './audit-event.entity.js';

/** What the table's summaries may read. */
export interface AuditInput {
  method: string;
  /** The path without its query string. */
  path: string;
  status: number;
  /** The request body as parsed (read only after a 2xx). */
  body: unknown;
  /** The response body as sent (JSON), when there was one. */
  result: unknown;
}

/** Names for ids, looked up by the recorder (a summary with an environment's name reads better than its id). */
export interface AuditNames {
  environment(id: unknown): Promise<string | undefined>;
  project(id: unknown): Promise<string | undefined>;
}

interface Ctx {
  params: Record<string, string>;
  body: Record<string, unknown>;
  result: Record<string, unknown>;
  names: AuditNames;
}

interface RouteAudit {
  action: string;
  resourceType: string;
  /** The path parameter naming the resource; absent for a create, whose id is the response's `id`. */
  param?: string;
  /** The created resource's id in the response, for creates that do not answer with `id`. */
  createdId?: (c: Ctx) => unknown;
  /** The summary of a request that succeeded. */
  summary?: (c: Ctx) => string | undefined | Promise<string | undefined>;
}

/** A short piece of text fit for a summary: one line, no control characters, at most `max` characters. */
export function safeText(v: unknown, max = 60): string {
  if (typeof v !== 'string' && typeof v !== 'number') return '';
  // eslint-disable-next-line no-control-regex
  const s = String(v).replace(/[\u0000-\u001f\u007f]+/g, ' ');
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}
const quoted = (v: unknown) => `"${safeText(v)}"`;
const count = (v: unknown) => (Array.isArray(v) ? v.length : 0);
const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
/** The names of the fields a PATCH sent (never their values). */
const changed = (body: Record<string, unknown>) => {
  const keys = Object.keys(body).map((k) => safeText(k, 30));
  return keys.length ? `changed ${keys.sort().join(', ')}` : 'no change';
};
const list = (v: unknown) =>
  Array.isArray(v)
    ? v
        .slice(0, 5)
        .map((x) => safeText(x, 30))
        .join(', ') + (v.length > 5 ? ', …' : '')
    : '';
const envName = async (c: Ctx, id: unknown) => (await c.names.environment(id)) ?? safeText(id);
const steered = (verb: string) => (c: Ctx) => `${verb}; deployment is ${safeText(c.result.state)}`;
const newDeployment = (verb: string) => (c: Ctx) => `${verb}: new deployment ${safeText(c.result.id)}`;

/**
 * Every mutating route of the API, keyed `METHOD /path/:param`. A route missing here is still audited, with an
 * action derived from its path (see `derive`); server/test/audit.test.ts holds the table complete against the
 * OpenAPI document.
 */
export const AUDIT_ROUTES: Record<string, RouteAudit> = {
  'POST /api/api-keys': {
    action: 'api-key.create',
    resourceType: 'api-key',
    summary: (c) => `API key ${quoted(c.result.name)}`,
  },
  'DELETE /api/api-keys/:id': {
    action: 'api-key.revoke',
    resourceType: 'api-key',
    param: 'id',
    summary: () => 'revoked',
  },
  'POST /api/environments': {
    action: 'environment.create',
    resourceType: 'environment',
    summary: (c) => `environment ${quoted(c.result.name)}`,
  },
  'PATCH /api/environments/:id': {
    action: 'environment.update',
    resourceType: 'environment',
    param: 'id',
    summary: (c) => `environment ${quoted(c.result.name)}: ${changed(c.body)}`,
  },
  'POST /api/registration-tokens': {
    action: 'registration-token.create',
    resourceType: 'registration-token',
    summary: (c) =>
      `token for ${plural(count(c.body.environmentIds), 'environment')}, roles [${list(c.body.roles)}], ` +
      `${plural(typeof c.body.maxUses === 'number' ? c.body.maxUses : 1, 'use')}`,
  },
  'POST /api/agents/register': {
    action: 'machine.register',
    resourceType: 'machine',
    createdId: (c) => c.result.machineId,
    summary: (c) => `machine ${quoted(c.body.name)}, roles [${list(c.body.roles)}]`,
  },
  'PATCH /api/machines/:id': {
    action: 'machine.update',
    resourceType: 'machine',
    param: 'id',
    summary: (c) => `machine ${quoted(c.result.name)}: ${changed(c.body)}`,
  },
  'DELETE /api/machines/:id': {
    action: 'machine.revoke',
    resourceType: 'machine',
    param: 'id',
    summary: () => 'revoked: its certificate is refused from now on',
  },
  'POST /api/machines/:id/health-check': {
    action: 'machine.health-check',
    resourceType: 'machine',
    param: 'id',
    summary: (c) => `health ${safeText(c.result.health)}`,
  },
  'POST /api/projects': {
    action: 'project.create',
    resourceType: 'project',
    summary: (c) => `project ${quoted(c.result.name)}`,
  },
  'PATCH /api/projects/:id': {
    action: 'project.update',
    resourceType: 'project',
    param: 'id',
    summary: (c) => `project ${quoted(c.result.name)}: ${changed(c.body)}`,
  },
  'PUT /api/projects/:id/variables': {
    action: 'project.variables.update',
    resourceType: 'project',
    param: 'id',
    // Counts only: a variable's value never reaches the audit log, and neither do its scopes.
    summary: async (c) => {
      const vars = Array.isArray(c.result.variables) ? (c.result.variables as Array<{ sensitive?: unknown }>) : [];
      const sensitive = vars.filter((v) => v?.sensitive === true).length;
      const name = await c.names.project(c.params.id);
      return `${name ? `project ${quoted(name)}: ` : ''}variables version ${safeText(c.result.version)}, ${plural(vars.length, 'variable')} (${sensitive} sensitive)`;
    },
  },
  'PUT /api/projects/:id/deployment-process': {
    action: 'project.process.update',
    resourceType: 'project',
    param: 'id',
    summary: async (c) => {
      const steps = Array.isArray(c.result.steps) ? (c.result.steps as Array<{ name?: unknown }>) : [];
      const name = await c.names.project(c.params.id);
      return `${name ? `project ${quoted(name)}: ` : ''}process version ${safeText(c.result.version)}, ${plural(steps.length, 'step')} [${list(steps.map((s) => s?.name))}]`;
    },
  },
  'POST /api/projects/:id/channels': {
    action: 'project.channel.create',
    resourceType: 'project',
    param: 'id',
    summary: (c) => `channel ${quoted(c.result.name)} (${safeText(c.result.id)})`,
  },
  'PATCH /api/projects/:id/channels/:channelId': {
    action: 'project.channel.update',
    resourceType: 'project',
    param: 'id',
    summary: (c) => `channel ${quoted(c.result.name)} (${safeText(c.params.channelId)}): ${changed(c.body)}`,
  },
  'POST /api/lifecycles': {
    action: 'lifecycle.create',
    resourceType: 'lifecycle',
    summary: (c) => {
      const phases = Array.isArray(c.result.phases) ? (c.result.phases as Array<{ name?: unknown }>) : [];
      return `lifecycle ${quoted(c.result.name)}: ${plural(phases.length, 'phase')} [${list(phases.map((p) => p?.name))}]`;
    },
  },
  'PATCH /api/lifecycles/:id': {
    action: 'lifecycle.update',
    resourceType: 'lifecycle',
    param: 'id',
    summary: (c) => `lifecycle ${quoted(c.result.name)}: ${changed(c.body)}`,
  },
  'DELETE /api/lifecycles/:id': {
    action: 'lifecycle.delete',
    resourceType: 'lifecycle',
    param: 'id',
    summary: () => 'deleted',
  },
  'POST /api/packages/:packageId/:version': {
    action: 'package.upload',
    resourceType: 'package',
    param: 'packageId',
    summary: (c) => `version ${safeText(c.result.version)}, ${safeText(c.result.sizeBytes)} bytes`,
  },
  'POST /api/releases': {
    action: 'release.create',
    resourceType: 'release',
    summary: async (c) => {
      const project = await c.names.project(c.result.projectId);
      return `release ${safeText(c.result.version)}${project ? ` of project ${quoted(project)}` : ''}`;
    },
  },
  'POST /api/deployments': {
    action: 'deployment.create',
    resourceType: 'deployment',
    summary: async (c) =>
      `release ${safeText(c.result.releaseVersion)} to ${quoted(await envName(c, c.result.environmentId))}`,
  },
  'POST /api/deployments/:id/pause': {
    action: 'deployment.pause',
    resourceType: 'deployment',
    param: 'id',
    summary: steered('paused'),
  },
  'POST /api/deployments/:id/resume': {
    action: 'deployment.resume',
    resourceType: 'deployment',
    param: 'id',
    summary: steered('resumed'),
  },
  'POST /api/deployments/:id/cancel': {
    action: 'deployment.cancel',
    resourceType: 'deployment',
    param: 'id',
    summary: steered('cancel requested'),
  },
  'POST /api/deployments/:id/retry-failed': {
    action: 'deployment.retry-failed',
    resourceType: 'deployment',
    param: 'id',
    summary: newDeployment('retried failed targets'),
  },
  'POST /api/deployments/:id/rollback': {
    action: 'deployment.rollback',
    resourceType: 'deployment',
    param: 'id',
    summary: newDeployment('rolled back'),
  },
  'POST /api/interruptions/:id/submit': {
    action: 'interruption.submit',
    resourceType: 'interruption',
    param: 'id',
    summary: (c) =>
      `${safeText(c.result.kind ?? 'interruption')} answered ${safeText(c.body.result)}` +
      (c.result.stepName ? ` at step ${quoted(c.result.stepName)}` : ''),
  },
  // A webhook's URL may carry a token in its query: the summary names its host only, never its secret.
  'POST /api/webhooks': {
    action: 'webhook.create',
    resourceType: 'webhook',
    summary: (c) => `webhook to ${hostOf(c.result.url)} for [${list(c.body.events)}]`,
  },
  'PATCH /api/webhooks/:id': {
    action: 'webhook.update',
    resourceType: 'webhook',
    param: 'id',
    summary: (c) => `webhook to ${hostOf(c.result.url)}: ${changed(c.body)}`,
  },
  'DELETE /api/webhooks/:id': {
    action: 'webhook.delete',
    resourceType: 'webhook',
    param: 'id',
    summary: () => 'deleted',
  },
};

function hostOf(url: unknown): string {
  try {
    return safeText(new URL(String(url)).host);
  } catch {
    return 'an invalid URL';
  }
}

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
export const isMutating = (method: string) => MUTATING.has(method.toUpperCase());

/** Whether a request is audited: any mutating request, and any refused one (401, 403), whatever the method. */
export const isAudited = (method: string, status: number) => isMutating(method) || status === 401 || status === 403;

export function outcomeOf(status: number): AuditOutcome {
  if (status === 401 || status === 403) return 'denied';
  return status >= 400 ? 'failed' : 'ok';
}

/** The table's entry for a request, with the path parameters it names; literal segments win over parameters. */
export function matchRoute(method: string, path: string): { key: string; params: Record<string, string> } | undefined {
  const segs = splitPath(path);
  let best: { key: string; params: Record<string, string>; score: number } | undefined;
  for (const key of Object.keys(AUDIT_ROUTES)) {
    const [m, pattern] = key.split(' ');
    if (m !== method.toUpperCase()) continue;
    const ps = splitPath(pattern);
    if (ps.length !== segs.length) continue;
    const params: Record<string, string> = {};
    let score = 0;
    let ok = true;
    for (let i = 0; i < ps.length && ok; i++) {
      if (ps[i].startsWith(':')) params[ps[i].slice(1)] = segs[i];
      else if (ps[i] === segs[i]) score++;
      else ok = false;
    }
    if (ok && (!best || score > best.score)) best = { key, params, score };
  }
  return best && { key: best.key, params: best.params };
}

function splitPath(path: string): string[] {
  return path
    .split('/')
    .filter(Boolean)
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return s;
      }
    });
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const singular = (s: string) => (s.endsWith('ies') ? `${s.slice(0, -3)}y` : s.endsWith('s') ? s.slice(0, -1) : s);
const VERB: Record<string, string> = { GET: 'read', POST: 'create', PUT: 'update', PATCH: 'update', DELETE: 'delete' };

/**
 * A route the table does not know (a refused read, a route added later, a path that matches nothing): the first
 * segment after /api is the resource type, a uuid segment its id, the other segments and the method the action:
 * GET /api/projects/ID/variables is `project.variables.read`, POST /api/lifecycles `lifecycle.create`.
 */
export function derive(
  method: string,
  path: string,
): { action: string; resourceType: string; resourceId: string | null } {
  const segs = splitPath(path).slice(1); // without "api"
  const resourceType = safeText(singular(segs[0] ?? 'api'), 40).toLowerCase() || 'api';
  const id = segs.slice(1).find((s) => UUID_RE.test(s)) ?? null;
  const rest = segs
    .slice(1)
    .filter((s) => !UUID_RE.test(s))
    .map((s) => safeText(s, 40));
  const verb = VERB[method.toUpperCase()] ?? method.toLowerCase();
  // POST to a sub-path is an action of its own (…/cancel), not a create.
  const tail = method.toUpperCase() === 'POST' && rest.length ? rest : [...rest, verb];
  return { action: [resourceType, ...tail].join('.'), resourceType, resourceId: id && id.toLowerCase() };
}

export interface AuditDescription {
  action: string;
  resourceType: string;
  resourceId: string | null;
  outcome: AuditOutcome;
  summary: string;
}

const record = (v: unknown): Record<string, unknown> =>
  v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};

/** Action, resource, outcome and summary of one audited request. */
export async function describe(input: AuditInput, names: AuditNames): Promise<AuditDescription> {
  const outcome = outcomeOf(input.status);
  const match = matchRoute(input.method, input.path);
  const spec = match && AUDIT_ROUTES[match.key];
  const base = spec
    ? {
        action: spec.action,
        resourceType: spec.resourceType,
        resourceId: spec.param ? safeText(match.params[spec.param], 200) || null : null,
      }
    : derive(input.method, input.path);
  let summary: string;
  if (outcome === 'ok') {
    const ctx: Ctx = {
      params: match?.params ?? {},
      body: record(input.body),
      result: record(input.result),
      names,
    };
    if (spec && !spec.param) {
      const created = spec.createdId ? spec.createdId(ctx) : ctx.result.id;
      base.resourceId = safeText(created, 200) || null;
    }
    summary = (spec?.summary && (await spec.summary(ctx))) || `${input.method.toUpperCase()} ${input.status}`;
  } else {
    // A refusal or failure says why by its code only: the message may quote the input it refused.
    const code = safeText(record(input.result).code, 40);
    summary = `${outcome === 'denied' ? 'refused' : 'failed'}: ${code || 'error'} (${input.status})`;
    if (!spec) summary += ` on ${input.method.toUpperCase()} ${safeText(input.path, 80)}`;
  }
  return { ...base, outcome, summary: safeText(summary, 300) };
}
