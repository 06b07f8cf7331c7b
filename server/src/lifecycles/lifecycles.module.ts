import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { EnvironmentsModule } from '../environments/environments.module.js';
import { ChannelEntity, ProjectEntity } from '../projects/project.entity.js';
import { ReleaseEntity } from '../releases/release.entity.js';
import { LifecycleEntity } from './lifecycle.entity.js';
import { LifecyclesController, ProgressionController } from './lifecycles.controller.js';
import { LifecyclesService } from './lifecycles.service.js';

/**
 * Lifecycles and releases' progression through them. It reads projects, channels and releases through their
 * entities rather than their modules, which depend on it (a project's lifecycleId is resolved here).
 */
@Module({
  imports: [
    TypeOrmModule.forFeature([LifecycleEntity, ProjectEntity, ChannelEntity, ReleaseEntity]),
    EnvironmentsModule,
  ],
  providers: [LifecyclesService],
  controllers: [LifecyclesController, ProgressionController],
  exports: [LifecyclesService],
})
export class LifecyclesModule {}
