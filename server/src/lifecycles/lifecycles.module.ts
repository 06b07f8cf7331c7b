import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { EnvironmentsModule } from '../environments/environments.module.js';
import { ChannelEntity, ProjectEntity } from '../projects/project.entity.js';
import { LifecycleEntity } from './lifecycle.entity.js';
import { LifecyclesController } from './lifecycles.controller.js';
import { LifecyclesService } from './lifecycles.service.js';

/**
 * Lifecycles and the rule of releases' progression through them (a release's progression is served by the
 * deployments module, which reads its deployments). It reads projects and channels through their entities rather
 * than their module, which depends on it (a project's lifecycleId is resolved here).
 */
@Module({
  imports: [TypeOrmModule.forFeature([LifecycleEntity, ProjectEntity, ChannelEntity]), EnvironmentsModule],
  providers: [LifecyclesService],
  controllers: [LifecyclesController],
  exports: [LifecyclesService],
})
export class LifecyclesModule {}
