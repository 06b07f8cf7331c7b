import { Module } from '@nestjs/common';
import { AgentConnectionsModule } from '../agent-gateway/agent-connections.module.js';
import { DeploymentsModule } from '../deployments/deployments.module.js';
import { LeasesModule } from '../leases/leases.module.js';
import { MachinesModule } from '../machines/machines.module.js';
import { ReleasesModule } from '../releases/releases.module.js';
import { WebhooksModule } from '../webhooks/webhooks.module.js';
import { Dispatcher } from './dispatcher.js';
import { EmailActions } from './email-actions.js';
import { OffersService } from './offers.service.js';

/** Driving deployments: the planner (pure), the dispatcher (rounds, leases, delivery) and the offers agents run. */
@Module({
  imports: [DeploymentsModule, LeasesModule, AgentConnectionsModule, MachinesModule, ReleasesModule, WebhooksModule],
  providers: [Dispatcher, OffersService, EmailActions],
  exports: [Dispatcher, OffersService],
})
export class OrchestrationModule {}
