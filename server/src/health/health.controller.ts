import { Controller, Get, Inject, ServiceUnavailableException } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { Health, Ready } from '#shared/api/types.js';
import { Public } from '../common/http.js';
import { Returns } from '../common/openapi.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { HealthService } from './health.service.js';

@ApiTags('health')
@Controller('api/health')
export class HealthController {
  constructor(
    private readonly health: HealthService,
    @Inject(CONFIG) private readonly config: CuttleConfig,
  ) {}

  /** Liveness and a summary; 503 when the database does not answer. */
  @Public()
  @Get()
  @Returns('Liveness and a summary (no API key)', 200, 'Health', ['unavailable'])
  async check(): Promise<Health> {
    const h = await this.health.health();
    if (!h)
      throw new ServiceUnavailableException({
        message: 'the database does not answer',
        status: 'unavailable',
        database: 'down',
        version: this.config.version,
      });
    return h;
  }

  /** Readiness for load balancers and orchestrators: the database answers and every migration is applied. */
  @Public()
  @Get('ready')
  @Returns('Readiness: the database answers and every migration is applied (no API key)', 200, 'Ready', ['unavailable'])
  async ready(): Promise<Ready> {
    const r = await this.health.ready();
    if (!('status' in r))
      throw new ServiceUnavailableException({
        message: r.database === 'down' ? 'the database does not answer' : 'migrations are pending',
        status: 'not ready',
        ...r,
      });
    return r;
  }
}
