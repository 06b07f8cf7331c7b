import { validateSteps } from '../process/index.js';
import { fileMatcher, patternProblem } from './substitute-files.js';

describe('substituteInFiles patterns', () => {
  // Only relative globs that cannot climb out of the package root are accepted.
  it('refuses absolute paths, ".." segments, backslashes and empty globs', () => {
    expect(patternProblem('config/*.conf')).toBeNull();
    expect(patternProblem('**/*.json')).toBeNull();
    expect(patternProblem('./app.conf')).toBeNull();
    expect(patternProblem('a..b/x')).toBeNull(); // ".." inside a name is not a segment
    expect(patternProblem('/etc/passwd')).toMatch(/relative/);
    expect(patternProblem('C:/x')).toMatch(/relative/);
    expect(patternProblem('../x')).toMatch(/inside the package/);
    expect(patternProblem('config/../../x')).toMatch(/inside the package/);
    expect(patternProblem('config/..')).toMatch(/inside the package/);
    expect(patternProblem('config\\..\\x')).toMatch(/backslash/);
    expect(patternProblem(' ')).toMatch(/glob/);
    expect(patternProblem('x'.repeat(501))).toMatch(/at most 500/);
  });

  // A glob matches package-relative paths as a user expects: `*` within a folder, `**` across, dot files too.
  it('matches package-relative paths', () => {
    const m = fileMatcher(['config/*.conf', '**/*.json', './.env']);
    expect(m('config/app.conf')).toBe(true);
    expect(m('config/sub/app.conf')).toBe(false);
    expect(m('app.conf')).toBe(false);
    expect(m('a/b/c.json')).toBe(true);
    expect(m('c.json')).toBe(true);
    expect(m('.env')).toBe(true);
    expect(fileMatcher(['!x'])('!x')).toBe(true); // no negation: a leading "!" is part of the name
  });

  // The process model refuses a bad glob naming its field, and a glob on an action without a package.
  it('is validated with the process, naming the field', () => {
    const step = (action: object) => [{ name: 'S', targetRoles: ['web'], actions: [action] }];
    expect(
      validateSteps(step({ name: 'A', type: 'package', packageId: 'p', substituteInFiles: ['a/*.conf'] })).ok,
    ).toBe(true);
    const bad = validateSteps(step({ name: 'A', type: 'package', packageId: 'p', substituteInFiles: ['ok', '../x'] }));
    expect(bad.ok ? [] : bad.messages).toEqual([
      'steps[0].actions[0].substituteInFiles[1] must stay inside the package (no ".." segment)',
    ]);
    const script = validateSteps(step({ name: 'A', type: 'script', script: 'true', substituteInFiles: ['a'] }));
    expect(script.ok ? [] : script.messages).toEqual([
      'steps[0].actions[0].substituteInFiles applies to package actions only',
    ]);
  });
});
