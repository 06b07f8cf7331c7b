import { formatLabels, labelsProblem, MAX_LABELS, parseLabelList, parseLabelSelector } from './index.js';

const many = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`l${i}`, 'v']));

describe('labelsProblem', () => {
  // A map of good names to good values, at most MAX_LABELS of them, is a label map; an empty one too (no labels).
  it('accepts label maps', () => {
    expect(labelsProblem({})).toBeNull();
    expect(labelsProblem({ zone: 'a', rack: 'r1', 'k8s.io_x-y': 'A.b_c-1' })).toBeNull();
    expect(labelsProblem({ zone: 'v'.repeat(200), ['n'.repeat(63)]: 'x' })).toBeNull();
    expect(labelsProblem(many(MAX_LABELS))).toBeNull();
    // Names that are also Object.prototype's members are names like any other (but for the two reserved ones).
    expect(labelsProblem(JSON.parse('{"toString": "a", "hasOwnProperty": "b"}'))).toBeNull();
  });

  // Every refusal names the field, and the label when one is at fault.
  it.each([
    ['a list', ['zone=a'], /^labels must be an object of label names to values/],
    ['null', null, /^labels must be an object/],
    ['text', 'zone=a', /^labels must be an object/],
    ['too many', many(MAX_LABELS + 1), /^labels has 51 labels \(at most 50\)$/],
    ['a name with a space', { 'a b': 'x' }, /^labels: the label name "a b" must be letters/],
    ['an empty name', { '': 'x' }, /^labels: the label name "" must be/],
    ['a name of 64', { ['n'.repeat(64)]: 'x' }, /^labels: the label name "n+" must be/],
    ['a name starting with "_"', JSON.parse('{"__proto__": "x"}'), /^labels: the label name "__proto__"/],
    ['a reserved name', JSON.parse('{"constructor": "x"}'), /^labels: the label name "constructor" is reserved$/],
    ['another reserved name', { prototype: 'x' }, /^labels: the label name "prototype" is reserved$/],
    ['a number as value', { zone: 1 }, /^labels\.zone must be text/],
    ['an object as value', { zone: { a: 'b' } }, /^labels\.zone must be text/],
    ['an empty value', { zone: '' }, /^labels\.zone must be letters, digits/],
    ['a value of 201', { zone: 'v'.repeat(201) }, /^labels\.zone must be letters, digits.+\(1 to 200 characters\)$/],
    ['a value with a slash', { zone: 'a/b' }, /^labels\.zone must be/],
  ])('refuses %s', (_what, value, message) => {
    expect(labelsProblem(value)).toMatch(message);
  });

  it('cuts a long bad name in its message', () => {
    expect(labelsProblem({ ['x y'.repeat(10_000)]: 'v' })!.length).toBeLessThan(250);
  });
});

describe('parseLabelList', () => {
  // The agent's --labels: NAME=VALUE items, commas between, spaces around items ignored; none is no labels.
  it('reads zone=a,rack=r1', () => {
    expect(parseLabelList('zone=a,rack=r1')).toEqual({ ok: true, value: { zone: 'a', rack: 'r1' } });
    expect(parseLabelList(' zone=a , rack=r1,')).toEqual({ ok: true, value: { zone: 'a', rack: 'r1' } });
    expect(parseLabelList('')).toEqual({ ok: true, value: {} });
  });

  // A malformed list is refused with the option named, never read in part.
  it.each([
    ['an item without "="', 'zone', /^--labels: "zone" must be NAME=VALUE/],
    ['an empty value', 'zone=', /^--labels: the value of zone must be/],
    ['an empty name', '=a', /^--labels: the label name "" must be/],
    ['a name with a space', 'a b=c', /^--labels: the label name "a b" must be/],
    ['a value with "="', 'zone=a=b', /^--labels: the value of zone must be/],
    ['a reserved name', 'constructor=a', /^--labels: the label name "constructor" is reserved$/],
    ['a label named twice', 'zone=a,zone=b', /^--labels: the label zone is given twice$/],
    [
      '51 labels',
      Array.from({ length: 51 }, (_, i) => `l${i}=v`).join(','),
      /^--labels: 51 labels given \(at most 50\)$/,
    ],
  ])('refuses %s', (_what, text, message) => {
    const r = parseLabelList(text);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.message).toMatch(message);
  });
});

describe('parseLabelSelector', () => {
  it('reads zone=a and refuses anything else, naming the field', () => {
    expect(parseLabelSelector('zone=a')).toEqual({ ok: true, value: { name: 'zone', value: 'a' } });
    for (const bad of ['zone', 'zone=', '=a', 'a b=c', 'zone=a=b', 'zone=a,rack=b'])
      expect(parseLabelSelector(bad)).toMatchObject({ ok: false, message: expect.stringMatching(/^label must be/) });
  });
});

describe('formatLabels', () => {
  // By name, so that the same labels always print the same (jsonb keeps its own key order).
  it('writes labels as the agent option takes them', () => {
    expect(formatLabels({ zone: 'a', rack: 'r1' })).toBe('rack=r1,zone=a');
    expect(formatLabels({})).toBe('');
    expect(formatLabels(undefined)).toBe('');
    expect(parseLabelList(formatLabels({ zone: 'a', rack: 'r1' }))).toEqual({
      ok: true,
      value: { rack: 'r1', zone: 'a' },
    });
  });
});
