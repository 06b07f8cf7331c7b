import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, rmdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { ArchiveVetting } from '#shared/packages/archive.js';
import { markInstalled } from './retention.js';

/** The downloaded bytes are not the package the server described (sha256 or size differ). */
export class PackageVerificationError extends Error {
  override name = 'PackageVerificationError';
}

/** An archive entry would land outside the install folder, or is something other than a file, folder or safe symlink. */
export class UnsafePackageError extends Error {
  override name = 'UnsafePackageError';
}

const SHA256_RE = /^[0-9a-f]{64}$/;

/** The package cache's default bound (`--cache-mb`). */
export const DEFAULT_CACHE_MB = 2048;

export interface EnsureResult {
  path: string;
  downloaded: boolean;
  bytes: number;
  /** Archives evicted from the cache to make room for this one (least recently used first). */
  evicted?: Array<{ sha256: string; bytes: number }>;
}

/**
 * Content-addressed cache of package archives: `<cacheDir>/<sha256>.tar.gz`, plus a `<sha256>.tar.gz.ok` marker
 * written only after the bytes were verified, so a later `has()` need not re-hash. Bounded: after a download, the
 * least recently used archives (by modification time, renewed at every use) go until the cache fits `maxBytes`;
 * never one pinned (being unpacked) or being downloaded. The archive just downloaded stays even if it alone is
 * larger than the bound.
 */
export class PackageStore {
  /** In-flight downloads by sha256: concurrent deployments of one package share one transfer. */
  private readonly inflight = new Map<string, Promise<EnsureResult>>();
  /** Archives in use (between ensure and the end of unpacking), with a count of users. */
  private readonly pinned = new Map<string, number>();

  constructor(
    private readonly cacheDir: string,
    private readonly opts: {
      maxBytes?: number;
      onEvict?: (e: { sha256: string; bytes: number }) => void;
    } = {},
  ) {}

  /** Keeps the archive from eviction until the returned function is called. */
  pin(sha256: string): () => void {
    const sha = sha256.toLowerCase();
    this.pinned.set(sha, (this.pinned.get(sha) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.pinned.get(sha) ?? 1) - 1;
      if (n > 0) this.pinned.set(sha, n);
      else this.pinned.delete(sha);
    };
  }

  /** Evicts least recently used archives until the cache fits its bound; returns what went. */
  async trim(keep?: string): Promise<Array<{ sha256: string; bytes: number }>> {
    const max = this.opts.maxBytes;
    if (max === undefined) return [];
    const names = await readdir(this.cacheDir).catch(() => [] as string[]);
    const archives: Array<{ sha256: string; bytes: number; usedAt: number }> = [];
    let total = 0;
    for (const n of names) {
      const m = /^([0-9a-f]{64})\.tar\.gz$/.exec(n);
      if (!m) continue;
      const st = await stat(join(this.cacheDir, n)).catch(() => null);
      if (!st?.isFile()) continue;
      archives.push({ sha256: m[1], bytes: st.size, usedAt: st.mtimeMs });
      total += st.size;
    }
    archives.sort((a, b) => a.usedAt - b.usedAt);
    const evicted: Array<{ sha256: string; bytes: number }> = [];
    for (const a of archives) {
      if (total <= max) break;
      if (a.sha256 === keep || this.pinned.has(a.sha256) || this.inflight.has(a.sha256)) continue;
      await rm(`${this.pathFor(a.sha256)}.ok`, { force: true });
      await rm(this.pathFor(a.sha256), { force: true });
      total -= a.bytes;
      evicted.push({ sha256: a.sha256, bytes: a.bytes });
      this.opts.onEvict?.({ sha256: a.sha256, bytes: a.bytes });
    }
    return evicted;
  }

  /** Path of the cached archive if present and verified, else null. */
  async has(sha256: string): Promise<string | null> {
    const sha = normalizeSha(sha256);
    const path = this.pathFor(sha);
    const size = await fileSize(path);
    if (size === null) return null;

    // The marker records the verified size: a cheap stat catches truncation without re-hashing.
    const marker = await readFile(`${path}.ok`, 'utf8').catch(() => null);
    if (marker !== null && marker.trim() === `${sha} ${size}`) return this.used(path);

    // No (valid) marker: a crash between rename and marker write, or tampering. Re-hash once and decide.
    if ((await sha256File(path)) === sha) {
      await this.writeMarker(sha, size);
      return this.used(path);
    }
    await rm(path, { force: true });
    await rm(`${path}.ok`, { force: true });
    return null;
  }

