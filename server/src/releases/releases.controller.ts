import { Body, Controller, Get, HttpCode, Param, Post, Query } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { Release } from '#shared/api/types.js';
import { idOf } from '../common/http.js';
import { CurrentKey, type AuthenticatedKey } from '../auth/api-key.guard.js';
import { inScope } from '../auth/scope.js';
import { Returns } from '../common/openapi.js';
import { CreateReleaseDto } from './dto/create-release.dto.js';
import { ReleasesService, toReleaseDto } from './releases.service.js';

@ApiTags('releases')
@Controller('api/releases')
export class ReleasesController {
  constructor(private readonly releases: ReleasesService) {}

  @Post()
  @HttpCode(201)
  @Returns("Create a release: freeze the project's process, variables and package versions", 201, 'Release', [
    'unknown_reference',
    'already_exists',
  ])
  async create(@Body() dto: CreateReleaseDto): Promise<Release> {
    return toReleaseDto(await this.releases.create(dto));
  }

  @Get()
  @Returns("List releases, newest first (a project's, or the latest 500)", 200, ['Release'], ['not_found'])
  async list(@Query('projectId') projectId?: string, @CurrentKey() key?: AuthenticatedKey): Promise<Release[]> {
    // Without projectId: the latest 500, then those of the key's projects (fewer than 500 for a limited key).
    return (await this.releases.list(projectId))
      .filter((r) => !key || inScope(key, { projectId: r.projectId }))
      .map(toReleaseDto);
  }

  @Get(':id')
  @Returns('Get a release', 200, 'Release', ['not_found'])
  async get(@Param('id', idOf('release')) id: string): Promise<Release> {
    return toReleaseDto(await this.releases.get(id));
  }
}
