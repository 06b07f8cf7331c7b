import { Module } from '@nestjs/common';
import { DeploymentsModule } from '../deployments/deployments.module.js';
import { LeasesModule } from '../leases/leases.module.js';
import { MachinesModule } from '../machines/machines.module.js';
import { OrchestrationModule } from '../orchestration/orchestration.module.js';
import { PackagesModule } from '../packages/packages.module.js';
import { AgentConnectionsModule } from './agent-connections.module.js';
import { AgentGateway } from './agent-gateway.js';

/** The agent port: mutual TLS, the socket.io protocol, and package downloads handed to PackageDownloads. */
@Module({
  imports: [
    AgentConnectionsModule,
    MachinesModule,
    LeasesModule,
    DeploymentsModule,
    OrchestrationModule,
    PackagesModule,
  ],
  providers: [AgentGateway],
})
export class AgentGatewayModule {}
