import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { PackagesModule } from '../packages/packages.module.js';
import { ProjectsModule } from '../projects/projects.module.js';
import { ReleaseEntity } from './release.entity.js';
import { ReleasesController } from './releases.controller.js';
import { ReleasesService } from './releases.service.js';

/** Releases of projects. */
@Module({
  imports: [TypeOrmModule.forFeature([ReleaseEntity]), ProjectsModule, PackagesModule],
  providers: [ReleasesService],
  controllers: [ReleasesController],
  exports: [ReleasesService],
})
export class ReleasesModule {}
