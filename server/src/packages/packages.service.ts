/**
 * The package feed: uploads (streamed to disk while hashed, checked as the agent would check them, stored by sha256
 * so the same bytes under two versions are kept once) and the versions in the feed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Inject, Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import type { Request } from 'express';
import * as tar from 'tar';
import semver from 'semver';
import { Repository } from 'typeorm';
import type { Package } from '#shared/api/types.js';
import { ArchiveVetting } from '#shared/packages/archive.js';
import { alreadyExists, DomainError, invalid } from '../common/errors.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { PackageEntity } from './package.entity.js';
import { PackageFiles } from './package-files.js';

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9.+_-]{0,99}$/;

export const toPackageDto = (p: PackageEntity): Package => ({
  packageId: p.packageId,
  version: p.version,
  sha256: p.sha256,
  sizeBytes: Number(p.sizeBytes),
  createdAt: p.createdAt.toISOString(),
});

/**
 * Orders versions by semver (build metadata and a leading "v" understood; "2" or "1.4" read as 2.0.0 and 1.4.0), then,
 * for versions semver cannot read or ranks equal, as text with numbers compared as numbers (1.10 after 1.9).
 */
export function compareVersions(a: string, b: string): number {
  const read = (v: string) => semver.parse(v, { loose: true }) ?? semver.coerce(v, { includePrerelease: true });
  const [pa, pb] = [read(a), read(b)];
  const bySemver = pa && pb ? semver.compare(pa, pb) : 0;
  return bySemver || a.localeCompare(b, 'en', { numeric: true });
}

class TooLarge extends Error {}
const tooLarge = (max: number) =>
  new DomainError('payload_too_large', `package is larger than the limit of ${max} bytes`);

@Injectable()
export class PackagesService {
  /** This service's log lines carry `context: 'packages'`. */
  private readonly log: Logger;

  constructor(
    @InjectRepository(PackageEntity) private readonly repo: Repository<PackageEntity>,
    private readonly files: PackageFiles,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'packages' });
  }

  /**
   * Streams an upload to disk while hashing it, refuses what is too large, not gzip, or holds entries that would
   * escape their folder, then stores it under its sha256. Nothing is kept of a refused upload.
   */
  async upload(packageId: string, version: string, req: Request) {
    if (!ID_RE.test(packageId)) throw invalid('packageId must be letters, digits, ".", "_" or "-" (at most 200)');
    if (!VERSION_RE.test(version)) throw invalid('version must be letters, digits, ".", "+", "_" or "-" (at most 100)');
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim();
    if (
      !['application/gzip', 'application/x-gzip', 'application/octet-stream', 'application/x-tar+gzip'].includes(type)
    )
      throw new DomainError(
        'unsupported_media_type',
        'Content-Type must be application/gzip (the raw .tar.gz as body)',
      );
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > this.config.maxPackageBytes) throw tooLarge(this.config.maxPackageBytes);
    if (await this.repo.exists({ where: { packageId, version } }))
      throw alreadyExists(`package ${packageId} ${version} already exists`);

    const tmp = join(this.files.dir, 'incoming', `${randomBytes(8).toString('hex')}.part`);
    const hash = createHash('sha256');
    let size = 0;
    const max = this.config.maxPackageBytes;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        size += chunk.length;
        if (size > max) return cb(new TooLarge());
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(req, meter, createWriteStream(tmp, { highWaterMark: 1 << 20 })); // large writes: see the agent's download
      if (size === 0) throw new DomainError('package_refused', 'body must be the package (.tar.gz); it is empty');
      const sha256 = hash.digest('hex');
      const expected = String(req.headers['x-checksum-sha256'] ?? '').toLowerCase();
      if (expected && expected !== sha256)
        throw new DomainError(
          'checksum_mismatch',
          `X-Checksum-Sha256 is ${expected} but the body's sha256 is ${sha256}: the upload was damaged or is not the package meant`,
        );
      await this.checkArchive(tmp);
      if (!this.files.has(sha256)) await rename(tmp, this.files.pathOf(sha256));
      else await rm(tmp, { force: true });
      const row = await this.repo.save(this.repo.create({ packageId, version, sha256, sizeBytes: size }));
      this.log.info('package uploaded', { packageId, version, sha256, sizeBytes: size });
      return row;
    } catch (e) {
      await rm(tmp, { force: true });
      if (e instanceof TooLarge) throw tooLarge(max);
      throw e;
    }
  }

  /**
   * Refuses archives that are not gzip'd tar, or that the agent would refuse to unpack: the same judgement
   * (`ArchiveVetting`: entry types, paths escaping the folder directly or through links, name and path lengths,
   * entry count and the unpacked size bound), so that a bad package is a 400 here, not a failed target later.
   */
  private async checkArchive(file: string) {
    const vetting = new ArchiveVetting(this.config.maxUnpackedBytes);
    try {
      await new Promise<void>((done, fail) => {
        const input = createReadStream(file, { highWaterMark: 64 * 1024 });
        const parser: tar.Parser = new tar.Parser({
          strict: true,
          onReadEntry: (e) => {
            e.resume();
            // The first problem decides: stop reading (past the unpacked bound, reading on would decompress up to a
            // thousand times the upload for nothing).
            if (!vetting.admit({ path: e.path, type: e.type, linkpath: e.linkpath, size: e.size })) {
              input.destroy();
              done();
            }
          },
        });
        const failed = (e: unknown) => {
          input.destroy();
          fail(e);
        };
        input.on('error', failed);
        parser.on('error', failed);
        parser.on('end', () => done());
        input.pipe(parser);
      });
    } catch (e) {
      if (!vetting.verdict())
        throw new DomainError('package_refused', `body is not a valid .tar.gz: ${(e as Error).message}`);
    }
    const problem = vetting.verdict();
    if (problem) throw new DomainError('package_refused', `package refused: ${problem}`);
  }

  list() {
    return this.repo.find({ order: { packageId: 'ASC', createdAt: 'DESC' } });
  }

  /** The given version, or the newest in the feed. */
  async resolve(packageId: string, version?: string): Promise<PackageEntity | null> {
    if (version) return this.repo.findOne({ where: { packageId, version } });
    const all = await this.repo.find({ where: { packageId } });
    return all.sort((a, b) => compareVersions(b.version, a.version))[0] ?? null;
  }

  async sizeOnDisk(sha256: string) {
    return (await stat(this.files.pathOf(sha256))).size;
  }
}
