import { ApiBody, ApiOperation, ApiProperty, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import { z } from 'zod';
import { BadRequestException, Body, Controller, Get, HttpCode, Injectable, Module, NotFoundException, Param, Patch, Post, Put } from '@nestjs/common';
import { InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import { IsBoolean, IsDefined, IsInt, IsNotEmpty, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';
import { Repository } from 'typeorm';
import { ProcessStepsSchema, validateSteps } from '#shared/process/index.js';
import { MASK, validateVariables, VariableSchema, type VariableDef } from '#shared/variables/index.js';
import { conflict, isUuid } from '../common/http.js';
import { returned } from '../database/sql.js';
import { ChannelEntity, ProjectEntity } from './project.entity.js';

export class CreateProjectDto {
  @ApiProperty({ type: String })
  @IsString() @IsNotEmpty() @MaxLength(100) name: string;
  @ApiPropertyOptional({ type: String })
  @IsOptional() @IsString() @MaxLength(2000) description?: string;
  @ApiPropertyOptional({ type: Number })
  @IsOptional() @IsInt() @Min(1) @Max(7 * 86400) defaultTimeoutSeconds?: number;
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional() @IsBoolean() allowConcurrentOnMachines?: boolean;
}

export class UpdateProjectDto {
  @ApiPropertyOptional({ type: String })
  @IsOptional() @IsString() @IsNotEmpty() @MaxLength(100) name?: string;
  @ApiPropertyOptional({ type: String })
  @IsOptional() @IsString() @MaxLength(2000) description?: string;
  /** null removes the default. */
  @ApiPropertyOptional({ type: Number })
  @IsOptional() @IsInt() @Min(1) @Max(7 * 86400) defaultTimeoutSeconds?: number | null;
  /** Let this project's deployments run on machines busy with another deployment (off by default). */
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional() @IsBoolean() allowConcurrentOnMachines?: boolean;
}

export class PutVariablesDto {
  /** Validated by the shared variables model, which names the offending field (variables[2].name ...). */
  @ApiProperty({ type: 'object', additionalProperties: true })
  @IsDefined({ message: 'variables must be a list of variables' }) variables: unknown;
  @ApiPropertyOptional({ type: Number })
  @IsOptional() @IsInt() @Min(0) version?: number;
}

export class PutProcessDto {
  @ApiProperty({ type: Number })
  @IsInt({ message: 'version must be the version you edited (an integer)' }) @Min(0) version: number;
  /** Validated by the shared process model, which names the offending field (steps[1].windowSize ...). */
  @ApiProperty({ type: 'object', additionalProperties: true })
  @IsDefined({ message: 'steps must be a list of steps' }) steps: unknown;
}

export class CreateChannelDto {
  @ApiProperty({ type: String })
  @IsString() @IsNotEmpty() @MaxLength(100) name: string;
}

/** The OpenAPI schemas of the bodies the shared model validates, derived from that model (one definition). */
const STEPS_SCHEMA = z.toJSONSchema(ProcessStepsSchema, { unrepresentable: 'any', io: 'input' }) as Record<string, unknown>;
const VARIABLES_SCHEMA = z.toJSONSchema(z.array(VariableSchema), { unrepresentable: 'any', io: 'input' }) as Record<string, unknown>;
delete STEPS_SCHEMA.$schema;
delete VARIABLES_SCHEMA.$schema;

const slugify = (name: string) =>
  name
    .toLowerCase()
    .normalize('NFKD')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '') || 'project';

export const toProjectDto = (p: ProjectEntity) => ({
  id: p.id,
  name: p.name,
  slug: p.slug,
  description: p.description,
  defaultChannelId: p.defaultChannelId,
  defaultTimeoutSeconds: p.defaultTimeoutSeconds,
  allowConcurrentOnMachines: p.allowConcurrentOnMachines,
  createdAt: p.createdAt,
});

/** Sensitive values never leave the server through the API. */
export const maskVariables = (vars: VariableDef[]) => vars.map((v) => (v.sensitive ? { ...v, value: MASK } : v));
/** A variable's name and scope as one key: a sensitive value sent back masked keeps the value stored under it. */
const scopedKey = (v: VariableDef) => JSON.stringify([v.name, v.scope ?? {}]);
export const toChannelDto = (c: ChannelEntity) => ({ id: c.id, name: c.name, projectId: c.projectId });

@Injectable()
export class ProjectsService {
  constructor(
    @InjectRepository(ProjectEntity) private readonly repo: Repository<ProjectEntity>,
    @InjectRepository(ChannelEntity) private readonly channels: Repository<ChannelEntity>,
  ) {}

  async create(dto: CreateProjectDto) {
    const name = dto.name.trim();
    if (await this.repo.exists({ where: { name } })) conflict(`a project named "${name}" already exists`);
    let slug = slugify(name);
    for (let i = 2; await this.repo.exists({ where: { slug } }); i++) slug = `${slugify(name)}-${i}`;
    return this.repo.manager.transaction(async (m) => {
      const project = await m.save(
        m.create(ProjectEntity, { name, slug, description: dto.description ?? null, processSteps: [], processVersion: 1, variables: [], defaultTimeoutSeconds: dto.defaultTimeoutSeconds ?? null, allowConcurrentOnMachines: dto.allowConcurrentOnMachines ?? false }),
      );
      const channel = await m.save(m.create(ChannelEntity, { projectId: project.id, name: 'Default' }));
      project.defaultChannelId = channel.id;
      return m.save(project);
    });
  }

  list() {
    return this.repo.find({ order: { name: 'ASC' } });
  }

  /** By id, slug or name: the CLI and scripts may use any. */
  async get(ref: string) {
    const p = await this.repo.findOne({ where: isUuid(ref) ? { id: ref.toLowerCase() } : [{ slug: ref }, { name: ref }] });
    if (!p) throw new NotFoundException(`project ${ref} not found`);
    return p;
  }

  async update(id: string, dto: UpdateProjectDto) {
    const p = await this.get(id);
    // `null` passes @IsOptional: only a string renames (a name cannot be removed).
    if (typeof dto.name === 'string' && dto.name.trim() !== p.name) {
      if (await this.repo.exists({ where: { name: dto.name.trim() } })) conflict(`a project named "${dto.name.trim()}" already exists`);
      p.name = dto.name.trim();
    }
    if (dto.description !== undefined) p.description = dto.description;
    if (dto.defaultTimeoutSeconds !== undefined) p.defaultTimeoutSeconds = dto.defaultTimeoutSeconds;
    if (typeof dto.allowConcurrentOnMachines === 'boolean') p.allowConcurrentOnMachines = dto.allowConcurrentOnMachines;
    return this.repo.save(p);
  }

  async getVariables(id: string) {
    const p = await this.get(id);
    return { projectId: p.id, version: p.variablesVersion, variables: maskVariables(p.variables) };
  }

  /**
   * Replaces the project's variables. A sensitive variable sent back with the mask as its value keeps its stored
   * value, so that a client can GET, edit other variables and PUT without ever knowing the secret.
   */
  async putVariables(id: string, dto: PutVariablesDto) {
    const v = validateVariables(dto.variables);
    if (!v.ok) throw new BadRequestException(v.messages);
    const p = await this.get(id);
    // Stored secrets by name and scope, looked up once per variable: linear in the number of variables.
    const secrets = new Map<string, string>();
    for (const o of p.variables) if (o.sensitive && !secrets.has(scopedKey(o))) secrets.set(scopedKey(o), o.value);
    const vars = v.value.map((nv) => {
      if (!nv.sensitive || nv.value !== MASK) return nv;
      const old = secrets.get(scopedKey(nv));
      return old !== undefined ? { ...nv, value: old } : nv;
    });
    const [row] = returned<{ variables_version: number }>(
      await this.repo.query(
        `UPDATE projects SET variables = $1::jsonb, variables_version = variables_version + 1 WHERE id = $2 ${typeof dto.version === 'number' ? 'AND variables_version = $3' : ''} RETURNING variables_version`,
        typeof dto.version === 'number' ? [JSON.stringify(vars), p.id, dto.version] : [JSON.stringify(vars), p.id],
      ),
    );
    if (!row) conflict(`the variables were changed by someone else: version ${dto.version} is stale (current is ${p.variablesVersion})`);
    return { projectId: p.id, version: row.variables_version, variables: maskVariables(vars) };
  }

  async getProcess(id: string) {
    const p = await this.get(id);
    return { projectId: p.id, version: p.processVersion, steps: p.processSteps };
  }

  /** Replaces the process if `version` is the current one (optimistic concurrency); answers with version + 1. */
  async putProcess(id: string, dto: PutProcessDto) {
    const v = validateSteps(dto.steps);
    if (!v.ok) throw new BadRequestException(v.messages);
    const project = await this.get(id);
    const channels = await this.channels.find({ where: { projectId: project.id } });
    v.value.forEach((s, si) =>
      s.actions.forEach((a, ai) =>
        (a.channelIds ?? []).forEach((c) => {
          if (!channels.some((ch) => ch.id === c)) throw new BadRequestException(`steps[${si}].actions[${ai}].channelIds names an unknown channel "${c}"`);
        }),
      ),
    );
    const [row] = returned<{ process_version: number }>(
      await this.repo.query(`UPDATE projects SET process_steps = $1::jsonb, process_version = process_version + 1 WHERE id = $2 AND process_version = $3 RETURNING process_version`, [
        JSON.stringify(v.value),
        project.id,
        dto.version,
      ]),
    );
    if (!row) conflict(`the deployment process was changed by someone else: version ${dto.version} is stale (current is ${project.processVersion}); reload and apply your change again`);
    return { projectId: project.id, version: row.process_version, steps: v.value };
  }

  async createChannel(projectId: string, dto: CreateChannelDto) {
    const project = await this.get(projectId);
    const name = dto.name.trim();
    if (await this.channels.exists({ where: { projectId: project.id, name } })) conflict(`project ${project.name} already has a channel named "${name}"`);
    return this.channels.save(this.channels.create({ projectId: project.id, name }));
  }

  async listChannels(projectId: string) {
    const project = await this.get(projectId);
    return this.channels.find({ where: { projectId: project.id }, order: { createdAt: 'ASC' } });
  }

  async getChannel(projectId: string, ref: string) {
    const c = await this.channels.findOne({ where: isUuid(ref) ? { projectId, id: ref.toLowerCase() } : { projectId, name: ref } });
    if (!c) throw new BadRequestException(`channelId: project has no channel "${ref}"`);
    return c;
  }
}

@ApiTags('projects')
@Controller('api/projects')
export class ProjectsController {
  constructor(private readonly projects: ProjectsService) {}

  @Post()
  @HttpCode(201)
  async create(@Body() dto: CreateProjectDto) {
    return toProjectDto(await this.projects.create(dto));
  }

  @Get()
  async list() {
    return (await this.projects.list()).map(toProjectDto);
  }

  @Get(':id')
  async get(@Param('id') id: string) {
    return toProjectDto(await this.projects.get(id));
  }

  @Patch(':id')
  async update(@Param('id') id: string, @Body() dto: UpdateProjectDto) {
    return toProjectDto(await this.projects.update(id, dto));
  }

  @Get(':id/variables')
  getVariables(@Param('id') id: string) {
    return this.projects.getVariables(id);
  }

  @Put(':id/variables')
  @ApiBody({ schema: { type: 'object', required: ['variables'], properties: { variables: VARIABLES_SCHEMA, version: { type: 'integer' } } } })
  putVariables(@Param('id') id: string, @Body() dto: PutVariablesDto) {
    return this.projects.putVariables(id, dto);
  }

  @Get(':id/deployment-process')
  getProcess(@Param('id') id: string) {
    return this.projects.getProcess(id);
  }

  @Put(':id/deployment-process')
  @ApiOperation({ summary: 'Replace the deployment process (optimistic concurrency on version)' })
  @ApiBody({ schema: { type: 'object', required: ['version', 'steps'], properties: { version: { type: 'integer' }, steps: STEPS_SCHEMA } } })
  putProcess(@Param('id') id: string, @Body() dto: PutProcessDto) {
    return this.projects.putProcess(id, dto);
  }

  @Post(':id/channels')
  @HttpCode(201)
  async createChannel(@Param('id') id: string, @Body() dto: CreateChannelDto) {
    return toChannelDto(await this.projects.createChannel(id, dto));
  }

  @Get(':id/channels')
  async listChannels(@Param('id') id: string) {
    return (await this.projects.listChannels(id)).map(toChannelDto);
  }
}

@Module({
  imports: [TypeOrmModule.forFeature([ProjectEntity, ChannelEntity])],
  providers: [ProjectsService],
  controllers: [ProjectsController],
  exports: [ProjectsService],
})
export class ProjectsModule {}
