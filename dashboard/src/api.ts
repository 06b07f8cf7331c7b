/**
 * REST access with the signed-in API key. The key lives in sessionStorage (gone when the browser session ends) unless
 * the person ticked "remember me", which keeps it in localStorage until they sign out: a key that can deploy to
 * Production should not outlive the visit by default.
 */
const KEY = 'cuttle.apiKey';

export const auth = {
  get key(): string | null {
    return sessionStorage.getItem(KEY) ?? localStorage.getItem(KEY);
  },
  set(key: string, remember = false) {
    this.clear();
    (remember ? localStorage : sessionStorage).setItem(KEY, key);
  },
  clear() {
    sessionStorage.removeItem(KEY);
    localStorage.removeItem(KEY);
  },
};

/** A refused or failed request: the one client error type (shared/src/api/api-error.ts), served to the browser. */
export { ApiError } from './shared/api/api-error.js';
import { ApiError } from './shared/api/api-error.js';

let onUnauthorized: () => void = () => {};
export const setUnauthorizedHandler = (fn: () => void) => (onUnauthorized = fn);

export async function api<T = unknown>(method: string, path: string, body?: unknown, key = auth.key): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (key) headers['x-api-key'] = key;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!r.ok) {
    if (r.status === 401 && key === auth.key) onUnauthorized();
    throw ApiError.from(r.status, parsed, text || r.statusText);
  }
  return parsed as T;
}

export const get = <T = unknown>(path: string) => api<T>('GET', path);
export const q = (params: Record<string, string | number | undefined>) =>
  Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');

// The API's responses: the one definition in shared/src/api/types.ts (its declarations, emitted by the build; type
// imports only, so nothing of it is loaded in the browser).
export type {
  AuditEvent,
  Channel,
  Deployment,
  Environment,
  Interruption,
  Lifecycle,
  LogEntry,
  Machine,
  Me,
  Permission,
  Preview as DeploymentPreview,
  Progression,
  Project,
  RegistrationToken,
  Release,
  SteerAccepted,
  StepRun,
  TargetRun,
} from '#api';

// The process editor's drafts: a step or action as the person edits it (fields may be half-typed until saved).
export interface Action {
  name: string;
  type: 'script' | 'package' | 'manual-intervention' | 'email';
  script?: string;
  /** An email action's recipients, subject and body (sent by the server). */
  to?: string[];
  subject?: string;
  body?: string;
  packageId?: string;
  /** Package actions: globs of files whose #{Name} the agent replaces after unpacking. */
  substituteInFiles?: string[];
  instructions?: string;
  timeoutSeconds?: number;
  retries?: number;
  disabled?: boolean;
  environmentIds?: string[];
  excludedEnvironmentIds?: string[];
  channelIds?: string[];
  retryDelaySeconds?: number;
  [k: string]: unknown;
}
/** A step's health check as edited (the script may still be empty while the other fields are typed). */
export interface HealthCheckDraft {
  script?: string;
  timeoutSeconds?: number;
  retries?: number;
  intervalSeconds?: number;
}
export interface Step {
  name: string;
  targetRoles?: string[];
  windowSize?: number | string;
  maxFailures?: number | string;
  condition?: string;
  startTrigger?: string;
  // The rollout policy (shared/src/process): batch sizes, the bake and its health check, approvals, spreading and
  // skipping unavailable targets.
  batches?: Array<number | string>;
  bakeSeconds?: number;
  healthCheck?: HealthCheckDraft;
  approveEachBatch?: boolean;
  approvalTimeoutSeconds?: number;
  approvalDefault?: 'abort' | 'proceed';
  spreadBy?: string;
  skipUnavailable?: boolean;
  actions: Action[];
  [k: string]: unknown;
}
export interface Process {
  version: number;
  steps: Step[];
}
