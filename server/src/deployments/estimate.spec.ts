import { estimateDeployment, type EstimatedStep } from './estimate.js';

const step = (name: string, over: Partial<EstimatedStep> = {}): EstimatedStep => ({
  name,
  willRun: true,
  startTrigger: 'afterPrevious',
  runsOn: 'targets',
  window: 1,
  batches: [1],
  ...over,
});

describe('estimateDeployment', () => {
  // A step goes a window at a time: 10 targets, window 3 → 4 passes of the median.
  it('counts passes of the window', () => {
    const r = estimateDeployment([step('A', { window: 3, batches: [10] })], new Map([['A', 5]]));
    expect(r.steps).toEqual([20]);
    expect(r.total).toBe(20);
  });

  // Each batch starts with a fresh window (a batch waits for the one before it), and the bake comes between batches,
  // not after the last one.
  it('adds up batches and the bake between them', () => {
    // batches 1, 3, 6 with window 2: 1 + 2 + 3 passes of 10 s, and two bakes of 30 s.
    const r = estimateDeployment([step('A', { window: 2, batches: [1, 3, 6], bakeSeconds: 30 })], new Map([['A', 10]]));
    expect(r.steps).toEqual([6 * 10 + 2 * 30]);
  });

  // A step on the server (a manual intervention) is one pass of its median.
  it('takes a step on the server as one pass', () => {
    const r = estimateDeployment(
      [step('Approve', { runsOn: 'server', batches: [], window: 1 })],
      new Map([['Approve', 42]]),
    );
    expect(r.steps).toEqual([42]);
  });

  // A step that will not run costs nothing, history or not; a step that will run with no history makes the whole
  // estimate unknown.
  it('is 0 for a skipped step and null without history', () => {
    const r = estimateDeployment([step('A'), step('Skipped', { willRun: false }), step('New')], new Map([['A', 3]]));
    expect(r.steps).toEqual([3, 0, null]);
    expect(r.total).toBeNull();
    const known = estimateDeployment([step('A'), step('Skipped', { willRun: false })], new Map([['A', 3]]));
    expect(known.total).toBe(3);
  });

  // Steps that start together (withPrevious) take as long as the longest of them; groups add up.
  it('takes the longest step of a group that starts together', () => {
    const r = estimateDeployment(
      [
        step('A'),
        step('B', { startTrigger: 'withPrevious' }),
        step('C'),
        step('D', { startTrigger: 'withPrevious', willRun: false }),
      ],
      new Map([
        ['A', 4],
        ['B', 9],
        ['C', 2],
      ]),
    );
    expect(r.steps).toEqual([4, 9, 2, 0]);
    expect(r.total).toBe(9 + 2);
  });

  // Fractions of a second are rounded up, each step on its own and the total from the exact figures.
  it('rounds up', () => {
    const r = estimateDeployment(
      [step('A'), step('B')],
      new Map([
        ['A', 0.3],
        ['B', 0.4],
      ]),
    );
    expect(r.steps).toEqual([1, 1]);
    expect(r.total).toBe(1);
  });

  // No steps: nothing to wait for.
  it('is 0 for an empty process', () => {
    expect(estimateDeployment([], new Map())).toEqual({ steps: [], total: 0 });
  });
});
