import { validateSteps } from './index.js';

const ok = (steps: unknown) => validateSteps(steps);
const messages = (steps: unknown) => {
  const r = validateSteps(steps);
  if (r.ok) throw new Error('expected invalid');
  return r.messages;
};
const script = { name: 'a', type: 'script', script: 'true' };

describe('deployment process validation', () => {
  // A valid process with every field passes unchanged.
  it('accepts a full process', () => {
    const r = ok([
      {
        name: 'Web',
        targetRoles: ['web'],
        windowSize: '25%',
        maxFailures: 1,
        condition: 'always',
        startTrigger: 'withPrevious',
        actions: [script, { name: 'p', type: 'package', packageId: 'site', timeoutSeconds: 60, retries: 2 }],
      },
      { name: 'Approve', actions: [{ name: 'ok?', type: 'manual-intervention', instructions: 'check it' }] },
    ]);
    expect(r.ok).toBe(true);
  });

  // Every refusal names its field the way api.md shows: steps[1].windowSize must ...
  it.each([
    [
      [{ name: 'A', targetRoles: ['web'], windowSize: 0, actions: [script] }],
      'steps[0].windowSize must be a positive integer or a percentage like "25%" (a count of at most 100000)',
    ],
    [
      [{ name: 'A', targetRoles: ['web'], windowSize: '150%', actions: [script] }],
      'steps[0].windowSize must be a positive integer or a percentage like "25%" (a count of at most 100000)',
    ],
    [
      [{ name: 'A', targetRoles: ['web'], windowSize: 1.5, actions: [script] }],
      'steps[0].windowSize must be a positive integer or a percentage like "25%" (a count of at most 100000)',
    ],
    [
      [{ name: 'A', targetRoles: ['web'], maxFailures: -1, actions: [script] }],
      'steps[0].maxFailures must be a non-negative integer or a percentage like "10%" (a count of at most 100000)',
    ],
    [
      [{ name: 'A', targetRoles: ['web'], maxFailures: 1e308, actions: [script] }],
      'steps[0].maxFailures must be a non-negative integer or a percentage like "10%" (a count of at most 100000)',
    ],
    [
      [{ name: 'A', targetRoles: ['web'], windowSize: 2 ** 31, actions: [script] }],
      'steps[0].windowSize must be a positive integer or a percentage like "25%" (a count of at most 100000)',
    ],
    [
      [{ name: 'A', targetRoles: ['web'], actions: [{ ...script, timeoutSeconds: 1e308 }] }],
      'steps[0].actions[0].timeoutSeconds must be at most 604800 (7 days)',
    ],
    [
      [{ name: 'A', targetRoles: ['web'], actions: [{ ...script, retries: 2 ** 53 }] }],
      'steps[0].actions[0].retries must be at most 100',
    ],
    [
      [{ name: 'A', targetRoles: ['web'], condition: 'sometimes', actions: [script] }],
      'steps[0].condition must be one of success, failure, always',
    ],
    [[{ name: 'A', targetRoles: ['web'], actions: [] }], 'steps[0].actions must have at least one action'],
    [
      [{ name: 'A', targetRoles: ['web'], actions: [{ name: 'x', type: 'script' }] }],
      'steps[0].actions[0].script is required for a script action',
    ],
    [
      [{ name: 'A', targetRoles: ['web'], actions: [{ name: 'x', type: 'package' }] }],
      'steps[0].actions[0].packageId is required for a package action',
    ],
    [
      [{ name: 'A', targetRoles: ['web'], actions: [{ name: 'x', type: 'deploy-magic' }] }],
      'steps[0].actions[0].type must be one of script, package, manual-intervention, email',
    ],
    [
      [{ name: 'A', actions: [script] }],
      'steps[0].actions[0].type needs the step to have targetRoles (only manual-intervention and email run on the server)',
    ],
    [
      [{ name: 'A', actions: [{ name: 'm', type: 'email', to: ['not an address'], subject: 's', body: 'b' }] }],
      'steps[0].actions[0].to[0] must be email addresses',
    ],
    [
      [
        {
          name: 'A',
          actions: [{ name: 'm', type: 'email', to: ['a@example.com'], subject: 'x'.repeat(1001), body: '' }],
        },
      ],
      'steps[0].actions[0].subject must be at most 1000 characters',
    ],
    [
      [
        {
          name: 'A',
          targetRoles: ['web'],
          actions: [{ name: 'm', type: 'email', to: ['a@b.io'], subject: 's', body: '' }],
        },
      ],
      'steps[0].actions[0].type email is sent by the server: put it in a step without targetRoles',
    ],
    [
      [{ name: 'A', targetRoles: ['web'], actions: [script, script] }],
      'steps[0].actions[1].name "a" is already used in this step',
    ],
    [
      [
        { name: 'A', targetRoles: ['web'], actions: [script] },
        { name: 'A', targetRoles: ['web'], actions: [script] },
      ],
      'steps[1].name "A" is already used by another step',
    ],
    [[{ name: '', targetRoles: ['web'], actions: [script] }], 'steps[0].name must not be empty'],
  ])('refuses %j', (steps, message) => {
    expect(messages(steps)).toContain(message);
  });

  it('names unknown fields', () => {
    expect(messages([{ name: 'A', targetRoles: ['web'], windowsize: 2, actions: [script] }])).toContain(
      'steps[0]: unknown field(s) "windowsize"',
    );
  });

  it('refuses a body that is not a list', () => {
    expect(messages({ name: 'A' })[0]).toMatch(/^steps must be a list of steps/);
  });
});
