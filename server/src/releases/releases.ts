import { ApiProperty, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import { BadRequestException, Body, Controller, Get, HttpCode, Injectable, Module, NotFoundException, Param, Post, Query } from '@nestjs/common';
import { InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import { IsNotEmpty, IsObject, IsOptional, IsString, Matches, MaxLength } from 'class-validator';
import { Repository, type EntityManager } from 'typeorm';
import { conflict, idOf } from '../common/http.js';
import { IsStringRecord } from '../common/validation.js';
import { PackagesModule, PackagesService } from '../packages/packages.js';
import { maskVariables, ProjectsModule, ProjectsService } from '../projects/projects.js';
import { ReleaseEntity, type ReleasePackage } from './release.entity.js';

/** Packages a release may name: far beyond any real process (each needs its own package action). */
const MAX_RELEASE_PACKAGES = 1_000;

export class CreateReleaseDto {
  @ApiProperty({ type: String })
  @IsString() @IsNotEmpty() @MaxLength(200) projectId: string;
  @ApiProperty({ type: String })
  @IsString() @Matches(/^[A-Za-z0-9][A-Za-z0-9.+_-]{0,99}$/, { message: 'version must be letters, digits, ".", "+", "_" or "-" (at most 100)' }) version: string;
  @ApiPropertyOptional({ type: String })
  @IsOptional() @IsString() @MaxLength(100) channelId?: string;
  @ApiPropertyOptional({ type: 'object', additionalProperties: true })
  @IsOptional()
  @IsObject({ message: 'packages must be an object like {"web": "1.0.0"}' })
  @IsStringRecord({ maxKeys: MAX_RELEASE_PACKAGES, maxValueLength: 100 })
  packages?: Record<string, string>;
}

export const toReleaseDto = (r: ReleaseEntity) => ({
  id: r.id,
  projectId: r.projectId,
  channelId: r.channelId,
  version: r.version,
  processVersion: r.processVersion,
  steps: r.process,
  packages: r.packages,
  variables: maskVariables(r.variables),
  defaultTimeoutSeconds: r.defaultTimeoutSeconds,
  createdAt: r.createdAt,
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
      throw new BadRequestException(`projectId names an unknown project "${dto.projectId}"`);
    });
    const channel = dto.channelId ? await this.projects.getChannel(project.id, dto.channelId) : { id: project.defaultChannelId! };
    if (await this.repo.exists({ where: { projectId: project.id, version: dto.version } })) conflict(`project ${project.name} already has a release ${dto.version}`);
    const steps = project.processSteps;
    const wanted = new Set(steps.flatMap((s) => s.actions.filter((a) => a.type === 'package' && a.packageId).map((a) => a.packageId!)));
    for (const [id, v] of Object.entries(dto.packages ?? {})) {
      if (typeof v !== 'string' || !v) throw new BadRequestException(`packages.${id} must be a version string`);
      if (!wanted.has(id)) throw new BadRequestException(`packages.${id}: no action of the process deploys package "${id}"`);
    }
    const packages: ReleasePackage[] = [];
    for (const id of wanted) {
      const version = dto.packages?.[id];
      const pkg = await this.packages.resolve(id, version);
      if (!pkg) throw new BadRequestException(version ? `packages.${id}: version ${version} is not in the feed` : `packages.${id}: no version of package "${id}" is in the feed; upload one first`);
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
    if (!r) throw new NotFoundException(`release ${id} not found`);
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

@ApiTags('releases')
@Controller('api/releases')
export class ReleasesController {
  constructor(private readonly releases: ReleasesService) {}

  @Post()
  @HttpCode(201)
  async create(@Body() dto: CreateReleaseDto) {
    return toReleaseDto(await this.releases.create(dto));
  }

  @Get()
  async list(@Query('projectId') projectId?: string) {
    return (await this.releases.list(projectId)).map(toReleaseDto);
  }

  @Get(':id')
  async get(@Param('id', idOf('release')) id: string) {
    return toReleaseDto(await this.releases.get(id));
  }
}

@Module({
  imports: [TypeOrmModule.forFeature([ReleaseEntity]), ProjectsModule, PackagesModule],
  providers: [ReleasesService],
  controllers: [ReleasesController],
  exports: [ReleasesService],
})
export class ReleasesModule {}
