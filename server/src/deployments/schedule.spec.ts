/** A deployment's schedule from its request: what is accepted, and refusals that name the field. */
import { DomainError } from '../common/errors.js';
import { scheduleOf } from './deployments.service.js';

const NOW = Date.parse('2026-12-02T12:00:00Z');
const refusal = (dto: Parameters<typeof scheduleOf>[0]) => {
  try {
    scheduleOf(dto, NOW);
  } catch (e) {
    expect(e).toBeInstanceOf(DomainError);
    return (e as DomainError).message;
  }
  throw new Error('accepted');
};

// Neither field: no schedule. queueAt alone, or with a later expiry, is taken as given; an expiry alone is a queued
// deployment's deadline.
it('accepts a schedule in the future and an expiry after it', () => {
  expect(scheduleOf({}, NOW)).toEqual({});
  expect(scheduleOf({ queueAt: '2026-12-02T12:00:03Z' }, NOW)).toEqual({ queueAt: new Date('2026-12-02T12:00:03Z') });
  expect(scheduleOf({ queueAt: '2026-12-02T13:00:00+01:00', queueExpiresAt: '2026-12-02T12:30:00Z' }, NOW)).toEqual({
    queueAt: new Date('2026-12-02T12:00:00Z'),
    queueExpiresAt: new Date('2026-12-02T12:30:00Z'),
  });
  expect(scheduleOf({ queueExpiresAt: '2026-12-02T12:10:00Z' }, NOW)).toEqual({
    queueExpiresAt: new Date('2026-12-02T12:10:00Z'),
  });
  // A client a fraction of a second behind asking for "now" is not refused.
  expect(scheduleOf({ queueAt: '2026-12-02T11:59:59.500Z' }, NOW).queueAt).toEqual(expect.any(Date));
});

// Refusals name the field: not a time, in the past, an expiry not after queueAt or already past.
it('refuses bad schedules naming the field', () => {
  expect(refusal({ queueAt: 'tomorrow' })).toMatch(/^queueAt must be an ISO-8601 time/);
  expect(refusal({ queueAt: '2026-13-45T00:00:00Z' })).toMatch(/^queueAt must be an ISO-8601 time/);
  expect(refusal({ queueAt: '2026-12-02T11:00:00Z' })).toMatch(/^queueAt must not be in the past/);
  expect(refusal({ queueAt: '2026-12-02T12:05:00Z', queueExpiresAt: '2026-12-02T12:05:00Z' })).toMatch(
    /^queueExpiresAt must be after queueAt/,
  );
  expect(refusal({ queueExpiresAt: '2026-12-02T11:00:00Z' })).toMatch(/^queueExpiresAt must be in the future/);
  expect(refusal({ queueExpiresAt: '12/24/2026' })).toMatch(/^queueExpiresAt must be an ISO-8601 time/);
});
