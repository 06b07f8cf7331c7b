import { chmod, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { substituteInFiles, SubstitutionPatternError } from './substitute-files.js';

let base: string;
let pkg: string;
const vars = new Map([
  ['DbHost', 'db.internal'],
  ['Nested', 'host #{DbHost}'],
]);
const lookup = (n: string) => vars.get(n);

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'cuttle-subst-'));
  pkg = join(base, 'pkg');
  await mkdir(join(pkg, 'config'), { recursive: true });
});
afterEach(() => rm(base, { recursive: true, force: true }));

describe('substituteInFiles', () => {
  // Matching files get their references replaced (nested ones too, `##{` as a literal); others stay as they were;
  // unknown names stay as written and are reported; a file keeps its mode.
  it('replaces references in matching files only', async () => {
    await writeFile(join(pkg, 'config', 'app.conf'), 'h=#{DbHost}\nn=#{Nested}\nx=#{Nope}\nl=##{DbHost}\n');
    await chmod(join(pkg, 'config', 'app.conf'), 0o640);
    await writeFile(join(pkg, 'config', 'other.txt'), 'h=#{DbHost}\n');
    const r = await substituteInFiles(pkg, ['config/*.conf', 'none/*.x'], lookup);
    expect(await readFile(join(pkg, 'config', 'app.conf'), 'utf8')).toBe(
      'h=db.internal\nn=host db.internal\nx=#{Nope}\nl=#{DbHost}\n',
    );
    expect((await stat(join(pkg, 'config', 'app.conf'))).mode & 0o777).toBe(0o640);
    expect(await readFile(join(pkg, 'config', 'other.txt'), 'utf8')).toBe('h=#{DbHost}\n');
    expect(r).toEqual({
      changed: ['config/app.conf'],
      unknown: [{ file: 'config/app.conf', names: ['Nope'] }],
      unmatched: ['none/*.x'],
      skipped: [],
    });
  });

  // A symlink is never followed: neither a link to a file outside the package nor a link to a folder outside is
  // written through, even when a glob names it.
  it('does not follow symlinks out of the package', async () => {
    const outside = join(base, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'victim.conf'), 'h=#{DbHost}\n');
    await symlink(join(outside, 'victim.conf'), join(pkg, 'config', 'link.conf'));
    await symlink(outside, join(pkg, 'linkdir'));
    const r = await substituteInFiles(pkg, ['config/*.conf', 'linkdir/*', '**/*.conf'], lookup);
    expect(await readFile(join(outside, 'victim.conf'), 'utf8')).toBe('h=#{DbHost}\n');
    expect(r.changed).toEqual([]);
    expect(r.skipped).toEqual([{ file: 'config/link.conf', reason: 'a symlink (links are not followed)' }]);
  });

  // Bytes that are not UTF-8 are not rewritten: only the references would change, and decoding would change more.
  it('leaves files that are not UTF-8 text alone', async () => {
    const bytes = Buffer.concat([Buffer.from('#{DbHost}'), Buffer.from([0xff, 0xfe, 0x00])]);
    await writeFile(join(pkg, 'bin.dat'), bytes);
    const r = await substituteInFiles(pkg, ['*.dat'], lookup);
    expect(await readFile(join(pkg, 'bin.dat'))).toEqual(bytes);
    expect(r.skipped).toEqual([{ file: 'bin.dat', reason: 'not UTF-8 text' }]);
  });

  // The agent judges the patterns again, whatever the server sent.
  it('refuses patterns that leave the package', async () => {
    await expect(substituteInFiles(pkg, ['../*'], lookup)).rejects.toThrow(SubstitutionPatternError);
    await expect(substituteInFiles(pkg, ['/etc/*'], lookup)).rejects.toThrow(/no absolute path/);
  });
});
