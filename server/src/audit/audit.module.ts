import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AuthModule } from '../auth/auth.module.js';
import { AuditEventEntity } from './audit-event.entity.js';
import { AuditController } from './audit.controller.js';
import { AuditRecorder } from './audit.recorder.js';
import { AuditService } from './audit.service.js';

/** The audit log: the recorder main.ts installs in front of every /api route, and GET /api/events. */
@Module({
  imports: [TypeOrmModule.forFeature([AuditEventEntity]), AuthModule],
  providers: [AuditService, AuditRecorder],
  controllers: [AuditController],
  exports: [AuditService, AuditRecorder],
})
export class AuditModule {}
