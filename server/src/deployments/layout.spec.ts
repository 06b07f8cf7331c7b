/**
 * The layout of a deployment (layout.ts, pure): targets spread over a label's values, batches sized from the step's
 * `batches`, and the order a caller gives. Each test states the invariant it holds.
 */
import type { Step } from '#shared/process/index.js';
import { layoutDeployment, spreadOver, type LayoutMachine } from './layout.js';

const m = (name: string, labels?: Record<string, string>, roles = ['web']): LayoutMachine => ({
  id: `id-${name}`,
  name,
  roles,
  ...(labels ? { labels } : {}),
});

/** Three zones, two machines each; names not in zone order, so that name order and spreading differ. */
const zoned = [
  m('web-01', { zone: 'a' }),
  m('web-02', { zone: 'a' }),
  m('web-03', { zone: 'b' }),
  m('web-04', { zone: 'b' }),
  m('web-05', { zone: 'c' }),
  m('web-06', { zone: 'c' }),
];
const names = (ms: LayoutMachine[]) => ms.map((x) => x.name);
const zones = (ms: LayoutMachine[]) => ms.map((x) => x.labels?.zone ?? '-');

const step = (over: Partial<Step> = {}): Step => ({
  name: 'Roll',
  targetRoles: ['web'],
  actions: [{ name: 'a', type: 'script', script: 'true' }],
  ...over,
});

/** The targets of a laid-out step, cut into its batches. */
function batchesOf(s: { targets: LayoutMachine[]; batches: number[] }): LayoutMachine[][] {
  const out: LayoutMachine[][] = [];
  let at = 0;
  for (const n of s.batches) {
    out.push(s.targets.slice(at, at + n));
    at += n;
  }
  return out;
}

describe('spreadOver', () => {
  // One machine of each value in turn, values in name order, machines of a value in the order given: any run of
  // consecutive targets is spread as evenly as the values allow.
  it('takes one machine of each zone in turn', () => {
    const out = spreadOver([...zoned].reverse(), 'zone');
    expect(zones(out)).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
    // Within a zone the order given (here reversed) is kept.
    expect(names(out)).toEqual(['web-02', 'web-04', 'web-06', 'web-01', 'web-03', 'web-05']);
  });

  // Machines without the label are a value of their own that sorts after every real value: in each round they come
  // after the labelled machines, and once the zones run out, they are all that is left.
  it('puts machines without the label after the labelled ones of each round', () => {
    const bare = [m('web-00'), m('web-07', { rack: 'r1' }), m('web-08')];
    const out = spreadOver([...bare, ...zoned], 'zone');
    expect(zones(out)).toEqual(['a', 'b', 'c', '-', 'a', 'b', 'c', '-', '-']);
    expect(names(out)).toEqual([
      'web-01',
      'web-03',
      'web-05',
      'web-00',
      'web-02',
      'web-04',
      'web-06',
      'web-07',
      'web-08',
    ]);
  });

  // Spreading only reorders: every machine once, none added.
  it('keeps every machine once', () => {
    const out = spreadOver(zoned, 'rack');
    expect(names(out)).toEqual(names(zoned));
    expect(spreadOver([], 'zone')).toEqual([]);
  });
});

describe('layoutDeployment', () => {
  // Batches [1, "50%", "100%"] over six targets are 1, 3 (50% rounded up) and the 2 left; spread by zone, the
  // first batch is one zone, the second covers all three, and no batch holds two machines of one zone.
  it('spreads batches over zones', () => {
    const [s] = layoutDeployment([step({ batches: [1, '50%', '100%'], spreadBy: 'zone' })], 'env', 'ch', zoned);
    expect(s.batches).toEqual([1, 3, 2]);
    expect(batchesOf(s).map(names)).toEqual([['web-01'], ['web-03', 'web-05', 'web-02'], ['web-04', 'web-06']]);
    for (const b of batchesOf(s)) expect(new Set(zones(b)).size).toBe(b.length);
    expect(new Set(zones(batchesOf(s)[1]))).toEqual(new Set(['a', 'b', 'c']));
  });

  // Without spreadBy targets go in name order, the labels notwithstanding, and the batches are cut from that order.
  it('keeps name order without spreadBy', () => {
    const [s] = layoutDeployment([step({ batches: [1, '50%', '100%'] })], 'env', 'ch', [...zoned].reverse());
    expect(names(s.targets)).toEqual(names(zoned));
    expect(batchesOf(s).map(names)).toEqual([['web-01'], ['web-02', 'web-03', 'web-04'], ['web-05', 'web-06']]);
  });

  // Without batches a step is one batch of every target; a server step has no targets and no batches.
  it('makes one batch without batches, none on the server', () => {
    const [rolling, server] = layoutDeployment(
      [step(), { name: 'Approve', actions: [{ name: 'Go', type: 'manual-intervention' }] }],
      'env',
      'ch',
      zoned,
    );
    expect(rolling.batches).toEqual([6]);
    expect(server).toMatchObject({ runsOn: 'server', targets: [], batches: [] });
  });

  // `order` puts the machines it names first, in its order; the others follow by name. Spreading then works on that
  // order: within each zone, the machine the order names first goes first.
  it('puts the machines of `order` first', () => {
    const order = ['id-web-06', 'id-web-03'];
    const [plain] = layoutDeployment([step()], 'env', 'ch', zoned, { order });
    expect(names(plain.targets)).toEqual(['web-06', 'web-03', 'web-01', 'web-02', 'web-04', 'web-05']);
    const [spread] = layoutDeployment([step({ spreadBy: 'zone', batches: [1, '50%', '100%'] })], 'env', 'ch', zoned, {
      order,
    });
    expect(names(spread.targets)).toEqual(['web-01', 'web-03', 'web-06', 'web-02', 'web-04', 'web-05']);
    // Ids the order names that are not targets change nothing.
    const [stray] = layoutDeployment([step()], 'env', 'ch', zoned, { order: ['id-elsewhere'] });
    expect(names(stray.targets)).toEqual(names(zoned));
  });

  // Only machines with one of the step's roles are targets, and batches count only them.
  it('lays out only the machines with the step roles', () => {
    const mixed = [...zoned, m('db-01', { zone: 'a' }, ['db'])];
    const [s] = layoutDeployment([step({ batches: [2], spreadBy: 'zone' })], 'env', 'ch', mixed);
    expect(names(s.targets)).not.toContain('db-01');
    expect(s.batches).toEqual([2, 2, 2]);
  });
});
