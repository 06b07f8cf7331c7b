import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AgentConnectionsModule } from '../agent-gateway/agent-connections.module.js';
import { EnvironmentsModule } from '../environments/environments.module.js';
import { HealthChecks } from './health-checks.js';
import { MachineEntity } from './machine.entity.js';
import { MachinesController } from './machines.controller.js';
import { MachineEvents, MachinesService } from './machines.service.js';
import { RegistrationTokenEntity } from './registration-token.entity.js';

/** Machines (deployment targets): registration with tokens, their state, revocation, and health checks. */
@Module({
  imports: [
    TypeOrmModule.forFeature([MachineEntity, RegistrationTokenEntity]),
    EnvironmentsModule,
    AgentConnectionsModule,
  ],
  providers: [MachinesService, MachineEvents, HealthChecks],
  controllers: [MachinesController],
  exports: [MachinesService, MachineEvents, HealthChecks],
})
export class MachinesModule {}
