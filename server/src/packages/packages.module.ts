import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { PackageEntity } from './package.entity.js';
import { PackageDownloads } from './package-downloads.js';
import { PackageFiles } from './package-files.js';
import { PackagesController } from './packages.controller.js';
import { PackagesService } from './packages.service.js';

/** The package feed: uploads, versions, the files on disk, and downloads by agents on the agent port. */
@Module({
  imports: [TypeOrmModule.forFeature([PackageEntity])],
  providers: [PackagesService, PackageFiles, PackageDownloads],
  controllers: [PackagesController],
  exports: [PackagesService, PackageFiles, PackageDownloads],
})
export class PackagesModule {}
