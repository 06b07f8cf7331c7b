import { mkdir, mkdtemp, readdir, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { markInstalled, pruneInstallations } from './retention.js';

let work: string;
beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'cuttle-retain-'));
});
afterEach(() => rm(work, { recursive: true, force: true }));

async function install(name: string, at: number) {
  const dir = join(work, 'web', name);
  await mkdir(dir, { recursive: true });
  await markInstalled(dir, at);
  return dir;
}
const left = async () => (await readdir(join(work, 'web'))).filter((f) => !f.startsWith('.')).sort();

describe('pruneInstallations', () => {
  // The newest `keep` installs stay, by install time (not name), and older ones go with their markers.
  it('keeps the newest by install time', async () => {
    await install('2.0.0', 1000);
    await install('10.0.0', 3000);
    await install('1.0.0', 2000);
    await install('1.0.0_1', 4000);
    const removed = await pruneInstallations(work, 'web', 2, new Set());
    expect(removed).toEqual([join(work, 'web', '2.0.0'), join(work, 'web', '1.0.0')]);
    expect(await left()).toEqual(['1.0.0_1', '10.0.0']);
    expect((await readdir(join(work, '.installed', 'web'))).sort()).toEqual(['1.0.0_1', '10.0.0']);
  });

  // A folder a running lease uses is never deleted, however old; staging folders are not installs.
  it('spares protected folders and staging folders', async () => {
    const old = await install('1.0.0', 1000);
    await install('1.0.1', 2000);
    await install('1.0.2', 3000);
    await mkdir(join(work, 'web', '.staging-abc'));
    expect(await pruneInstallations(work, 'web', 1, new Set([old]))).toEqual([join(work, 'web', '1.0.1')]);
    expect(await left()).toEqual(['1.0.0', '1.0.2']);
    expect(await readdir(join(work, 'web'))).toContain('.staging-abc');
  });

  // Folders from before markers existed are ordered by their modification time; keep is at least 1.
  it('falls back to the modification time and always keeps one', async () => {
    for (const [name, t] of [
      ['a', 100],
      ['b', 300],
      ['c', 200],
    ] as const) {
      await mkdir(join(work, 'web', name), { recursive: true });
      await utimes(join(work, 'web', name), t, t);
    }
    await pruneInstallations(work, 'web', 0, new Set());
    expect(await left()).toEqual(['b']);
    expect(await pruneInstallations(work, 'nothing', 2, new Set())).toEqual([]);
  });
});
