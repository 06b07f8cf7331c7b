import { Module, type DynamicModule } from '@nestjs/common';
import { APP_FILTER, APP_GUARD } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AgentConnections } from './agent-gateway/agent-connections.js';
import { AgentGateway } from './agent-gateway/agent-gateway.js';
import { ApiKeyEntity } from './auth/api-key.entity.js';
import { ApiKeyGuard } from './auth/api-key.guard.js';
import { ApiKeysService } from './auth/api-keys.service.js';
import { ApiKeysController } from './auth/api-keys.controller.js';
import { ErrorFilter } from './common/http.js';
import type { CuttleConfig } from './config/config.js';
import { CoreModule } from './core.module.js';
import { dataSourceOptions } from './database/data-source.js';
import { DeploymentLogService } from './deployments/deployment-log.js';
import { DeploymentsController, DeploymentsService } from './deployments/deployments.js';
import { InterruptionsController, InterruptionsService } from './deployments/interruptions.js';
import { EnvironmentsModule } from './environments/environments.js';
import { HealthController } from './health/health.js';
import { HealthChecks } from './machines/health-checks.js';
import { LeasesService } from './leases/leases.js';
import { LiveGateway } from './live/live.js';
import type { Logger } from './logging/logger.js';
import { MachinesModule } from './machines/machines.js';
import { Dispatcher } from './orchestration/dispatcher.js';
import { PackagesModule } from './packages/packages.js';
import type { PkiMaterial } from './pki/pki.js';
import { ProjectsModule } from './projects/projects.js';
import { ReleasesModule } from './releases/releases.js';

@Module({})
export class AppModule {
  static forRoot(opts: { config: CuttleConfig; pki: PkiMaterial; logger: Logger; databaseUrl: string; poolSize: number }): DynamicModule {
    return {
      module: AppModule,
      imports: [
        CoreModule.forRoot(opts),
        TypeOrmModule.forRoot(dataSourceOptions(opts.databaseUrl, true, opts.poolSize)),
        TypeOrmModule.forFeature([ApiKeyEntity]),
        EnvironmentsModule,
        MachinesModule,
        ProjectsModule,
        PackagesModule,
        ReleasesModule,
      ],
      controllers: [ApiKeysController, DeploymentsController, InterruptionsController, HealthController],
      providers: [
        ApiKeysService,
        DeploymentLogService,
        DeploymentsService,
        InterruptionsService,
        LeasesService,
        AgentConnections,
        Dispatcher,
        AgentGateway,
        HealthChecks,
        LiveGateway,
        { provide: APP_GUARD, useClass: ApiKeyGuard },
        { provide: APP_FILTER, useClass: ErrorFilter },
      ],
    };
  }
}
