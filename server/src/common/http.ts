/** HTTP edge helpers shared by every controller: id parameters, numeric query parameters, the public-route marker, and the one filter that maps errors to HTTP. */
import { STATUS_CODES } from 'node:http';
import {
  applyDecorators,
  ArgumentsHost,
  Catch,
  ExceptionFilter,
  HttpException,
  Inject,
  Injectable,
  PipeTransform,
  SetMetadata,
} from '@nestjs/common';
import { ApiExtension } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { codeForStatus, ERROR_STATUS, type ErrorCode } from '#shared/api/errors.js';
import { DomainError, invalid, notFound } from './errors.js';
import { QueryFailedError } from 'typeorm';
import { LOGGER, type Logger } from '../logging/logger.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: unknown): s is string => typeof s === 'string' && UUID_RE.test(s);

/** An id that is not even a uuid is an unknown id: 404, not a database error. */
@Injectable()
export class IdPipe implements PipeTransform<string, string> {
  constructor(private readonly what: string) {}
  transform(value: string): string {
    if (!isUuid(value)) throw notFound(`${this.what} ${value} not found`);
    return value.toLowerCase();
  }
}
export const idOf = (what: string) => new IdPipe(what);

export const IS_PUBLIC = 'cuttle:public';
/** Marks a route that needs no API key (agent registration, health, docs); the OpenAPI document says so too. */
export const Public = () => applyDecorators(SetMetadata(IS_PUBLIC, true), ApiExtension('x-public', true));

/**
 * A whole-number query parameter: absent is `dflt`; anything but digits, or a value outside [min, max], is a 400
 * naming it (a number past PostgreSQL's integer or bigint range would otherwise fail in the database as a 500).
 */
export function intQuery(name: string, raw: string | undefined, o: { min: number; max: number; dflt: number }): number {
  if (raw === undefined || raw === '') return o.dflt;
  const n = /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n < o.min || n > o.max)
    throw invalid(`${name} must be an integer from ${o.min} to ${o.max}`);
  return n;
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
 * Every error leaves as JSON `{statusCode, error, code, message}`: a DomainError with its code's status (the table in
 * shared/src/api/errors.ts), a framework's HttpException (validation, an unknown route) with the code of its status,
 * a body parser's 4xx, and database errors that are the client's doing as 4xx; anything else is a 500 that is
 * logged with its stack and answered without internals.
 */
@Catch()
export class ErrorFilter implements ExceptionFilter {
  /** This service's log lines carry `context: 'http'`. */
  private readonly log: Logger;

  constructor(@Inject(LOGGER) logger: Logger) {
    this.log = logger.child({ context: 'http' });
  }

  catch(err: unknown, host: ArgumentsHost) {
    const ctx = host.switchToHttp();
    const res = ctx.getResponse<Response>();
    const req = ctx.getRequest<Request>();
    const send = (
      code: ErrorCode,
      message: string | string[],
      status: number = ERROR_STATUS[code],
      extra: Record<string, unknown> = {},
    ) =>
      res.status(status).json({ ...extra, statusCode: status, error: STATUS_CODES[status] ?? 'Error', code, message });
    if (err instanceof DomainError) return send(err.code, err.detail);
    if (err instanceof HttpException) {
      // The body parser's SyntaxError arrives wrapped: say what is wrong in the client's terms.
      const cause = (err as { cause?: unknown }).cause as { type?: string; message?: string } | undefined;
      if (cause instanceof SyntaxError && (cause as { type?: string }).type === 'entity.parse.failed')
        return send('validation_failed', `request body is not valid JSON: ${cause.message}`);
      const status = err.getStatus();
      const body = err.getResponse();
      if (typeof body === 'string') return send(codeForStatus(status), body, status);
      const {
        message,
        statusCode: _s,
        error: _e,
        ...extra
      } = body as { message?: string | string[]; statusCode?: number; error?: string };
      return send(codeForStatus(status), message ?? STATUS_CODES[status] ?? 'error', status, extra);
    }
    const e = err as { status?: number; type?: string; code?: string; message?: string; detail?: string };
    // body-parser errors (oversized or malformed bodies) carry their own 4xx status.
    if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
      const msg =
        e.type === 'entity.too.large'
          ? 'request body is too large'
          : e.type === 'entity.parse.failed'
            ? 'request body is not valid JSON'
            : (e.message ?? 'bad request');
      return send(codeForStatus(e.status), msg, e.status);
    }
    if (err instanceof QueryFailedError) {
      const code = (err as unknown as { code?: string }).code;
      if (code === PG_UNIQUE_VIOLATION)
        return send('already_exists', `already exists${e.detail ? `: ${e.detail}` : ''}`);
      if (code && PG_UNSTORABLE[code]) {
        this.log.warn(`database refused input on ${req.method} ${req.path}`, { code, error: e.message });
        return send('validation_failed', PG_UNSTORABLE[code]);
      }
      if (code === PG_BAD_TEXT || code === PG_FK_VIOLATION)
        return send('unknown_reference', e.detail ?? 'a referenced id is not valid');
    }
    this.log.error(`unhandled error on ${req.method} ${req.url}`, { error: e.message, stack: (err as Error)?.stack });
    return send('internal', 'internal error (see the server log)');
  }
}
