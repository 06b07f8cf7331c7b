import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { Request } from 'express';
import { DomainError } from '../common/errors.js';
import { IS_PUBLIC } from '../common/http.js';
import { ApiKeysService } from './api-keys.service.js';

export interface AuthedRequest extends Request {
  apiKeyName?: string;
  apiKeyId?: string;
}

/** Every /api route needs `X-Api-Key` unless marked @Public(). */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly keys: ApiKeysService,
  ) {}

  async canActivate(ctx: ExecutionContext): Promise<boolean> {
    if (this.reflector.getAllAndOverride<boolean>(IS_PUBLIC, [ctx.getHandler(), ctx.getClass()])) return true;
    const req = ctx.switchToHttp().getRequest<AuthedRequest>();
    const key = req.header('x-api-key');
    if (!key) throw new DomainError('unauthorized', 'X-Api-Key header is required');
    const found = await this.keys.identify(key);
    if (!found) throw new DomainError('unauthorized', 'X-Api-Key is not a valid API key');
    req.apiKeyName = found.name;
    req.apiKeyId = found.id;
    return true;
  }
}
