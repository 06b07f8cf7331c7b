import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import * as tar from 'tar';
import {
  extractPackage,
  PackageStore,
  PackageVerificationError,
  sha256File,
  UnsafePackageError,
} from './package-store.js';

let base: string;
let root: string;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'cuttle-pkg-'));
  root = join(base, 'installs');
  await mkdir(root);
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

// ---- raw tar writer: node-tar's own writer sanitizes paths, so hostile archives are built byte by byte ----

interface RawEntry {
  path: string;
  type: '0' | '1' | '2' | '5' | '6' | 'x'; // file, hard link, symlink, directory, FIFO, pax header of the next
  body?: string;
  linkpath?: string;
  mode?: number;
}

function ustarHeader(e: RawEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number, len: number) => h.write(s, off, Math.min(len, Buffer.byteLength(s)), 'utf8');
  const octal = (n: number, off: number, len: number) => put(n.toString(8).padStart(len - 1, '0') + '\0', off, len);
  put(e.path, 0, 100);
  octal(e.mode ?? (e.type === '5' ? 0o755 : 0o644), 100, 8);
  octal(0, 108, 8); // uid
  octal(0, 116, 8); // gid
  octal(size, 124, 12);
  octal(Math.floor(Date.now() / 1000), 136, 12);
  h.write(e.type, 156, 1, 'latin1');
  if (e.linkpath) put(e.linkpath, 157, 100);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  // Checksum: sum of all header bytes with the checksum field itself counted as spaces.
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
  return h;
}

async function writeRawTarGz(file: string, entries: RawEntry[]): Promise<void> {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '', 'utf8');
    blocks.push(ustarHeader(e, body.length));
    if (body.length > 0) blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024)); // end-of-archive marker
  await writeFile(file, gzipSync(Buffer.concat(blocks)));
}

