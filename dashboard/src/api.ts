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

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly messages: string[],
  ) {
    super(messages.join('; '));
  }
}

let onUnauthorized: () => void = () => {};
export const setUnauthorizedHandler = (fn: () => void) => (onUnauthorized = fn);

export async function api<T = any>(method: string, path: string, body?: unknown, key = auth.key): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (key) headers['x-api-key'] = key;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let parsed: any;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!r.ok) {
    const m = parsed?.message;
    const list = Array.isArray(m) ? m.map(String) : [String(m ?? (text || r.statusText))];
    if (r.status === 401 && key === auth.key) onUnauthorized();
    throw new ApiError(r.status, list);
  }
  return parsed as T;
}

export const get = <T = any>(path: string) => api<T>('GET', path);
export const q = (params: Record<string, string | number | undefined>) =>
  Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');

// Shapes used by the views (only the fields the dashboard reads).
export interface Environment { id: string; name: string; guidedFailure?: boolean }
export interface RegistrationToken { token: string; expiresAt: string }
export interface Machine {
  id: string; name: string; roles: string[]; environmentIds: string[]; status: 'online' | 'offline'; disabled: boolean;
  health: string; healthReason?: string; lastSeenAt?: string; agentVersion?: string;
}
export interface Project { id: string; name: string; slug: string; description?: string; defaultChannelId: string }
export interface Channel { id: string; name: string }
export interface Action {
  name: string; type: 'script' | 'package' | 'manual-intervention'; script?: string; packageId?: string; instructions?: string;
  timeoutSeconds?: number; retries?: number; disabled?: boolean; environmentIds?: string[]; excludedEnvironmentIds?: string[];
  channelIds?: string[]; retryDelaySeconds?: number; [k: string]: unknown;
}
export interface Step {
  name: string; targetRoles?: string[]; windowSize?: number | string; maxFailures?: number | string;
  condition?: string; startTrigger?: string; actions: Action[]; [k: string]: unknown;
}
export interface Process { version: number; steps: Step[] }
export interface Release {
  id: string; projectId: string; channelId: string; version: string; createdAt: string;
  packages: Array<{ packageId: string; version: string; sha256: string; sizeBytes: number }>;
}
export interface DeploymentPreview {
  releaseId: string; environmentId: string;
  steps: Array<{
    name: string; runsOn: 'server' | 'targets'; condition?: string; startTrigger?: string; windowSize?: number; maxFailures?: number;
    willRun: boolean; skipReason?: string; targets: Array<{ machineId: string; machineName: string }>;
    actions: Array<{ name: string; type?: string; willRun: boolean; skipReason?: string }>;
  }>;
}
export interface TargetRun {
  machineId: string | null; machineName: string; state: string; waitingFor?: string; startedAt?: string; finishedAt?: string; error?: string;
  failureKind?: string; attempt?: number; actions: Array<{ name: string; state: string; exitCode?: number | null; skipReason?: string }>;
}
export interface StepRun { name: string; state: string; windowSize?: number; maxFailures?: number; skipReason?: string; targets: TargetRun[] }
export interface Deployment {
  id: string; releaseId: string; environmentId: string; projectId?: string; releaseVersion?: string; state: string; queuedBehind?: string;
  createdAt: string; startedAt?: string; finishedAt?: string; guidedFailure?: boolean; steps: StepRun[];
}
export interface LogEntry { seq: number; at: string; level: string; machineId?: string | null; stepName?: string; actionName?: string; text: string }
export interface Interruption {
  id: string; deploymentId: string; kind: string; stepName: string; actionName: string; machineId?: string; machineName?: string;
  instructions?: string; state: string; allowedResults: string[];
}
