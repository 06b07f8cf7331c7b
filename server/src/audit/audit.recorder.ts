import { Inject, Injectable } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import type { AuthedRequest } from '../auth/api-key.guard.js';
import { ApiKeysService } from '../auth/api-keys.service.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { describe, isAudited, matchRoute, safeText } from './audit-routes.js';
import { AuditService } from './audit.service.js';

/** Who made a request, as the guard established it (the one place that reads what the guard sets on it). */
export function actorOf(req: AuthedRequest): { name: string; keyId: string | null } | undefined {
  if (req.apiKey) return { name: req.apiKey.name, keyId: req.apiKey.id };
  return req.apiKeyName ? { name: req.apiKeyName, keyId: req.apiKeyId ?? null } : undefined;
}

/**
 * The one place requests are audited: an Express middleware installed before the body parser (main.ts), so that it
 * sees every /api request, even one whose body could not be parsed. It keeps the JSON the request was answered with
 * (the created resource's id, or the error's code) and, once the response has been ended with its final status,
 * appends one event for every mutating request and every refused one (401/403). Writing happens after the answer
 * is handed over: a failed insert is logged and never fails or delays the request.
 */
@Injectable()
export class AuditRecorder {
  private readonly log: Logger;

  constructor(
    private readonly audit: AuditService,
    private readonly keys: ApiKeysService,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'audit' });
  }

  readonly middleware = (req: Request, res: Response, next: NextFunction) => {
    if (!/^\/api(\/|$)/.test(req.path)) return next();
    let sent: unknown;
    let ended = false;
    const json = res.json.bind(res);
    res.json = (body: unknown) => {
      sent = body;
      return json(body);
    };
    // At end() rather than on 'finish': a client that hung up before its answer never sees 'finish', but the
    // change it asked for may still have been made, and the handler still ends the response with its status.
    const end = res.end.bind(res) as (...args: unknown[]) => Response;
    res.end = ((...args: unknown[]) => {
      const r = end(...args);
      if (!ended) {
        ended = true;
        if (isAudited(req.method, res.statusCode))
          this.record(req as AuthedRequest, res.statusCode, sent).catch((e: Error) =>
            this.log.error(`could not record ${req.method} ${req.path} in the audit log`, { error: e.message }),
          );
      }
      return r;
    }) as Response['end'];
    next();
  };

  private async record(req: AuthedRequest, status: number, sent: unknown): Promise<void> {
    const ok = status < 400;
    const d = await describe(
      { method: req.method, path: req.path, status, body: ok ? req.body : undefined, result: sent },
      this.audit.names,
    );
    const who = await this.who(req, status);
    await this.audit.append({
      actor: who.name,
      actorKeyId: who.keyId,
      action: d.action,
      resourceType: d.resourceType,
      resourceId: d.resourceId,
      outcome: d.outcome,
      status,
      summary: d.summary,
    });
  }

  /**
   * The actor: the key's name; for agent registration (no key), the machine's name; for a request without a valid
   * key, "anonymous" (none sent) or "invalid key" (never the key itself). A request refused before the guard ran
   * (a body that is not JSON) with a key is identified here, from the key service's cache.
   */
  private async who(req: AuthedRequest, status: number): Promise<{ name: string; keyId: string | null }> {
    const known = actorOf(req);
    if (known) return known;
    if (matchRoute(req.method, req.path)?.key === 'POST /api/agents/register') {
      const name = (req.body as { name?: unknown } | undefined)?.name;
      return { name: `registration:${safeText(name, 100) || '?'}`, keyId: null };
    }
    const key = req.header('x-api-key');
    if (!key) return { name: 'anonymous', keyId: null };
    const found = status === 401 ? null : await this.keys.verify(key);
    return found ? { name: found.name, keyId: found.id } : { name: 'invalid key', keyId: null };
  }
}
