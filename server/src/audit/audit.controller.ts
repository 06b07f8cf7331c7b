import { Controller, Get, Query } from '@nestjs/common';
import { ApiQuery, ApiTags } from '@nestjs/swagger';
import type { AuditEvent } from '#shared/api/types.js';
import { invalid } from '../common/errors.js';
import { intQuery } from '../common/http.js';
import { Returns } from '../common/openapi.js';
import { AuditService } from './audit.service.js';

// A date, or a date and time with an optional zone: what people type and what the API itself answers with.
const ISO_RE = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;
const OUTCOMES = ['ok', 'denied', 'failed'];

/** An exact-match text filter: absent is no filter; given twice or absurdly long is a 400 naming it. */
function textQuery(name: string, raw: unknown): string | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string') throw invalid(`${name} must be given once`);
  if (raw.length > 200) throw invalid(`${name} must be at most 200 characters`);
  return raw;
}

/** The audit log: who changed what, and every refused request. */
@ApiTags('events')
@Controller('api/events')
export class AuditController {
  constructor(private readonly audit: AuditService) {}

  @Get()
  @ApiQuery({ name: 'since', required: false, description: 'ISO-8601 time: events at or after it' })
  @ApiQuery({ name: 'actor', required: false, description: "the key's name, or anonymous / invalid key" })
  @ApiQuery({ name: 'resourceType', required: false, description: 'project, deployment, machine, …' })
  @ApiQuery({ name: 'resourceId', required: false })
  @ApiQuery({ name: 'outcome', required: false, enum: OUTCOMES })
  @ApiQuery({ name: 'before', required: false, description: 'an event id: only older events (the next page)' })
  @ApiQuery({ name: 'limit', required: false, description: '1 to 1000, default 100' })
  @Returns(
    'The audit log, newest first: every mutating request and every refused one, with who made it',
    200,
    ['AuditEvent'],
    ['validation_failed'],
  )
  list(
    @Query('since') since?: unknown,
    @Query('actor') actor?: unknown,
    @Query('resourceType') resourceType?: unknown,
    @Query('resourceId') resourceId?: unknown,
    @Query('outcome') outcome?: unknown,
    @Query('before') before?: unknown,
    @Query('limit') limit?: unknown,
  ): Promise<AuditEvent[]> {
    const sinceText = textQuery('since', since);
    let sinceDate: Date | undefined;
    if (sinceText !== undefined) {
      sinceDate = new Date(sinceText);
      if (!ISO_RE.test(sinceText) || isNaN(sinceDate.getTime()))
        throw invalid('since must be an ISO-8601 time, like 2026-12-01T09:00:00Z');
    }
    const outcomeText = textQuery('outcome', outcome);
    if (outcomeText !== undefined && !OUTCOMES.includes(outcomeText))
      throw invalid(`outcome must be one of ${OUTCOMES.join(', ')}`);
    const beforeText = textQuery('before', before);
    return this.audit.list({
      since: sinceDate,
      actor: textQuery('actor', actor),
      resourceType: textQuery('resourceType', resourceType),
      resourceId: textQuery('resourceId', resourceId),
      outcome: outcomeText,
      before:
        beforeText === undefined
          ? undefined
          : intQuery('before', beforeText, { min: 1, max: Number.MAX_SAFE_INTEGER, dflt: 1 }),
      limit: intQuery('limit', textQuery('limit', limit), { min: 1, max: 1000, dflt: 100 }),
    });
  }
}
