/**
 * Gets a package action's archive into a fresh install folder, using what a `package.prefetch` prepared when there
 * is something: the archive verified in the cache, and one copy unpacked into a staging folder. A rolling step's
 * later targets then find their package ready when their lease comes, instead of spending their slot on the
 * transfer and the unpacking.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_MAX_UNPACKED_BYTES } from '#shared/packages/archive.js';
import type { PackageRef } from '#shared/protocol/index.js';
import type { AgentLogger } from '../logger.js';
import { extractPackage, installStaged, type PackageStore, stagePackage, STAGING_PREFIX } from './package-store.js';

/** A copy unpacked ahead that no lease claimed within this time is deleted (the deployment ended or went elsewhere). */
const STAGED_TTL_MS = 15 * 60_000;

export class PackageInstaller {
  /** One copy unpacked ahead per package version, claimed by the first lease that installs it. */
  private staged = new Map<string, { staging: Promise<string | null>; timer: NodeJS.Timeout }>();
  /** The start-up sweep: nothing is staged before it is over, or it could delete a staging folder in use. */
  private swept: Promise<void> = Promise.resolve();
  /** The server's bound on a package's unpacked size (its welcome says); unpacking stops past it. */
  maxUnpackedBytes = DEFAULT_MAX_UNPACKED_BYTES;

  constructor(
    private readonly store: PackageStore,
    private readonly workDir: string,
    private readonly download: (sha256: string, dest: string, prefetch?: boolean) => Promise<void | string>,
    private readonly log: AgentLogger,
    /** false (the hollow runner): a prefetch downloads and verifies, and unpacks nothing ahead. */
    private readonly unpack = true,
  ) {}

  /** Staging folders left by an agent that stopped before a lease claimed them: nothing will ever use them. */
  sweep(): Promise<void> {
    this.swept = this.removeLeftovers().catch(
      (e: Error) => void this.log.warn('could not sweep staging folders', { error: e.message }),
    );
    return this.swept;
  }

  private async removeLeftovers(): Promise<void> {
    const packages = await readdir(this.workDir, { withFileTypes: true }).catch(() => []);
    for (const p of packages) {
      if (!p.isDirectory()) continue;
      const inside = await readdir(join(this.workDir, p.name)).catch(() => []);
      for (const f of inside)
        if (f.startsWith(STAGING_PREFIX)) await rm(join(this.workDir, p.name, f), { recursive: true, force: true });
    }
  }

  /** Downloads, verifies and unpacks ahead, in the background; a failure is only logged (the action retries). */
  prefetch(packages: PackageRef[]): void {
    for (const p of packages) {
      const key = keyOf(p);
      if (this.staged.has(key)) continue;
      // Pinned from the download to the end of unpacking: another download's eviction must not take it meanwhile.
      const unpin = this.store.pin(p.sha256);
      const staging = this.swept
        .then(() => this.store.ensure(p, (dest) => this.download(p.sha256, dest, true)))
        .then((got) => (this.unpack ? stagePackage(got.path, this.workDir, p.packageId, this.maxUnpackedBytes) : null))
        .finally(unpin)
        .catch((e: Error) => {
          this.log.warn('package prefetch failed; the action will fetch it again', {
            packageId: p.packageId,
            version: p.version,
            error: e.message,
          });
          if (this.staged.get(key)?.staging === staging) this.forget(key);
          return null;
        });
      const timer = setTimeout(() => void this.discard(key), STAGED_TTL_MS);
      timer.unref?.();
      this.staged.set(key, { staging, timer });
    }
  }

  /** Whether the archive is in the cache already (for the lease's log). */
  cached(p: PackageRef): Promise<string | null> {
    return this.store.has(p.sha256);
  }

  /**
   * The archive in the cache: joins a prefetch's transfer if one is under way, downloads it otherwise. The caller
   * holds the pin (see PackageStore.pin) until it has unpacked the archive.
   */
  ensure(p: PackageRef) {
    return this.store.ensure(p, (dest) => this.download(p.sha256, dest));
  }

  pin(p: PackageRef): () => void {
    return this.store.pin(p.sha256);
  }

  /** A new install folder for the package: the copy unpacked ahead if there is one, else unpacked now. */
  async install(archive: string, p: PackageRef): Promise<{ dir: string; ahead: boolean }> {
    await this.swept;
    const s = this.staged.get(keyOf(p));
    if (s) {
      this.forget(keyOf(p));
      const staging = await s.staging;
      if (staging) return { dir: await installStaged(staging, this.workDir, p.packageId, p.version), ahead: true };
    }
    return {
      dir: await extractPackage(archive, this.workDir, p.packageId, p.version, this.maxUnpackedBytes),
      ahead: false,
    };
  }

  /** Deletes every copy unpacked ahead (the agent is stopping). */
  async stop(): Promise<void> {
    await Promise.all([...this.staged.keys()].map((k) => this.discard(k)));
  }

  private forget(key: string) {
    const s = this.staged.get(key);
    if (s) clearTimeout(s.timer);
    this.staged.delete(key);
  }

  private async discard(key: string) {
    const s = this.staged.get(key);
    if (!s) return;
    this.forget(key);
    const staging = await s.staging;
    if (staging) await rm(staging, { recursive: true, force: true });
  }
}

const keyOf = (p: PackageRef) => `${p.packageId}@${p.version}@${p.sha256}`;
