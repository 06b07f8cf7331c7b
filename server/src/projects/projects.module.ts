import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { EnvironmentsModule } from '../environments/environments.module.js';
import { LifecyclesModule } from '../lifecycles/lifecycles.module.js';
import { ChannelEntity, ProjectEntity } from './project.entity.js';
import { ProjectsController } from './projects.controller.js';
import { ProjectsService } from './projects.service.js';

/** Projects, their deployment process, variables and channels. */
@Module({
  imports: [TypeOrmModule.forFeature([ProjectEntity, ChannelEntity]), EnvironmentsModule, LifecyclesModule],
  providers: [ProjectsService],
  controllers: [ProjectsController],
  exports: [ProjectsService],
})
export class ProjectsModule {}
