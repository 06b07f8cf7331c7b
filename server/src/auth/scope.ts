/**
 * A key's scope (the environments and projects it is limited to) and how a request's resource is placed in it. The
 * guard resolves the resource a route names (permissions.ts says where) to its environment(s) and project with one
 * query; lists filter with `inScope` themselves.
 */
import { Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { isUuid } from '../common/http.js';
import type { ScopeKind } from './permissions.js';

/** The environments and projects a key is limited to; null: all of them. */
export interface KeyScope {
  environmentIds: string[] | null;
  projectIds: string[] | null;
}

export interface Named {
  id: string;
  name: string;
}

/**
 * Where a resource is: its environments (one for a deployment, those of a machine, none for a project or release)
 * and its project (none for an environment or machine).
 */
export interface Placement {
  environments: Named[];
  project?: Named;
}

/** Whether a resource in this environment and project is inside the key's scope (an absent side is not checked). */
export function inScope(scope: KeyScope, where: { environmentId?: string | null; projectId?: string | null }): boolean {
  if (scope.environmentIds && where.environmentId !== undefined)
    if (!where.environmentId || !scope.environmentIds.includes(where.environmentId)) return false;
  if (scope.projectIds && where.projectId !== undefined)
    if (!where.projectId || !scope.projectIds.includes(where.projectId)) return false;
  return true;
}

/** A machine is in scope when one of its environments is (it is one resource shared by those environments). */
export function machineInScope(scope: KeyScope, environmentIds: string[]): boolean {
  return !scope.environmentIds || environmentIds.some((e) => scope.environmentIds!.includes(e));
}

/**
 * What lies outside the key's scope in a placement, for the refusal's message (`in environment 'Production'`), or
 * null when it is all inside.
 */
export function outsideScope(scope: KeyScope, p: Placement, machine = false): string | null {
  if (scope.environmentIds) {
    const outside = p.environments.filter((e) => !scope.environmentIds!.includes(e.id));
    // A machine serves several environments: it is inside when one of them is.
    const refused = machine ? outside.length === p.environments.length : outside.length > 0;
    if (refused) return outside.length ? `in environment '${outside[0].name}'` : 'on a machine in no environment';
  }
  if (scope.projectIds && p.project && !scope.projectIds.includes(p.project.id))
    return `in project '${p.project.name}'`;
  return null;
}

type Row = { env_id: string | null; env_name: string | null; project_id: string | null; project_name: string | null };

@Injectable()
export class ScopeResolver {
  constructor(private readonly ds: DataSource) {}

  /**
   * Where the resource `ref` of this kind is; null when there is no such resource (the handler then answers 404 or
   * 400 as it always has: the scope check has nothing to refuse).
   */
  async place(kind: ScopeKind, ref: string): Promise<Placement | null> {
    const byId = isUuid(ref);
    const one = (rows: Row[]): Placement | null =>
      rows.length
        ? {
            environments: rows[0].env_id ? [{ id: rows[0].env_id, name: rows[0].env_name! }] : [],
            ...(rows[0].project_id ? { project: { id: rows[0].project_id, name: rows[0].project_name! } } : {}),
          }
        : null;
    switch (kind) {
      case 'deployment':
      case 'interruption': {
        if (!byId) return null;
        const from =
          kind === 'deployment' ? `deployments d` : `interruptions i JOIN deployments d ON d.id = i.deployment_id`;
        const key = kind === 'deployment' ? 'd.id' : 'i.id';
        return one(
          await this.ds.query(
            `SELECT e.id AS env_id, e.name AS env_name, p.id AS project_id, p.name AS project_name
             FROM ${from} JOIN environments e ON e.id = d.environment_id JOIN projects p ON p.id = d.project_id
             WHERE ${key} = $1`,
            [ref],
          ),
        );
      }
      case 'release':
        if (!byId) return null;
        return one(
          await this.ds.query(
            `SELECT NULL AS env_id, NULL AS env_name, p.id AS project_id, p.name AS project_name
             FROM releases r JOIN projects p ON p.id = r.project_id WHERE r.id = $1`,
            [ref],
          ),
        );
      case 'project':
        // By id, slug or name, as the project routes accept.
        return one(
          await this.ds.query(
            `SELECT NULL AS env_id, NULL AS env_name, id AS project_id, name AS project_name FROM projects
             WHERE ${byId ? 'id = $1::uuid' : 'slug = $1 OR name = $1'} LIMIT 1`,
            [byId ? ref.toLowerCase() : ref],
          ),
        );
      case 'environment':
        return one(
          await this.ds.query(
            `SELECT id AS env_id, name AS env_name, NULL AS project_id, NULL AS project_name FROM environments
             WHERE ${byId ? 'id = $1::uuid' : 'name = $1'} LIMIT 1`,
            [byId ? ref.toLowerCase() : ref],
          ),
        );
      case 'machine': {
        if (!byId) return null;
        const [m] = await this.ds.query(`SELECT environment_ids FROM machines WHERE id = $1`, [ref]);
        if (!m) return null;
        const ids = (m.environment_ids as string[]) ?? [];
        const envs: Named[] = ids.length
          ? await this.ds.query(`SELECT id, name FROM environments WHERE id = ANY($1::uuid[]) ORDER BY name`, [ids])
          : [];
        return { environments: envs };
      }
    }
  }

  /** The ids of `refs` that are environments (by id or name), or the first unknown one. */
  async environments(refs: string[]): Promise<{ ids: string[] } | { unknown: string }> {
    return this.lookup('environments', 'name', refs);
  }

  /** The ids of `refs` that are projects (by id, slug or name), or the first unknown one. */
  async projects(refs: string[]): Promise<{ ids: string[] } | { unknown: string }> {
    return this.lookup('projects', 'slug', refs);
  }

  private async lookup(
    table: 'environments' | 'projects',
    alt: 'name' | 'slug',
    refs: string[],
  ): Promise<{ ids: string[] } | { unknown: string }> {
    const rows: Array<{ id: string; name: string; alt: string }> = await this.ds.query(
      `SELECT id, name, ${alt} AS alt FROM ${table}
       WHERE id::text = ANY($1::text[]) OR name = ANY($1::text[]) OR ${alt} = ANY($1::text[])`,
      [refs.map((r) => (isUuid(r) ? r.toLowerCase() : r))],
    );
    const ids: string[] = [];
    for (const r of refs) {
      const hit = rows.find((x) => x.id === r.toLowerCase() || x.name === r || x.alt === r);
      if (!hit) return { unknown: r };
      if (!ids.includes(hit.id)) ids.push(hit.id);
    }
    return { ids };
  }
}