/** A pax header giving the next entry a path (and link target) of any length, as tar does for long names. */
function pax(fields: Record<string, string>): RawEntry {
  const records = Object.entries(fields).map(([k, v]) => {
    const rest = ` ${k}=${v}\n`;
    let len = Buffer.byteLength(rest) + 1;
    while (String(len).length + Buffer.byteLength(rest) !== len) len = String(len).length + Buffer.byteLength(rest);
    return `${len}${rest}`;
  });
  return { path: 'PaxHeader', type: 'x', body: records.join('') };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Every path under `dir`, relative, sorted. */
async function tree(dir: string): Promise<string[]> {
  if (!(await exists(dir))) return [];
  return ((await readdir(dir, { recursive: true })) as string[]).sort();
}

async function goodArchive(): Promise<string> {
  const src = join(base, 'src');
  await mkdir(join(src, 'app'), { recursive: true });
  await writeFile(join(src, 'deploy.sh'), '#!/bin/sh\necho deploying\n');
  await chmod(join(src, 'deploy.sh'), 0o755);
  await writeFile(join(src, 'app', 'config.json'), '{"port":8080}\n');
  const { symlink } = await import('node:fs/promises');
  await symlink('app/config.json', join(src, 'config.json'));
  const file = join(base, 'good.tar.gz');
  await tar.c({ gzip: true, file, cwd: src, portable: true }, ['deploy.sh', 'app', 'config.json']);
  return file;
}

describe('extractPackage', () => {
  // A good package lands complete, with contents, exec bits and internal symlinks intact, in <root>/<id>/<version>.
  it('extracts a good archive into a new version folder', async () => {
    const file = await goodArchive();
    const dest = await extractPackage(file, root, 'web', '1.0.0');
    expect(dest).toBe(join(root, 'web', '1.0.0'));
    expect(await readFile(join(dest, 'deploy.sh'), 'utf8')).toBe('#!/bin/sh\necho deploying\n');
    expect((await stat(join(dest, 'deploy.sh'))).mode & 0o111).toBe(0o111);
    expect(await readFile(join(dest, 'app', 'config.json'), 'utf8')).toBe('{"port":8080}\n');
    expect(await readlink(join(dest, 'config.json'))).toBe('app/config.json');
    expect(await readdir(join(root, 'web'))).toEqual(['1.0.0']);
  });

  // Re-deploying a version never overwrites the previous install: it goes to <version>_1, then _2.
  it('never overwrites a previous install of the same version', async () => {
    const file = await goodArchive();
    await extractPackage(file, root, 'web', '1.0.0');
    await writeFile(join(root, 'web', '1.0.0', 'deploy.sh'), 'local edit');
    expect(await extractPackage(file, root, 'web', '1.0.0')).toBe(join(root, 'web', '1.0.0_1'));
    expect(await extractPackage(file, root, 'web', '1.0.0')).toBe(join(root, 'web', '1.0.0_2'));
    expect(await readFile(join(root, 'web', '1.0.0', 'deploy.sh'), 'utf8')).toBe('local edit');
    expect((await readdir(join(root, 'web'))).sort()).toEqual(['1.0.0', '1.0.0_1', '1.0.0_2']);
  });

  // Package files never carry setuid/setgid bits: the agent may extract as root.
  it('strips setuid and setgid bits', async () => {
    const file = join(base, 'suid.tar.gz');
    await writeRawTarGz(file, [{ path: 'tool', type: '0', body: 'x', mode: 0o6755 }]);
    const dest = await extractPackage(file, root, 'p', '1');
    expect((await stat(join(dest, 'tool'))).mode & 0o7777).toBe(0o755);
  });

  describe('refuses hostile archives', () => {
    const outsideName = `abs-${randomBytes(6).toString('hex')}.txt`;
    afterAll(async () => {
      await rm(join('/tmp', outsideName), { force: true });
    });

    // Each case: refused with UnsafePackageError naming the entry, nothing written anywhere under base (including
    // the would-be escape targets), and no staging folder left behind.
    const cases: Array<{ name: string; entries: () => RawEntry[]; mentions: string; escapes: () => string[] }> = [
      {
        name: '../ traversal',
        entries: () => [
          { path: 'ok.txt', type: '0', body: 'fine' },
          { path: '../evil.txt', type: '0', body: 'evil' },
        ],
        mentions: '../evil.txt',
        escapes: () => [join(root, 'p', 'evil.txt'), join(root, 'evil.txt'), join(base, 'evil.txt')],
      },
      {
        name: 'absolute path',
        entries: () => [{ path: `/tmp/${outsideName}`, type: '0', body: 'evil' }],
        mentions: `/tmp/${outsideName}`,
        escapes: () => [join('/tmp', outsideName)],
      },
      {
        name: 'symlink escaping the package, then a file through it',
        entries: () => [
          { path: 'link', type: '2', linkpath: '../../outside' },
          { path: 'link/x', type: '0', body: 'evil' },
        ],
        mentions: 'link',
        escapes: () => [join(root, 'outside'), join(base, 'outside')],
      },
      {
        name: 'hard link to /etc/passwd',
        entries: () => [{ path: 'passwd', type: '1', linkpath: '/etc/passwd' }],
        mentions: 'passwd',
        escapes: () => [],
      },
      {
        name: 'symlink chain that only escapes when resolved (x -> ., a -> x/y/../..)',
        entries: () => [
          { path: 'y', type: '5' },
          { path: 'x', type: '2', linkpath: '.' },
          { path: 'a', type: '2', linkpath: 'x/y/../..' },
        ],
        mentions: 'x/y/../..',
        escapes: () => [],
      },
      {
        name: 'file written through an in-package symlink',
        entries: () => [
          { path: 'real', type: '5' },
          { path: 'alias', type: '2', linkpath: 'real' },
          { path: 'alias/x', type: '0', body: 'sneaky' },
        ],
        mentions: 'alias/x',
        escapes: () => [],
      },
      {
        name: 'absolute symlink target',
        entries: () => [{ path: 'etc', type: '2', linkpath: '/etc' }],
        mentions: '/etc',
        escapes: () => [],
      },
      {
        name: 'FIFO entry',
        entries: () => [{ path: 'pipe', type: '6' }],
        mentions: 'pipe',
        escapes: () => [],
      },
    ];

    it.each(cases)('$name', async ({ entries, mentions, escapes }) => {
      const passwdBefore = await sha256File('/etc/passwd');
      const file = join(base, 'hostile.tar.gz');
      await writeRawTarGz(file, entries());
      const err = await extractPackage(file, root, 'p', '1').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnsafePackageError);
      expect((err as Error).message).toContain(mentions);
      // No staging, no version folder, no stray files: at most the package's folder, empty.
      expect((await tree(root)).filter((x) => x !== 'p')).toEqual([]);
      expect((await readdir(base)).sort()).toEqual(['hostile.tar.gz', 'installs']);
      for (const p of escapes()) expect(await exists(p)).toBe(false);
      expect(await sha256File('/etc/passwd')).toBe(passwdBefore);
    });
  });

  // Names and paths longer than file systems take are refused before anything is written, with a short reason
  // (the entry's name cut), so the failure fits the protocol's result.
  it.each([
    ['a name over 255 bytes', { path: 'n'.repeat(256) }, /has a name of 256 bytes \(at most 255\)/],
    [
      'a path over 1,024 bytes',
      { path: Array.from({ length: 20 }, () => 'd'.repeat(60)).join('/') },
      /has a path of 1219 bytes \(at most 1024\)/,
    ],
    [
      'a symlink target over 1,024 bytes',
      { path: 'l', linkpath: 'a/'.repeat(600) },
      /has a target of 1200 bytes \(at most 1024\)/,
    ],
  ])('refuses %s', async (_name, fields, message) => {
    const file = join(base, 'long.tar.gz');
    const link = 'linkpath' in fields;
    await writeRawTarGz(file, [
      { path: 'ok.txt', type: '0', body: 'fine' },
      pax(fields),
      { path: 'short', type: link ? '2' : '0', body: link ? '' : 'x', linkpath: link ? 'x' : undefined },
    ]);
    const err = await extractPackage(file, root, 'p', '1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsafePackageError);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message.length).toBeLessThan(500);
    expect(await tree(root)).toEqual(['p']);
  });

  // Past the unpacked bound nothing more is written and the package is refused, naming the bound and the entry.
  it('stops unpacking past the unpacked size bound', async () => {
    const file = join(base, 'big.tar.gz');
    const mb = randomBytes(768 * 1024).toString('base64'); // 1 MiB that gzip cannot shrink past node-tar's ratio guard
    await writeRawTarGz(file, [
      { path: 'a.bin', type: '0', body: mb },
      { path: 'b.bin', type: '0', body: mb.repeat(10) },
      { path: 'c.bin', type: '0', body: 'after' },
    ]);
    const err = await extractPackage(file, root, 'p', '1', 2 * 1024 * 1024).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsafePackageError);
    expect((err as Error).message).toContain('unpacks to more than 2 MB (at entry "b.bin"');
    expect(await tree(root)).toEqual(['p']);
    // The same package within a larger bound unpacks whole.
    const dest = await extractPackage(file, root, 'p', '1', 64 * 1024 * 1024);
    expect((await stat(join(dest, 'b.bin'))).size).toBe(10 * 1024 * 1024);
    expect(await readFile(join(dest, 'c.bin'), 'utf8')).toBe('after');
  });

  // A corrupt archive fails and leaves nothing behind either.
  it('rejects a corrupt archive without leaving a staging folder', async () => {
    const file = join(base, 'corrupt.tar.gz');
    await writeFile(file, gzipSync(randomBytes(4096)));
    await expect(extractPackage(file, root, 'p', '1')).rejects.toThrow();
    expect(await tree(root)).toEqual(['p']); // the package folder may exist, but empty
  });

  // One pass over the archive: a symlink that arrives after entries at or below its path is refused too (the old
  // two-pass vetting saw it coming; the final tree would otherwise depend on extraction order).
  it('refuses a symlink that comes after an entry below its path', async () => {
    const file = join(base, 'late-link.tar.gz');
    await writeRawTarGz(file, [
      { path: 'a/x', type: '0', body: 'first' },
      { path: 'a', type: '2', linkpath: 'b' },
    ]);
    const err = await extractPackage(file, root, 'p', '1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsafePackageError);
    expect((err as Error).message).toContain('symlink "a" shares its path');
    expect(await tree(root)).toEqual(['p']);
  });

  // A failure during extraction itself (after vetting passed) removes the half-filled staging folder.
  it('removes the staging folder when extraction fails midway', async () => {
    const file = join(base, 'clash.tar.gz');
    // Harmless entry by entry, but `a/b` needs `a` to be a folder while `a` is already a file.
    await writeRawTarGz(file, [
      { path: 'a', type: '0', body: 'file' },
      { path: 'a/b', type: '0', body: 'child' },
    ]);
    const err = await extractPackage(file, root, 'p', '1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(UnsafePackageError);
    expect((err as Error).message).toContain('.staging-'); // proves the failure happened inside staging
    expect(await tree(root)).toEqual(['p']); // the package folder may exist, but empty
  });

  // packageId and version become path segments: refuse anything that could leave <root>.
  it('refuses path-like package ids and versions', async () => {
    const file = await goodArchive();
    for (const [id, v] of [
      ['..', '1'],
      ['a/b', '1'],
      ['p', '..'],
      ['p', '../../x'],
      ['p', ''],
      ['p', '.staging-0123'],
    ]) {
      await expect(extractPackage(file, root, id, v)).rejects.toThrow(UnsafePackageError);
    }
    expect(await tree(root)).toEqual([]);
  });

  // The server accepts build metadata in versions ("1.0.0+build.7"): the agent must install them too.
  it('installs a version with build metadata', async () => {
    const file = await goodArchive();
    expect(await extractPackage(file, root, 'p', '1.0.0+build.7')).toBe(join(root, 'p', '1.0.0+build.7'));
  });
});

describe('PackageStore', () => {
  const content = Buffer.from('pretend this is a tarball\n');
  const sha = createHash('sha256').update(content).digest('hex');
  let cacheDir: string;
  let store: PackageStore;

  beforeEach(() => {
    cacheDir = join(base, 'cache');
    store = new PackageStore(cacheDir);
  });

  const writer =
    (data: Buffer, counter?: { n: number }, waitMs = 0) =>
    async (dest: string) => {
      if (counter) counter.n++;
      await delay(waitMs);
      await writeFile(dest, data);
    };

  // Bytes that do not match the announced sha256 are never cached, and the partial download is removed.
  it('rejects a sha256 mismatch and removes the temp file', async () => {
    const bad = Buffer.from('pretend this is a tarbalL\n'); // same size, different bytes
    const err = await store.ensure({ sha256: sha, sizeBytes: bad.length }, writer(bad)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PackageVerificationError);
    const actual = createHash('sha256').update(bad).digest('hex');
    expect((err as Error).message).toContain(sha);
    expect((err as Error).message).toContain(actual);
    expect(await readdir(cacheDir)).toEqual([]);
    expect(await store.has(sha)).toBeNull();
  });

  // A download that hashes on the way (the agent's) is held to the same check: its digest of other bytes is refused.
  it('rejects a mismatch reported by a hashing download', async () => {
    const bad = Buffer.from('pretend this is a tarbalL\n');
    const hashing = async (dest: string) => {
      await writeFile(dest, bad);
      return createHash('sha256').update(bad).digest('hex');
    };
    const err = await store.ensure({ sha256: sha, sizeBytes: bad.length }, hashing).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PackageVerificationError);
    expect(await readdir(cacheDir)).toEqual([]);
    const good = async (dest: string) => {
      await writeFile(dest, content);
      return sha;
    };
    expect((await store.ensure({ sha256: sha, sizeBytes: content.length }, good)).downloaded).toBe(true);
  });

  // A size mismatch is caught too (before hashing), with expected and actual named.
  it('rejects a size mismatch', async () => {
    const err = await store.ensure({ sha256: sha, sizeBytes: content.length + 1 }, writer(content)).catch((e) => e);
    expect(err).toBeInstanceOf(PackageVerificationError);
    expect((err as Error).message).toMatch(new RegExp(`${content.length + 1}.*${content.length}`));
    expect(await readdir(cacheDir)).toEqual([]);
  });

  // A cached, verified package is reused: the second ensure does not download again.
  it('downloads once and then serves from the cache', async () => {
    const calls = { n: 0 };
    const first = await store.ensure({ sha256: sha, sizeBytes: content.length }, writer(content, calls));
    expect(first).toEqual({ path: join(cacheDir, `${sha}.tar.gz`), downloaded: true, bytes: content.length });
    const second = await store.ensure({ sha256: sha, sizeBytes: content.length }, writer(content, calls));
    expect(second).toEqual({ ...first, downloaded: false });
    expect(calls.n).toBe(1);
    expect(await store.has(sha)).toBe(first.path);
    expect(await readFile(first.path)).toEqual(content);
    // Only the archive and its verification marker remain; no temp files.
    expect((await readdir(cacheDir)).sort()).toEqual([`${sha}.tar.gz`, `${sha}.tar.gz.ok`]);
  });

  // Concurrent deployments of one package share a single download.
  it('shares one download between concurrent ensure calls', async () => {
    const calls = { n: 0 };
    const results = await Promise.all(
      Array.from({ length: 5 }, () =>
        store.ensure({ sha256: sha, sizeBytes: content.length }, writer(content, calls, 100)),
      ),
    );
    expect(calls.n).toBe(1);
    expect(new Set(results.map((r) => r.path)).size).toBe(1);
  });

  // A failed download is not cached as a failure: the next ensure tries again, and no temp file is left.
  it('retries after a failed download', async () => {
    const failing = async (dest: string) => {
      await writeFile(dest, 'partial');
      throw new Error('connection reset');
    };
    await expect(store.ensure({ sha256: sha, sizeBytes: content.length }, failing)).rejects.toThrow('connection reset');
    expect(await readdir(cacheDir)).toEqual([]);
    const ok = await store.ensure({ sha256: sha, sizeBytes: content.length }, writer(content));
    expect(ok.downloaded).toBe(true);
  });

  // Without its marker a cached file is re-hashed: kept if intact, discarded if corrupted.
  it('re-verifies a cached file whose marker is missing', async () => {
    const { path } = await store.ensure({ sha256: sha, sizeBytes: content.length }, writer(content));
    await rm(`${path}.ok`);
    expect(await store.has(sha)).toBe(path);
    expect(await exists(`${path}.ok`)).toBe(true);

    await rm(`${path}.ok`);
    await writeFile(path, 'tampered with, same length!');
    expect(await store.has(sha)).toBeNull();
    expect(await exists(path)).toBe(false);
  });

  // The sha256 becomes a file name: anything but 64 hex digits is refused.
  it('refuses malformed sha256 values', async () => {
    await expect(store.has('../../etc/passwd')).rejects.toThrow(TypeError);
    await expect(store.ensure({ sha256: 'abc', sizeBytes: 1 }, writer(content))).rejects.toThrow(TypeError);
  });
});

describe('PackageStore cache bound', () => {
  const pkg = (n: number) => {
    const data = Buffer.alloc(400, n);
    return { data, sha: createHash('sha256').update(data).digest('hex') };
  };
  const put = (store: PackageStore, p: { data: Buffer; sha: string }) =>
    store.ensure({ sha256: p.sha, sizeBytes: p.data.length }, (dest) => writeFile(dest, p.data));
  const cached = async (dir: string) => (await readdir(dir)).filter((f) => f.endsWith('.tar.gz')).sort();

  // Past the bound the least recently used archives go (a use renews an archive), never a pinned one, and the one
  // just downloaded stays even alone above the bound.
  it('evicts least recently used, never pinned', async () => {
    const dir = join(base, 'bounded');
    const evicted: string[] = [];
    const store = new PackageStore(dir, { maxBytes: 1000, onEvict: (e) => evicted.push(e.sha256) });
    const [a, b, c, d] = [1, 2, 3, 4].map(pkg);
    await put(store, a);
    await delay(20);
    await put(store, b);
    await delay(20);
    expect(await store.has(a.sha)).toBeTruthy(); // a used again: b is now the least recently used
    await delay(20);
    const third = await put(store, c);
    expect(third.evicted).toEqual([{ sha256: b.sha, bytes: 400 }]);
    expect(await cached(dir)).toEqual([`${a.sha}.tar.gz`, `${c.sha}.tar.gz`].sort());
    const unpin = store.pin(a.sha);
    await delay(20);
    await put(store, d);
    expect(await cached(dir)).toEqual([`${a.sha}.tar.gz`, `${d.sha}.tar.gz`].sort());
    unpin();
    const big = { data: Buffer.alloc(5000, 9), sha: '' };
    big.sha = createHash('sha256').update(big.data).digest('hex');
    await put(store, big);
    expect(await cached(dir)).toEqual([`${big.sha}.tar.gz`]);
    expect(evicted).toEqual([b.sha, c.sha, a.sha, d.sha]);
  });
});

describe('sha256File', () => {
  // Streaming hash matches the one-shot digest.
  it('hashes a file', async () => {
    const file = join(base, 'f');
    const data = randomBytes(300_000);
    await writeFile(file, data);
    expect(await sha256File(file)).toBe(createHash('sha256').update(data).digest('hex'));
  });
});
