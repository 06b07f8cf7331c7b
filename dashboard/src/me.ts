/**
 * The signed-in API key (GET /api/me): its name and role for the header, and what it may do where, so that pages
 * show only the buttons the key may use. The server checks every request anyway; this only spares a person buttons
 * that would answer 403.
 */
import { get, type Me, type Permission } from './api.js';

let me: Me | null = null;

/** Reads the key's identity (again); null when it cannot be read. */
export async function loadMe(): Promise<Me | null> {
  me = await get<Me>('/api/me').catch(() => null);
  return me;
}

export const currentKey = (): Me | null => me;

export function forgetMe() {
  me = null;
}

/**
 * Whether the signed-in key holds `permission` there (an environment and/or a project; a key limited to others may
 * not). Before /api/me has answered, nothing is offered.
 */
export function can(permission: Permission, where: { environmentId?: string; projectId?: string } = {}): boolean {
  if (!me || !me.permissions.includes(permission)) return false;
  if (me.environmentIds && where.environmentId && !me.environmentIds.includes(where.environmentId)) return false;
  if (me.projectIds && where.projectId && !me.projectIds.includes(where.projectId)) return false;
  return true;
}
