import { Module } from '@nestjs/common';
import { AuditModule } from '../audit/audit.module.js';
import { DeploymentsModule } from '../deployments/deployments.module.js';
import { RetentionService } from './retention.service.js';

/** Server retention: old deployments, their logs and old audit events are deleted on a schedule. */
@Module({ imports: [DeploymentsModule, AuditModule], providers: [RetentionService] })
export class RetentionModule {}
