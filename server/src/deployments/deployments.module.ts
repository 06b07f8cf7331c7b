import { Module } from '@nestjs/common';
import { EnvironmentsModule } from '../environments/environments.module.js';
import { LifecyclesModule } from '../lifecycles/lifecycles.module.js';
import { MachinesModule } from '../machines/machines.module.js';
import { ProjectsModule } from '../projects/projects.module.js';
import { ReleasesModule } from '../releases/releases.module.js';
import { WebhooksModule } from '../webhooks/webhooks.module.js';
import { DeploymentEvents } from './deployment-events.js';
import { DeploymentLogService } from './deployment-log.service.js';
import { DeploymentRepository } from './deployment.repository.js';
import { DeploymentSecrets } from './deployment-secrets.js';
import { DeploymentsController } from './deployments.controller.js';
import { DeploymentsService } from './deployments.service.js';
import { InterruptionsController } from './interruptions.controller.js';
import { InterruptionsService } from './interruptions.service.js';
import { ProgressionController } from './progression.controller.js';
import { RollbackOnFailure } from './rollback-on-failure.js';
import { Scheduler } from './scheduler.js';
import { TargetTriggers } from './target-triggers.js';

/** The deployment aggregate: deployments, their steps and target runs, interruptions, the log, and its repository. */
@Module({
  imports: [ReleasesModule, EnvironmentsModule, ProjectsModule, MachinesModule, LifecyclesModule, WebhooksModule],
  providers: [
    DeploymentRepository,
    DeploymentEvents,
    DeploymentSecrets,
    DeploymentLogService,
    InterruptionsService,
    DeploymentsService,
    RollbackOnFailure,
    Scheduler,
    TargetTriggers,
  ],
  controllers: [DeploymentsController, InterruptionsController, ProgressionController],
  exports: [
    DeploymentRepository,
    DeploymentEvents,
    DeploymentSecrets,
    DeploymentLogService,
    InterruptionsService,
    DeploymentsService,
  ],
})
export class DeploymentsModule {}
