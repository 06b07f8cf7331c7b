import { Controller, Get, Inject, ServiceUnavailableException } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { Public } from '../common/http.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { AgentGateway } from '../agent-gateway/agent-gateway.js';

@Controller('api/health')
export class HealthController {
  constructor(
    private readonly ds: DataSource,
    private readonly gateway: AgentGateway,
    @Inject(CONFIG) private readonly config: CuttleConfig,
  ) {}

  /** Liveness and a summary; 503 when the database does not answer. */
  @Public()
  @Get()
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
    return { status: 'ok', database: 'up', version: this.config.version, node: this.config.nodeId, agents, packageBytesSent: this.gateway.packageBytesSent };
  }
}
