import { ARCHIVE_LIMITS, ArchiveVetting, type ArchiveEntryHeader } from './archive.js';

const file = (path: string, size = 1): ArchiveEntryHeader => ({ path, type: 'File', size });
const dir = (path: string): ArchiveEntryHeader => ({ path, type: 'Directory' });
const link = (path: string, linkpath: string): ArchiveEntryHeader => ({ path, type: 'SymbolicLink', linkpath });

/** The verdict on a whole archive, as the server (upload) and the agent (unpacking) both reach it. */
function judge(entries: ArchiveEntryHeader[], maxUnpackedBytes?: number): string | null {
  const v = new ArchiveVetting(maxUnpackedBytes);
  for (const e of entries) v.admit(e);
  return v.verdict();
}

describe('ArchiveVetting', () => {
  // Ordinary packages pass: files, folders, links that stay inside (also through other links).
  it.each([
    ['files and folders', [dir('app/'), file('app/a.js'), file('./deploy.sh')]],
    ['a link to a sibling', [file('app/config.json'), link('config.json', 'app/config.json')]],
    ['a link up and back down', [dir('a/b/'), link('a/b/up', '../../a')]],
    ['a link through a link that stays inside', [dir('x/y/'), link('l1', 'x'), link('l2', 'l1/y/..')]],
    ['a dangling link inside', [link('later', 'not/there')]],
  ])('accepts %s', (_n, entries) => {
    expect(judge(entries)).toBeNull();
  });

  // Links are judged as the kernel resolves them, following the archive's other links: a target that looks
  // harmless as text but escapes through another link is refused, as are entries written through a link.
  it.each([
    ['a link whose target climbs out', [link('l', '../outside')], /symlink "l" -> "\.\.\/outside" points outside/],
    ['an absolute link target', [link('etc', '/etc')], /points outside the package folder \(an absolute target\)/],
    [
      'a link escaping through a link to "."',
      [dir('y'), link('x', '.'), link('a', 'x/y/../..')],
      /symlink "a" -> "x\/y\/\.\.\/\.\." points outside/,
    ],
    [
      'a link escaping through a link pointing up',
      [dir('d/'), link('d/up', '..'), link('esc', 'd/up/..')],
      /symlink "esc"/,
    ],
    ['a chain of links out', [dir('a/b/'), link('a/b/c', '../..'), link('z', 'a/b/c/..')], /symlink "z"/],
    ['a loop of links', [link('p', 'q/x'), link('q', 'p/y')], /points outside/],
    [
      'an entry written through a link',
      [dir('real'), link('alias', 'real'), file('alias/x')],
      /"alias\/x" would be written through symlink "alias"/,
    ],
    ['a link after an entry below its path', [file('a/x'), link('a', 'b')], /symlink "a" shares its path/],
    ['a hard link', [{ path: 'passwd', type: 'Link', linkpath: '/etc/passwd' }], /hard link/],
    ['a device', [{ path: 'dev', type: 'CharacterDevice' }], /type CharacterDevice, which packages may not contain/],
    ['a ".." segment', [file('a/../../x')], /escapes the package folder \(a "\.\." segment\)/],
    ['an absolute path', [file('/tmp/x')], /escapes the package folder \(an absolute path\)/],
  ])('refuses %s', (_n, entries, message) => {
    expect(judge(entries)).toMatch(message);
  });

  // Length bounds are in UTF-8 bytes, per name and per path, and a refusal names the entry without spelling out
  // thousands of characters.
  it('bounds names, paths and link targets in bytes', () => {
    expect(judge([file('é'.repeat(127))])).toBeNull(); // 254 bytes
    expect(judge([file('é'.repeat(128))])).toMatch(/has a name of 256 bytes \(at most 255\)/);
    const deep = Array.from({ length: 5 }, () => 'd'.repeat(200)).join('/'); // 1,004 bytes
    expect(judge([file(deep)])).toBeNull();
    expect(judge([file(deep + '/abcdefghijklmnopqrstuvwxyz')])).toMatch(/has a path of 1031 bytes \(at most 1024\)/);
    const problem = judge([file('x/'.repeat(3000))])!;
    expect(problem).toMatch(/at most 1024/);
    expect(problem.length).toBeLessThan(400);
    expect(judge([link('l', 'a/'.repeat(ARCHIVE_LIMITS.pathBytes))])).toMatch(/has a target of 2048 bytes/);
  });

  // The unpacked bound counts file sizes; the first file past it is named, and nothing after it is admitted.
  it('refuses past the unpacked size bound', () => {
    const v = new ArchiveVetting(10 * 1024 * 1024);
    expect(v.admit(file('a', 6 * 1024 * 1024))).toBe(true);
    expect(v.admit(dir('d'))).toBe(true);
    expect(v.admit(file('b', 5 * 1024 * 1024))).toBe(false);
    expect(v.admit(file('c', 1))).toBe(false);
    expect(v.verdict()).toBe(
      `the package unpacks to more than 10 MB (at entry "b"; the server's CUTTLE_MAX_UNPACKED_MB)`,
    );
  });

  // A path at most 128 folders deep; deep paths and links among them are judged alike at every depth.
  it('judges deep entries and links, up to the depth bound', () => {
    const v = new ArchiveVetting();
    const base = Array.from({ length: ARCHIVE_LIMITS.depth }, () => 'd').join('/');
    for (let i = 0; i < 1_000; i++) expect(v.admit(file(`${base}/f${i}`))).toBe(true);
    for (let i = 0; i < 100; i++)
      expect(v.admit(link(`${base}/l${i}`, '../'.repeat(ARCHIVE_LIMITS.depth - 1) + 'd'))).toBe(true);
    expect(v.admit(link(`${base}/out`, '../'.repeat(ARCHIVE_LIMITS.depth) + '..'))).toBe(true);
    expect(v.verdict()).toMatch(/symlink "d\/d\/.*\/out" -> .* points outside/);
    expect(judge([file(`${base}/d/f`)])).toMatch(/is 129 folders deep \(at most 128\)/);
  });
});
