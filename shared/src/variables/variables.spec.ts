import { maskSecrets, MASK, parseServiceMessage, resolveScoped, scopeRank, substitute } from './index.js';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SCRIPT_PRELUDE, variablesFile } from './index.js';

describe('scoping', () => {
  const ctx = { environmentId: 'prod', roles: ['web'], machineId: 'm1' };
  // Machine beats role beats environment beats unscoped; a scope that does not match never applies.
  it('ranks scopes by specificity', () => {
    expect(scopeRank(undefined, ctx)).toBe(0);
    expect(scopeRank({ environmentIds: ['prod'] }, ctx)).toBe(1);
    expect(scopeRank({ roles: ['web'] }, ctx)).toBe(2);
    expect(scopeRank({ machineIds: ['m1'] }, ctx)).toBe(4);
    expect(scopeRank({ environmentIds: ['test'] }, ctx)).toBe(-1);
    expect(scopeRank({ roles: ['web'], environmentIds: ['test'] }, ctx)).toBe(-1);
  });

  it('resolves the most specific value, first on a tie', () => {
    const r = resolveScoped(
      [
        { name: 'A', value: 'env', scope: { environmentIds: ['prod'] } },
        { name: 'A', value: 'plain' },
        { name: 'A', value: 'role', scope: { roles: ['web'] } },
        { name: 'B', value: 'first' },
        { name: 'B', value: 'second' },
        { name: 'C', value: 'other-machine', scope: { machineIds: ['m2'] } },
      ],
      ctx,
    );
    expect(r.get('A')?.value).toBe('role');
    expect(r.get('B')?.value).toBe('first');
    expect(r.has('C')).toBe(false);
  });
});

describe('substitution', () => {
  const vars: Record<string, string> = {
    A: 'a',
    Nested: 'x#{A}y',
    Loop: '#{Loop}',
    'Cuttle.Action[S.A].Output[web-01].X': 'out',
  };
  const sub = (t: string) => substitute(t, (n) => vars[n]);
  // References are replaced, nested ones too; ##{ escapes; unknown names stay and are reported.
  it.each([
    ['#{A}', 'a', []],
    ['#{Nested}!', 'xay!', []],
    ['##{A}', '#{A}', []],
    ['#{Nope} and #{A}', '#{Nope} and a', ['Nope']],
    ['#{Cuttle.Action[S.A].Output[web-01].X}', 'out', []],
    ['#{ A }', 'a', []],
    ['#{', '#{', []],
  ])('%s → %s', (input, out, unknown) => {
    expect(sub(input)).toEqual({ text: out, unknown });
  });

  // A variable that refers to itself does not loop forever.
  it('stops a self-reference', () => {
    expect(sub('#{Loop}').unknown).toEqual(['Loop']);
  });
});

describe('masking and service messages', () => {
  it('masks every occurrence, longest secret first', () => {
    expect(maskSecrets('pw=abc abcdef abc', ['abc', 'abcdef'])).toBe(`pw=${MASK} ${MASK} ${MASK}`);
    expect(maskSecrets('nothing', ['', 'zzz'])).toBe('nothing');
  });

  // The bash prelude and the parser agree, for any value (spaces, quotes, newlines, unicode).
  it('round-trips set_cuttle_variable through bash', () => {
    const value = `a "quoted" value\nwith a newline and ünïcode`;
    const out = execFileSync(
      'bash',
      ['-c', `${SCRIPT_PRELUDE}\nset_cuttle_variable My.Var "$V" sensitive\nbash -c 'set_cuttle_variable Child ok'`],
      { env: { ...process.env, V: value } },
    ).toString();
    const [first, second] = out.trim().split('\n').map(parseServiceMessage);
    expect(first).toEqual({ name: 'My.Var', value, sensitive: true });
    expect(second).toEqual({ name: 'Child', value: 'ok', sensitive: false });
    expect(parseServiceMessage('echo ##cuttle[setVariable nonsense]')).toBeNull();
  });
});

describe('get_cuttle_variable', () => {
  // A script and its child bash (deploy.sh) read any value from the variables file, nested references expanded,
  // whatever its characters; an unknown name prints nothing, warns on stderr and returns 1.
  it('prints values from the variables file through bash', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cuttle-vars-'));
    try {
      const file = join(dir, 'vars');
      const odd = `a "quoted" value with spaces, $dollars and ünïcode`;
      writeFileSync(
        file,
        variablesFile(
          new Map([
            ['Odd', odd],
            ['Host', 'db.internal'],
            ['Url', 'https://#{Host}/x'],
            ['Empty', ''],
            ['Cuttle.Action[S.A].Output.X', 'out'],
          ]),
        ),
        { mode: 0o600 },
      );
      const run = (script: string) =>
        execFileSync('bash', ['-c', `${SCRIPT_PRELUDE}\n${script}`], {
          env: { ...process.env, CUTTLE_VARIABLES_FILE: file },
          stdio: ['ignore', 'pipe', 'pipe'],
        }).toString();
      expect(run('get_cuttle_variable Odd')).toBe(`${odd}\n`);
      expect(run('echo "[$(get_cuttle_variable Url)]"')).toBe('[https://db.internal/x]\n');
      expect(run('echo "[$(get_cuttle_variable Empty)]"')).toBe('[]\n');
      expect(run(`bash -c 'get_cuttle_variable "Cuttle.Action[S.A].Output.X"'`)).toBe('out\n');
      expect(run('x=$(get_cuttle_variable Nope 2>/dev/null); echo "rc=$? [$x]"')).toBe('rc=1 []\n');
      expect(run('get_cuttle_variable Nope 2>&1; true')).toBe('get_cuttle_variable: unknown variable Nope\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
