import { setTimeout as delay } from 'node:timers/promises';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar';
import winston from 'winston';
import { PackageInstaller } from './package-installer.js';
import { PackageStore } from './package-store.js';

const silent = winston.createLogger({ silent: true });
let base: string;
let work: string;
let archive: string;
let ref: { packageId: string; version: string; sha256: string; sizeBytes: number };
let downloads: Array<{ prefetch: boolean }>;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'cuttle-inst-'));
  work = join(base, 'work');
  await mkdir(join(base, 'src'), { recursive: true });
  await writeFile(join(base, 'src', 'deploy.sh'), '#!/bin/sh\necho hi\n');
  archive = join(base, 'app.tar.gz');
  await tar.c({ gzip: true, file: archive, cwd: join(base, 'src') }, ['deploy.sh']);
  const bytes = await readFile(archive);
  ref = {
    packageId: 'app',
    version: '1.2.3',
    sha256: createHash('sha256').update(bytes).digest('hex'),
    sizeBytes: bytes.length,
  };
  downloads = [];
});
afterEach(() => rm(base, { recursive: true, force: true }));

const installer = (
  download = async (_sha: string, dest: string, prefetch?: boolean) => {
    downloads.push({ prefetch: !!prefetch });
    await copyFile(archive, dest);
  },
) => new PackageInstaller(new PackageStore(join(base, 'cache')), work, download, silent);

describe('PackageInstaller', () => {
  // A prefetch downloads once (marked as a prefetch, so the server serves leases first) and unpacks ahead; the
  // lease then gets that copy as its install folder without a second download or unpacking.
  it('installs the copy unpacked ahead by a prefetch', async () => {
    const i = installer();
    i.prefetch([ref]);
    await delay(20); // the lease comes later than the prefetch
    const got = await i.ensure(ref);
    const { dir, ahead } = await i.install(got.path, ref);
    expect(ahead).toBe(true);
    expect(dir).toBe(join(work, 'app', '1.2.3'));
    expect(await readFile(join(dir, 'deploy.sh'), 'utf8')).toContain('echo hi');
    expect(downloads).toEqual([{ prefetch: true }]);
    expect(await readdir(join(work, 'app'))).toEqual(['1.2.3']);
  });

  // The copy unpacked ahead serves one install only: the next one of the same version gets a fresh folder.
  it('unpacks again for a second install of the same version', async () => {
    const i = installer();
    i.prefetch([ref]);
    const got = await i.ensure(ref);
    await i.install(got.path, ref);
    const second = await i.install(got.path, ref);
    expect(second).toEqual({ dir: join(work, 'app', '1.2.3_1'), ahead: false });
  });

  // A failed prefetch is not the action's failure: the lease downloads the package itself.
  it('falls back to a download of its own when the prefetch failed', async () => {
    let fail = true;
    const i = installer(async (_sha, dest, prefetch) => {
      downloads.push({ prefetch: !!prefetch });
      if (fail) throw new Error('server unreachable');
      await copyFile(archive, dest);
    });
    i.prefetch([ref]);
    await delay(50);
    fail = false;
    const got = await i.ensure(ref);
    const { dir, ahead } = await i.install(got.path, ref);
    expect(ahead).toBe(false);
    expect(await readFile(join(dir, 'deploy.sh'), 'utf8')).toContain('echo hi');
    expect(downloads).toEqual([{ prefetch: true }, { prefetch: false }]);
  });

  // Staging folders left by an agent that stopped are deleted at start, and stop() deletes unclaimed copies.
  it('deletes unclaimed staging folders at start and at stop', async () => {
    await mkdir(join(work, 'app', '.staging-0123456789abcdef'), { recursive: true });
    const i = installer();
    await i.sweep();
    expect(await readdir(join(work, 'app'))).toEqual([]);
    i.prefetch([ref]);
    await i.ensure(ref);
    await delay(100);
    await i.stop();
    expect(await readdir(join(work, 'app'))).toEqual([]);
  });
});
