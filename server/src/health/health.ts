import { Controller, Get, HttpCode, Inject, Module, Param, Post, ServiceUnavailableException } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { ApiTags } from '@nestjs/swagger';
import { MachinesModule } from '../machines/machines.module.js';
import { PackageDownloads } from '../packages/package-downloads.js';
import { PackagesModule } from '../packages/packages.js';
import { idOf, Public } from '../common/http.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { HealthChecks } from '../machines/health-checks.js';

@ApiTags('health')
@Controller('api')
export class HealthController {
  constructor(
    private readonly ds: DataSource,
    private readonly downloads: PackageDownloads,
    private readonly checks: HealthChecks,
    @Inject(CONFIG) private readonly config: CuttleConfig,
  ) {}

  /** Liveness and a summary; 503 when the database does not answer. */
  @Public()
  @Get('health')
  async health() {
    let agents = { online: 0, total: 0 };
    try {
      const [row] = await this.ds.query(
        `SELECT count(*) FILTER (WHERE connected_node IS NOT NULL AND last_seen_at > now() - make_interval(secs => $1))::int AS online, count(*)::int AS total
         FROM machines WHERE revoked_at IS NULL`,
        [(3 * this.config.heartbeatMs) / 1000],
      );
      agents = { online: row.online, total: row.total };
    } catch {
      throw new ServiceUnavailableException({ status: 'unavailable', database: 'down', version: this.config.version });
    }
    return { status: 'ok', database: 'up', version: this.config.version, node: this.config.nodeId, agents, packageBytesSent: this.downloads.bytesSent };
  }

  /** Readiness for load balancers and orchestrators: the database answers and every migration is applied. */
  @Public()
  @Get('health/ready')
  async ready() {
    let pending: boolean;
    try {
      await this.ds.query('SELECT 1');
      pending = await this.ds.showMigrations();
    } catch {
      throw new ServiceUnavailableException({ status: 'not ready', database: 'down', migrations: 'unknown' });
    }
    if (pending) throw new ServiceUnavailableException({ status: 'not ready', database: 'up', migrations: 'pending' });
    return { status: 'ready', database: 'up', migrations: 'applied', node: this.config.nodeId };
  }

  /** Asks the machine's agent for a health report now. */
  @Post('machines/:id/health-check')
  @HttpCode(200)
  check(@Param('id', idOf('machine')) id: string) {
    return this.checks.check(id);
  }
}

/** Liveness, readiness, and machines' health checks on demand. */
@Module({ imports: [MachinesModule, PackagesModule], controllers: [HealthController] })
export class HealthModule {}
