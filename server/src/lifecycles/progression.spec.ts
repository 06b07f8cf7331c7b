import { progression, refusalOf, type Phase } from './progression.js';

const phase = (name: string, envs: string[], over: Partial<Phase> = {}): Phase => ({
  name,
  environmentIds: envs,
  minimumEnvironmentsBeforePromotion: 0,
  optional: false,
  ...over,
});
const allowed = (phases: Phase[], done: string[]) => [...progression(phases, new Set(done)).allowed].sort();
const names = { release: '1.4.0', environment: 'Prod', lifecycle: 'Default' };

describe('progression', () => {
  const dev = phase('Development', ['dev']);
  const staging = phase('Staging', ['stg']);
  const prod = phase('Production', ['prod']);

  // Nothing deployed yet: only the first phase is open.
  it('opens the first phase only, before anything succeeded', () => {
    expect(allowed([dev, staging, prod], [])).toEqual(['dev']);
    const p = progression([dev, staging, prod], new Set());
    expect(p.phases.map((x) => [x.reachable, x.complete])).toEqual([
      [true, false],
      [false, false],
      [false, false],
    ]);
    expect(p.phases[2].blockedBy).toBe(0);
  });

  // Each phase opens when every non-optional phase before it is complete, one at a time.
  it('opens phases in order as each completes', () => {
    expect(allowed([dev, staging, prod], ['dev'])).toEqual(['dev', 'stg']);
    expect(allowed([dev, staging, prod], ['dev', 'stg'])).toEqual(['dev', 'prod', 'stg']);
    expect(progression([dev, staging, prod], new Set(['dev'])).phases[2].blockedBy).toBe(1);
  });

  // An environment where the release already succeeded stays allowed (a redeploy) even if its phase is not
  // reachable now (it went there before the project followed the lifecycle, or by a rollback).
  it('keeps an environment allowed where the release already succeeded', () => {
    expect(allowed([dev, staging, prod], ['prod'])).toEqual(['dev', 'prod']);
  });

  // An optional phase never blocks: the next phase is reachable at once, and the optional one stays allowed.
  it('lets an optional phase be skipped', () => {
    const optDev = phase('Development', ['dev'], { optional: true });
    expect(allowed([optDev, staging, prod], [])).toEqual(['dev', 'stg']);
    expect(allowed([optDev, staging, prod], ['stg'])).toEqual(['dev', 'prod', 'stg']);
    const p = progression([optDev, staging, prod], new Set(['stg']));
    expect(p.phases[0]).toMatchObject({ reachable: true, complete: false });
  });

  // Several optional phases in a row are all skipped; an optional phase after a blocking one is not reachable.
  it('skips consecutive optional phases but not past a blocking phase', () => {
    const a = phase('A', ['a'], { optional: true });
    const b = phase('B', ['b'], { optional: true });
    expect(allowed([a, b, prod], [])).toEqual(['a', 'b', 'prod']);
    expect(allowed([staging, a, prod], [])).toEqual(['stg']);
    expect(allowed([staging, a, prod], ['stg'])).toEqual(['a', 'prod', 'stg']);
  });

  // minimum 0 means all of the phase's environments; a minimum of k needs any k of them.
  it('counts minimumEnvironmentsBeforePromotion (0 = all)', () => {
    const test = phase('Test', ['t1', 't2', 't3']);
    expect(allowed([test, prod], ['t1', 't2'])).toEqual(['t1', 't2', 't3']);
    expect(allowed([test, prod], ['t1', 't2', 't3'])).toEqual(['prod', 't1', 't2', 't3']);
    const two = phase('Test', ['t1', 't2', 't3'], { minimumEnvironmentsBeforePromotion: 2 });
    expect(allowed([two, prod], ['t3'])).toEqual(['t1', 't2', 't3']);
    expect(allowed([two, prod], ['t1', 't3'])).toEqual(['prod', 't1', 't2', 't3']);
    expect(progression([two, prod], new Set(['t1'])).phases[0]).toMatchObject({ required: 2, succeeded: 1 });
  });

  // An environment in no phase is refused, whatever succeeded (even there).
  it('refuses an environment in no phase', () => {
    expect(allowed([dev], ['other'])).toEqual(['dev']);
    const p = progression([dev], new Set(['other']));
    expect(refusalOf([dev], p, 'other', { ...names, environment: 'Other' })).toBe(
      "environment 'Other' is in no phase of lifecycle 'Default': release 1.4.0 cannot be deployed there",
    );
  });

  // Succeeded environments of other phases do not count towards a phase.
  it('counts only the phase’s own environments', () => {
    expect(progression([dev, staging], new Set(['stg'])).phases[0].complete).toBe(false);
  });

  // The refusal names the first phase that must succeed, with its count.
  it('names the blocking phase in the refusal', () => {
    const p = progression([dev, staging, prod], new Set(['dev']));
    expect(refusalOf([dev, staging, prod], p, 'prod', names)).toBe(
      "release 1.4.0 must first succeed in phase 'Staging' (1 of 1 environments; 0 so far) before it can go to 'Prod'",
    );
    expect(refusalOf([dev, staging, prod], p, 'stg', names)).toBeNull();
  });

  // A single phase: everything in it is allowed from the start.
  it('allows every environment of a single phase', () => {
    expect(allowed([phase('All', ['a', 'b'])], [])).toEqual(['a', 'b']);
  });
});
