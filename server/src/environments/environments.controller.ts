import { Body, Controller, Get, HttpCode, Param, Patch, Post } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { Environment } from '#shared/api/types.js';
import { CurrentKey, type AuthenticatedKey } from '../auth/api-key.guard.js';
import { Returns } from '../common/openapi.js';
import { idOf } from '../common/http.js';
import { CreateEnvironmentDto, UpdateEnvironmentDto } from './dto/create-environment.dto.js';
import { EnvironmentsService, toEnvironmentDto } from './environments.service.js';
import { inScope } from '../auth/scope.js';

@ApiTags('environments')
@Controller('api/environments')
export class EnvironmentsController {
  constructor(private readonly envs: EnvironmentsService) {}

  @Post()
  @HttpCode(201)
  @Returns('Create an environment', 201, 'Environment', ['validation_failed', 'already_exists'])
  async create(@Body() dto: CreateEnvironmentDto): Promise<Environment> {
    return toEnvironmentDto(await this.envs.create(dto));
  }

  @Get()
  @Returns('List environments (a key limited to environments sees only those)', 200, ['Environment'])
  async list(@CurrentKey() key: AuthenticatedKey): Promise<Environment[]> {
    return (await this.envs.list()).filter((e) => inScope(key, { environmentId: e.id })).map(toEnvironmentDto);
  }

  @Get(':id')
  @Returns('Get an environment', 200, 'Environment', ['not_found'])
  async get(@Param('id', idOf('environment')) id: string): Promise<Environment> {
    return toEnvironmentDto(await this.envs.get(id));
  }

  @Patch(':id')
  @Returns("Rename an environment or change its deployments' defaults", 200, 'Environment', [
    'validation_failed',
    'not_found',
    'already_exists',
  ])
  async update(@Param('id', idOf('environment')) id: string, @Body() dto: UpdateEnvironmentDto): Promise<Environment> {
    return toEnvironmentDto(await this.envs.update(id, dto));
  }
}
