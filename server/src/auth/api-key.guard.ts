import { CanActivate, createParamDecorator, ExecutionContext, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { Request } from 'express';
import type { ApiKeyRole, Permission } from '#shared/api/types.js';
import { DomainError } from '../common/errors.js';
import { IS_PUBLIC } from '../common/http.js';
import { ApiKeysService } from './api-keys.service.js';
import { PERMISSION_VERBS, PUBLIC, ROLE_PERMISSIONS, rolesWith, routeOf, ruleOf } from './permissions.js';
import { outsideScope, ScopeResolver, type KeyScope } from './scope.js';

/** The API key a request was made with: who it is, what it may do, and where. */
export interface AuthenticatedKey extends KeyScope {
  id: string;
  name: string;
  role: ApiKeyRole;
}

export interface AuthedRequest extends Request {
  apiKey?: AuthenticatedKey;
  /** The key's name (who answered an interruption, who did what): kept for the code that reads only the name. */
  apiKeyName?: string;
  apiKeyId?: string;
}

/** The key a request that passed the guard was made with. */
export function authenticatedKey(req: Request): AuthenticatedKey {
  const key = (req as AuthedRequest).apiKey;
  if (!key) throw new DomainError('unauthorized', 'X-Api-Key header is required');
  return key;
}

/** A handler parameter: the request's key (see `authenticatedKey`). */
export const CurrentKey = createParamDecorator((_: unknown, ctx: ExecutionContext) =>
  authenticatedKey(ctx.switchToHttp().getRequest<Request>()),
);

/** Whether a key's role holds a permission (its scope aside). */
export const mayAtAll = (key: Pick<AuthenticatedKey, 'role'>, p: Permission) => ROLE_PERMISSIONS[key.role].includes(p);

/**
 * Every /api route needs `X-Api-Key` unless marked @Public(); then the key must hold what the route needs, where
 * the route acts, as the one table of permissions.ts says (a route without an entry is admin-only).
 */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly keys: ApiKeysService,
    private readonly scopes: ScopeResolver,
  ) {}

  async canActivate(ctx: ExecutionContext): Promise<boolean> {
    if (this.reflector.getAllAndOverride<boolean>(IS_PUBLIC, [ctx.getHandler(), ctx.getClass()])) return true;
    const req = ctx.switchToHttp().getRequest<AuthedRequest>();
    const header = req.header('x-api-key');
    if (!header) throw new DomainError('unauthorized', 'X-Api-Key header is required');
    const key = await this.keys.verify(header);
    if (!key) throw new DomainError('unauthorized', 'X-Api-Key is not a valid API key');
    req.apiKey = key;
    req.apiKeyName = key.name;
    req.apiKeyId = key.id;
    await this.authorize(key, routeOf(ctx.getClass(), ctx.getHandler()), req);
    return true;
  }

  /** Refuses (403 `forbidden`, naming the permission and the scope) what the key may not do. */
  private async authorize(key: AuthenticatedKey, route: string, req: Request): Promise<void> {
    const rule = ruleOf(route);
    if (rule === PUBLIC) return;
    const who = `key '${key.name}' (${key.role})`;
    const verb = PERMISSION_VERBS[rule.permission];
    if (!mayAtAll(key, rule.permission))
      throw new DomainError(
        'forbidden',
        `${who} may not ${verb}: that needs the ${rule.permission} permission (role ${rolesWith(rule.permission).join(', ')})`,
      );
    if (!rule.scope || (!key.environmentIds && !key.projectIds)) return;
    for (const src of rule.scope) {
      const from = src.in === 'param' ? req.params : src.in === 'query' ? req.query : req.body;
      const ref = (from as Record<string, unknown> | undefined)?.[src.field];
      // Absent or malformed: validation answers it as before; there is nothing to place.
      if (typeof ref !== 'string' || !ref) continue;
      const placed = await this.scopes.place(src.kind, ref);
      if (!placed) continue;
      const outside = outsideScope(key, placed, src.kind === 'machine');
      if (outside) throw new DomainError('forbidden', `${who} may not ${verb} ${outside}`);
    }
  }
}