  /**
   * Ensures the package is in the cache. `download(dest)` runs only when it is absent and must write the archive
   * at `dest` (and may return the sha256 of the bytes it wrote); the result is verified against sha256 and
   * sizeBytes before it becomes visible under its final name.
   */
  ensure(
    p: { sha256: string; sizeBytes: number },
    download: (dest: string) => Promise<void | string>,
  ): Promise<EnsureResult> {
    let sha: string;
    try {
      sha = normalizeSha(p.sha256);
      if (!Number.isSafeInteger(p.sizeBytes) || p.sizeBytes < 0)
        throw new TypeError(`invalid sizeBytes: ${p.sizeBytes}`);
    } catch (err) {
      return Promise.reject(err);
    }
    const running = this.inflight.get(sha);
    if (running) return running;
    const job = this.fetchAndVerify(sha, p.sizeBytes, download).finally(() => this.inflight.delete(sha));
    this.inflight.set(sha, job);
    return job;
  }

  private async fetchAndVerify(
    sha: string,
    sizeBytes: number,
    download: (dest: string) => Promise<void | string>,
  ): Promise<EnsureResult> {
    await mkdir(this.cacheDir, { recursive: true, mode: 0o700 });
    const cached = await this.has(sha);
    if (cached) return { path: cached, downloaded: false, bytes: (await fileSize(cached)) ?? 0 };

    // A temp name in the same folder keeps the final rename atomic (same file system) and never exposes a partial
    // or unverified file under the content-addressed name.
    const temp = join(this.cacheDir, `.download-${sha}-${randomBytes(6).toString('hex')}`);
    try {
      const hashed = await download(temp);
      const size = await fileSize(temp);
      if (size === null) throw new PackageVerificationError(`download of ${sha} did not produce a file`);
      if (size !== sizeBytes) {
        throw new PackageVerificationError(`package ${sha}: size mismatch, expected ${sizeBytes} bytes, got ${size}`);
      }
      // The download may hash the bytes as it writes them (one pass over 50 MB instead of two).
      const actual = typeof hashed === 'string' ? hashed : await sha256File(temp);
      if (actual !== sha) throw new PackageVerificationError(`sha256 mismatch: expected ${sha}, got ${actual}`);
      const path = this.pathFor(sha);
      await rename(temp, path);
      await this.writeMarker(sha, size);
      const evicted = await this.trim(sha);
      return { path, downloaded: true, bytes: size, ...(evicted.length ? { evicted } : {}) };
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
  }

  /** Least recently used is by modification time: a use renews it (best effort; a failure only skews the order). */
  private async used(path: string): Promise<string> {
    const now = new Date();
    await utimes(path, now, now).catch(() => undefined);
    return path;
  }

  private pathFor(sha: string): string {
    return join(this.cacheDir, `${sha}.tar.gz`);
  }

  private async writeMarker(sha: string, size: number): Promise<void> {
    // Write-then-rename so a crash never leaves a half-written marker that could be mistaken for a valid one.
    const marker = `${this.pathFor(sha)}.ok`;
    const temp = `${marker}.${randomBytes(6).toString('hex')}.tmp`;
    await writeFile(temp, `${sha} ${size}\n`, { mode: 0o600 });
    await rename(temp, marker);
  }
}

/** Streaming sha256 of a file, lowercase hex. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/**
 * Extracts a .tar.gz into a new folder `<root>/<packageId>/<version>` (or `<version>_1`, `_2`, ... if taken; a
 * previous install is never overwritten) and returns its absolute path.
 */
export async function extractPackage(
  file: string,
  root: string,
  packageId: string,
  version: string,
  maxUnpackedBytes?: number,
): Promise<string> {
  assertSafeName('version', version);
  return installStaged(await stagePackage(file, root, packageId, maxUnpackedBytes), root, packageId, version);
}

/**
 * Extracts the archive into a new staging folder `<root>/<packageId>/.staging-<random>` and returns that path, in
 * one pass over the archive. Every entry is judged before it is written (see `ArchiveVetting`): nothing can be
 * written outside the staging folder or through a link; symlinks' targets, which depend on links that may come later,
 * are judged once the whole archive is read, before the folder is handed over. Nothing runs from a staging folder: it
 * becomes an install folder only through `installStaged`. On any failure the staging folder is removed.
 */
export async function stagePackage(
  file: string,
  root: string,
  packageId: string,
  maxUnpackedBytes?: number,
): Promise<string> {
  assertSafeName('packageId', packageId);

  const parent = resolve(root, packageId);
  await mkdir(parent, { recursive: true });
  // Exclusive mkdir: two concurrent extractions can never share a staging folder.
  const staging = join(parent, `${STAGING_PREFIX}${randomBytes(8).toString('hex')}`);
  await mkdir(staging, { mode: 0o755 });
  const vetting = new ArchiveVetting(maxUnpackedBytes);
  try {
    await new Promise<void>((done, fail) => {
      // node-tar would read the archive in pieces of up to 16 MiB: a fresh buffer the size of the archive for each
      // package, whose pages the kernel must supply anew. 64 KiB pieces took half the CPU to unpack 1 MiB on the
      // project's VMs (13 → 6 ms; 280 → 25 page faults).
      const input = createReadStream(file, { highWaterMark: 64 * 1024 });
      // Once an entry is refused the package is: nothing more is written, and reading stops too (past the unpacked
      // bound, reading on would decompress up to a thousand times the archive for nothing). The parser, told the
      // input ended early, fails with a truncated archive; the vetting's reason is what is reported.
      let stopping = false;
      const stop = () => {
        if (stopping) return;
        stopping = true;
        setImmediate(() => {
          input.unpipe(unpack);
          input.destroy();
          unpack.end();
        });
      };
      const unpack: tar.Unpack = new tar.Unpack({
        cwd: staging,
        preserveOwner: false, // as root, owners would otherwise come from the archive
        strict: true, // a corrupt header is an error, not a silently skipped entry
        filter: (_path, entry) => {
          const admitted =
            'type' in entry
              ? vetting.admit({ path: entry.path, type: entry.type, linkpath: entry.linkpath, size: entry.size })
              : vetting.refuse('not an archive entry');
          if (!admitted) return (stop(), false);
          // No setuid/setgid/sticky bits from a package: the agent may run as root.
          if (typeof entry.mode === 'number') entry.mode &= 0o777;
          return true;
        },
      });
      const failed = (e: unknown) => {
        input.destroy();
        fail(e);
      };
      unpack.on('error', failed);
      unpack.on('close', () => done());
      input.on('error', failed);
      input.pipe(unpack);
    });
    const unsafe = vetting.verdict();
    if (unsafe) throw new UnsafePackageError(unsafe);
    return staging;
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    // node-tar refuses some hostile entries itself (a link climbing out): the reason we report is ours, naming it.
    const unsafe = vetting.verdict();
    throw unsafe ? new UnsafePackageError(unsafe) : err;
  }
}

/** Moves a staging folder made by `stagePackage` to its install folder (see `extractPackage`) and returns that. */
export async function installStaged(
  staging: string,
  root: string,
  packageId: string,
  version: string,
): Promise<string> {
  try {
    assertSafeName('packageId', packageId);
    assertSafeName('version', version);
    const dir = await claimInstallFolder(staging, resolve(root, packageId), version);
    await markInstalled(dir);
    return dir;
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
}

/** Name prefix of staging folders: never an install folder (versions are checked not to start with a dot). */
export const STAGING_PREFIX = '.staging-';

/** Moves staging to the first free `<version>`, `<version>_1`, ... and returns that path. */
async function claimInstallFolder(staging: string, parent: string, version: string): Promise<string> {
  for (let n = 0; n < 10_000; n++) {
    const candidate = join(parent, n === 0 ? version : `${version}_${n}`);
    // Reserve the name with an exclusive mkdir first: rename(2) would silently replace an *empty* directory, and
    // two agents' extractions racing for the same name must not both win.
    try {
      await mkdir(candidate);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw err;
    }
    try {
      await rename(staging, candidate); // replaces our own empty placeholder atomically
    } catch (err) {
      await rmdir(candidate).catch(() => undefined);
      throw err;
    }
    return candidate;
  }
  throw new Error(`no free install folder for ${version} under ${parent}`);
}

function assertSafeName(what: string, value: string): void {
  // As the server accepts them (a letter or digit first, so never ".", ".." or a staging folder's name).
  if (!/^[A-Za-z0-9][A-Za-z0-9.+_-]{0,199}$/.test(value)) {
    throw new UnsafePackageError(`invalid ${what}: ${JSON.stringify(value)}`);
  }
}

function normalizeSha(sha256: string): string {
  const sha = sha256.toLowerCase();
  if (!SHA256_RE.test(sha)) throw new TypeError(`invalid sha256: ${JSON.stringify(sha256)}`);
  return sha;
}

async function fileSize(path: string): Promise<number | null> {
  try {
    const s = await stat(path);
    return s.isFile() ? s.size : null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}
