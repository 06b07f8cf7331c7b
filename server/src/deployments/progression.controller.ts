import { Controller, Get, Param } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { Progression } from '#shared/api/types.js';
import { idOf } from '../common/http.js';
import { Returns } from '../common/openapi.js';
import { LifecyclesService } from '../lifecycles/lifecycles.service.js';
import { ReleasesService } from '../releases/releases.service.js';
import { DeploymentRepository } from './deployment.repository.js';

/**
 * A release's progression through its lifecycle, next to the release's own routes. It lives with the deployments:
 * it is made of the release's deployments, which only their repository reads.
 */
@ApiTags('releases')
@Controller('api/releases')
export class ProgressionController {
  constructor(
    private readonly releases: ReleasesService,
    private readonly lifecycles: LifecyclesService,
    private readonly repo: DeploymentRepository,
  ) {}

  @Get(':id/progression')
  @Returns(
    "A release's progression: its lifecycle's phases, each environment's last deployment of it, and where it may go now",
    200,
    'Progression',
    ['not_found'],
  )
  async progression(@Param('id', idOf('release')) id: string): Promise<Progression> {
    const release = await this.releases.get(id);
    return this.lifecycles.progressionOf(release, await this.repo.releaseHistory(release.id));
  }
}
