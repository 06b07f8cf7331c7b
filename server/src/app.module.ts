import { Module, type DynamicModule } from '@nestjs/common';
import { APP_FILTER, APP_GUARD } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AgentGatewayModule } from './agent-gateway/agent-gateway.module.js';
import { AuditModule } from './audit/audit.module.js';
import { ApiKeyGuard } from './auth/api-key.guard.js';
import { AuthModule } from './auth/auth.module.js';
import { ErrorFilter } from './common/http.js';
import type { CuttleConfig } from './config/config.js';
import { CoreModule } from './core.module.js';
import { dataSourceOptions } from './database/data-source.js';
import { DeploymentsModule } from './deployments/deployments.module.js';
import { EnvironmentsModule } from './environments/environments.module.js';
import { HealthModule } from './health/health.module.js';
import { LeasesModule } from './leases/leases.module.js';
import { LifecyclesModule } from './lifecycles/lifecycles.module.js';
import { LiveModule } from './live/live.module.js';
import type { Logger } from './logging/logger.js';
import { MachinesModule } from './machines/machines.module.js';
import { OrchestrationModule } from './orchestration/orchestration.module.js';
import { PackagesModule } from './packages/packages.module.js';
import type { PkiMaterial } from './pki/pki.js';
import { ProjectsModule } from './projects/projects.module.js';
import { ReleasesModule } from './releases/releases.module.js';
import { RetentionModule } from './retention/retention.module.js';
import type { SecretBox } from './secrets/secret-box.js';
import { WebhooksModule } from './webhooks/webhooks.module.js';

/** The server: one module per domain; the API key guard and the error filter apply to every route. */
@Module({})
export class AppModule {
  static forRoot(opts: {
    config: CuttleConfig;
    pki: PkiMaterial;
    logger: Logger;
    databaseUrl: string;
    poolSize: number;
    secrets: SecretBox;
  }): DynamicModule {
    return {
      module: AppModule,
      imports: [
        CoreModule.forRoot(opts),
        TypeOrmModule.forRoot(dataSourceOptions(opts.databaseUrl, true, opts.poolSize)),
        AuthModule,
        EnvironmentsModule,
        MachinesModule,
        ProjectsModule,
        PackagesModule,
        ReleasesModule,
        LifecyclesModule,
        DeploymentsModule,
        LeasesModule,
        OrchestrationModule,
        AgentGatewayModule,
        HealthModule,
        LiveModule,
        AuditModule,
        WebhooksModule,
        RetentionModule,
      ],
      providers: [
        { provide: APP_GUARD, useClass: ApiKeyGuard },
        { provide: APP_FILTER, useClass: ErrorFilter },
      ],
    };
  }
}
