/** HTTP edge helpers shared by every controller: id parameters, the public-route marker, error mapping. */
import {
  ArgumentsHost,
  BadRequestException,
  Catch,
  ConflictException,
  ExceptionFilter,
  HttpException,
  Inject,
  Injectable,
  NotFoundException,
  PipeTransform,
  SetMetadata,
} from '@nestjs/common';
import type { Request, Response } from 'express';
import { QueryFailedError } from 'typeorm';
import { LOGGER, type Logger } from '../logging/logger.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: unknown): s is string => typeof s === 'string' && UUID_RE.test(s);

/** An id that is not even a uuid is an unknown id: 404, not a database error. */
@Injectable()
export class IdPipe implements PipeTransform<string, string> {
  constructor(private readonly what: string) {}
  transform(value: string): string {
    if (!isUuid(value)) throw new NotFoundException(`${this.what} ${value} not found`);
    return value.toLowerCase();
  }
}
export const idOf = (what: string) => new IdPipe(what);

export const IS_PUBLIC = 'cuttle:public';
/** Marks a route that needs no API key (agent registration, health, docs). */
export const Public = () => SetMetadata(IS_PUBLIC, true);

/**
 * A whole-number query parameter: absent is `dflt`; anything but digits, or a value outside [min, max], is a 400
 * naming it (a number past PostgreSQL's integer or bigint range would otherwise fail in the database as a 500).
 */
export function intQuery(name: string, raw: string | undefined, o: { min: number; max: number; dflt: number }): number {
  if (raw === undefined || raw === '') return o.dflt;
  const n = /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n < o.min || n > o.max) throw new BadRequestException(`${name} must be an integer from ${o.min} to ${o.max}`);
  return n;
}

export function badRequest(messages: string | string[]): never {
  throw new BadRequestException(messages);
}
export function conflict(message: string): never {
  throw new ConflictException(message);
}

const PG_UNIQUE_VIOLATION = '23505';
const PG_BAD_TEXT = '22P02';
const PG_FK_VIOLATION = '23503';
/**
 * Text or numbers PostgreSQL cannot hold (a NUL in text, a NUL escape in jsonb, an integer past its column). The
 * edges refuse these first with the field named (InputBoundsPipe, DTOs, intQuery); this is the backstop.
 */
const PG_UNSTORABLE: Record<string, string> = {
  '22021': 'text holds a character the database cannot store (NUL)',
  '22P05': 'text holds a character the database cannot store (NUL)',
  '22003': 'a number is out of range',
  '54001': 'the input is nested too deeply',
};

/**
 * Every error leaves as JSON `{statusCode, error, message}`. Database errors that are the client's doing become
 * 4xx; anything else is a 500 that is logged with its stack and answered without internals.
 */
@Catch()
export class ErrorFilter implements ExceptionFilter {
  constructor(@Inject(LOGGER) private readonly log: Logger) {}

  catch(err: unknown, host: ArgumentsHost) {
    const ctx = host.switchToHttp();
    const res = ctx.getResponse<Response>();
    const req = ctx.getRequest<Request>();
    if (err instanceof HttpException) {
      // The body parser's SyntaxError arrives wrapped: say what is wrong in the client's terms.
      const cause = (err as { cause?: unknown }).cause as { type?: string; message?: string } | undefined;
      if (cause instanceof SyntaxError && (cause as { type?: string }).type === 'entity.parse.failed') {
        res.status(400).json({ statusCode: 400, error: 'Bad Request', message: `request body is not valid JSON: ${cause.message}` });
        return;
      }
      const body = err.getResponse();
      res.status(err.getStatus()).json(typeof body === 'string' ? { statusCode: err.getStatus(), error: err.name, message: body } : body);
      return;
    }
    const e = err as { status?: number; type?: string; code?: string; message?: string; detail?: string };
    // body-parser errors (oversized or malformed bodies) carry their own 4xx status.
    if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
      const msg = e.type === 'entity.too.large' ? 'request body is too large' : e.type === 'entity.parse.failed' ? 'request body is not valid JSON' : (e.message ?? 'bad request');
      res.status(e.status).json({ statusCode: e.status, error: e.status === 413 ? 'Payload Too Large' : 'Bad Request', message: msg });
      return;
    }
    if (err instanceof QueryFailedError) {
      const code = (err as unknown as { code?: string }).code;
      if (code === PG_UNIQUE_VIOLATION) {
        res.status(409).json({ statusCode: 409, error: 'Conflict', message: `already exists${e.detail ? `: ${e.detail}` : ''}` });
        return;
      }
      if (code && PG_UNSTORABLE[code]) {
        this.log.warn(`database refused input on ${req.method} ${req.path}`, { context: 'http', code, error: e.message });
        res.status(400).json({ statusCode: 400, error: 'Bad Request', message: PG_UNSTORABLE[code] });
        return;
      }
      if (code === PG_BAD_TEXT || code === PG_FK_VIOLATION) {
        res.status(400).json({ statusCode: 400, error: 'Bad Request', message: e.detail ?? 'a referenced id is not valid' });
        return;
      }
    }
    this.log.error(`unhandled error on ${req.method} ${req.url}`, { context: 'http', error: e.message, stack: (err as Error)?.stack });
    res.status(500).json({ statusCode: 500, error: 'Internal Server Error', message: 'internal error (see the server log)' });
  }
}
