import { Body, Controller, Get, HttpCode, Param, Patch, Post, Put } from '@nestjs/common';
import { ApiBody, ApiTags } from '@nestjs/swagger';
import { z } from 'zod';
import type { Channel, DeploymentProcess, Project, Variables } from '#shared/api/types.js';
import { ProcessStepsSchema } from '#shared/process/index.js';
import { VariableSchema } from '#shared/variables/index.js';
import { CurrentKey, type AuthenticatedKey } from '../auth/api-key.guard.js';
import { inScope } from '../auth/scope.js';
import { openApiSchema, Returns } from '../common/openapi.js';
import {
  CreateChannelDto,
  CreateProjectDto,
  PutProcessDto,
  PutVariablesDto,
  UpdateChannelDto,
  UpdateProjectDto,
} from './dto/project.dto.js';
import { ProjectsService, toChannelDto, toProjectDto } from './projects.service.js';

/** The OpenAPI schemas of the bodies the shared model validates, derived from that model (one definition). */
const STEPS_SCHEMA = openApiSchema(ProcessStepsSchema, 'input');
const VARIABLES_SCHEMA = openApiSchema(z.array(VariableSchema), 'input');

@ApiTags('projects')
@Controller('api/projects')
export class ProjectsController {
  constructor(private readonly projects: ProjectsService) {}

  @Post()
  @HttpCode(201)
  @Returns('Create a project (with a channel named Default)', 201, 'Project', ['already_exists'])
  async create(@Body() dto: CreateProjectDto): Promise<Project> {
    return toProjectDto(await this.projects.create(dto));
  }

  @Get()
  @Returns('List projects (a key limited to projects sees only those)', 200, ['Project'])
  async list(@CurrentKey() key: AuthenticatedKey): Promise<Project[]> {
    return (await this.projects.list()).filter((p) => inScope(key, { projectId: p.id })).map(toProjectDto);
  }

  @Get(':id')
  @Returns('Get a project by id, slug or name', 200, 'Project', ['not_found'])
  async get(@Param('id') id: string): Promise<Project> {
    return toProjectDto(await this.projects.get(id));
  }

  @Patch(':id')
  @Returns("Change a project's name, description, default timeout, machine concurrency or lifecycle", 200, 'Project', [
    'not_found',
    'already_exists',
    'unknown_reference',
  ])
  async update(@Param('id') id: string, @Body() dto: UpdateProjectDto): Promise<Project> {
    return toProjectDto(await this.projects.update(id, dto));
  }

  @Get(':id/variables')
  @Returns("Get a project's variables (sensitive values masked)", 200, 'Variables', ['not_found'])
  getVariables(@Param('id') id: string): Promise<Variables> {
    return this.projects.getVariables(id);
  }

  @Put(':id/variables')
  @Returns("Replace a project's variables (optimistic concurrency on version, when given)", 200, 'Variables', [
    'not_found',
    'stale_version',
  ])
  @ApiBody({
    schema: {
      type: 'object',
      required: ['variables'],
      properties: { variables: VARIABLES_SCHEMA, version: { type: 'integer' } },
    },
  })
  putVariables(@Param('id') id: string, @Body() dto: PutVariablesDto): Promise<Variables> {
    return this.projects.putVariables(id, dto);
  }

  @Get(':id/deployment-process')
  @Returns("Get a project's deployment process", 200, 'DeploymentProcess', ['not_found'])
  getProcess(@Param('id') id: string): Promise<DeploymentProcess> {
    return this.projects.getProcess(id);
  }

  @Put(':id/deployment-process')
  @Returns('Replace the deployment process (optimistic concurrency on version)', 200, 'DeploymentProcess', [
    'not_found',
    'stale_version',
    'unknown_reference',
  ])
  @ApiBody({
    schema: {
      type: 'object',
      required: ['version', 'steps'],
      properties: { version: { type: 'integer' }, steps: STEPS_SCHEMA },
    },
  })
  putProcess(@Param('id') id: string, @Body() dto: PutProcessDto): Promise<DeploymentProcess> {
    return this.projects.putProcess(id, dto);
  }

  @Post(':id/channels')
  @HttpCode(201)
  @Returns('Create a channel (a release stream) of a project', 201, 'Channel', [
    'not_found',
    'already_exists',
    'unknown_reference',
  ])
  async createChannel(@Param('id') id: string, @Body() dto: CreateChannelDto): Promise<Channel> {
    return toChannelDto(await this.projects.createChannel(id, dto));
  }

  @Get(':id/channels')
  @Returns("List a project's channels", 200, ['Channel'], ['not_found'])
  async listChannels(@Param('id') id: string): Promise<Channel[]> {
    return (await this.projects.listChannels(id)).map(toChannelDto);
  }

  @Patch(':id/channels/:channelId')
  @Returns("Rename a channel or set its own lifecycle (null: the project's)", 200, 'Channel', [
    'not_found',
    'already_exists',
    'unknown_reference',
  ])
  async updateChannel(
    @Param('id') id: string,
    @Param('channelId') channelId: string,
    @Body() dto: UpdateChannelDto,
  ): Promise<Channel> {
    return toChannelDto(await this.projects.updateChannel(id, channelId, dto));
  }
}
