/** Releases: a project's process, variables and package versions, frozen under a version number. */
import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository, type EntityManager } from 'typeorm';
import type { Release } from '#shared/api/types.js';
import { alreadyExists, invalid, notFound, unknownReference } from '../common/errors.js';
import { PackagesService } from '../packages/packages.service.js';
import { maskVariables, ProjectsService } from '../projects/projects.service.js';
import type { CreateReleaseDto } from './dto/create-release.dto.js';
import { ReleaseEntity, type ReleasePackage } from './release.entity.js';

export const toReleaseDto = (r: ReleaseEntity): Release => ({
  id: r.id,
  projectId: r.projectId,
  channelId: r.channelId,
  version: r.version,
  processVersion: r.processVersion,
  steps: r.process,
  packages: r.packages,
  variables: maskVariables(r.variables),
  defaultTimeoutSeconds: r.defaultTimeoutSeconds,
  createdAt: r.createdAt.toISOString(),
});

@Injectable()
export class ReleasesService {
  constructor(
    @InjectRepository(ReleaseEntity) private readonly repo: Repository<ReleaseEntity>,
    private readonly projects: ProjectsService,
    private readonly packages: PackagesService,
  ) {}

  /** Freezes the project's current process, variables and package versions. */
  async create(dto: CreateReleaseDto) {
    const project = await this.projects.get(dto.projectId).catch(() => {
      throw unknownReference(`projectId names an unknown project "${dto.projectId}"`);
    });
    const channel = dto.channelId
      ? await this.projects.getChannel(project.id, dto.channelId)
      : { id: project.defaultChannelId! };
    if (await this.repo.exists({ where: { projectId: project.id, version: dto.version } }))
      throw alreadyExists(`project ${project.name} already has a release ${dto.version}`);
    const steps = project.processSteps;
    const wanted = new Set(
      steps.flatMap((s) => s.actions.filter((a) => a.type === 'package' && a.packageId).map((a) => a.packageId!)),
    );
    for (const [id, v] of Object.entries(dto.packages ?? {})) {
      if (typeof v !== 'string' || !v) throw invalid(`packages.${id} must be a version string`);
      if (!wanted.has(id)) throw unknownReference(`packages.${id}: no action of the process deploys package "${id}"`);
    }
    const packages: ReleasePackage[] = [];
    for (const id of wanted) {
      const version = dto.packages?.[id];
      const pkg = await this.packages.resolve(id, version);
      if (!pkg)
        throw unknownReference(
          version
            ? `packages.${id}: version ${version} is not in the feed`
            : `packages.${id}: no version of package "${id}" is in the feed; upload one first`,
        );
      packages.push({ packageId: pkg.packageId, version: pkg.version, sha256: pkg.sha256, sizeBytes: pkg.sizeBytes });
    }
    return this.repo.save(
      this.repo.create({
        projectId: project.id,
        channelId: channel.id,
        version: dto.version,
        processVersion: project.processVersion,
        process: steps,
        variables: project.variables,
        defaultTimeoutSeconds: project.defaultTimeoutSeconds,
        packages,
      }),
    );
  }

  /** `tx`: read in the caller's transaction. */
  async get(id: string, tx?: EntityManager) {
    const r = await (tx ? tx.getRepository(ReleaseEntity) : this.repo).findOne({ where: { id } });
    if (!r) throw notFound(`release ${id} not found`);
    return r;
  }

  async list(projectId?: string) {
    if (!projectId) return this.repo.find({ order: { createdAt: 'DESC' }, take: 500 });
    const project = await this.projects.get(projectId);
    return this.repo.find({ where: { projectId: project.id }, order: { createdAt: 'DESC' } });
  }

  async findByVersion(projectId: string, version: string) {
    return this.repo.findOne({ where: { projectId, version } });
  }
}
