import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentHome } from './identity.js';

const onLinux = process.platform === 'linux' && existsSync('/dev/shm') ? describe : describe.skip;

onLinux('AgentHome script folder', () => {
  let dir: string;
  const homes: AgentHome[] = [];
  const home = () => {
    const h = new AgentHome(dir);
    homes.push(h);
    return h;
  };
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'cuttle-home-'))));
  afterEach(() => {
    for (const h of homes.splice(0)) h.releaseScriptDir();
    rmSync(dir, { recursive: true, force: true });
  });

  // Scripts may hold substituted secrets: they are written to memory, in a folder only this user can enter.
  it('is a private folder in /dev/shm', () => {
    const d = home().scriptDir;
    expect(d.startsWith('/dev/shm/cuttle-agent-')).toBe(true);
    expect(statSync(d).mode & 0o777).toBe(0o700);
    expect(statSync(d).uid).toBe(process.getuid!());
  });

  // A crash leaves its scripts behind; the next start of the same agent deletes them.
  it('deletes scripts a crash left there when the agent starts again', () => {
    const d = home().scriptDir;
    writeFileSync(join(d, 'script-0123.sh'), 'echo secret');
    expect(home().scriptDir).toBe(d);
    expect(readdirSync(d)).toEqual([]);
  });

  // /dev/shm is shared: a folder of the same name that is not private (made by someone else, or opened up) is not
  // used; the scripts go to the home folder instead.
  it('falls back to the home folder when the memory folder is not private', () => {
    const d = home().scriptDir;
    chmodSync(d, 0o777);
    expect(home().scriptDir).toBe(join(dir, 'tmp'));
    chmodSync(d, 0o700);
  });
});
