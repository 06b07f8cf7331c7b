import { Module } from '@nestjs/common';
import { MachinesModule } from '../machines/machines.module.js';
import { PackagesModule } from '../packages/packages.module.js';
import { HealthController } from './health.controller.js';
import { HealthService } from './health.service.js';

/** Liveness and readiness of the server node. */
@Module({ imports: [MachinesModule, PackagesModule], providers: [HealthService], controllers: [HealthController] })
export class HealthModule {}
