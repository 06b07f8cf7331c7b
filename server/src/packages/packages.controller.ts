import { Controller, Get, HttpCode, Param, Post, Req } from '@nestjs/common';
import { ApiBody, ApiConsumes, ApiHeader, ApiTags } from '@nestjs/swagger';
import type { Request } from 'express';
import type { Package } from '#shared/api/types.js';
import { Returns } from '../common/openapi.js';
import { PackagesService, toPackageDto } from './packages.service.js';

@ApiTags('packages')
@Controller('api/packages')
export class PackagesController {
  constructor(private readonly packages: PackagesService) {}

  @Post(':packageId/:version')
  @HttpCode(201)
  @Returns('Upload a package version (the raw .tar.gz as body)', 201, 'Package', [
    'already_exists',
    'package_refused',
    'checksum_mismatch',
    'payload_too_large',
    'unsupported_media_type',
  ])
  @ApiConsumes('application/gzip')
  @ApiBody({ description: 'the raw .tar.gz', schema: { type: 'string', format: 'binary' } })
  @ApiHeader({
    name: 'X-Checksum-Sha256',
    required: false,
    description: 'refuse the upload unless the body has this sha256',
  })
  async upload(
    @Param('packageId') packageId: string,
    @Param('version') version: string,
    @Req() req: Request,
  ): Promise<Package> {
    return toPackageDto(await this.packages.upload(packageId, version, req));
  }

  @Get()
  @Returns('List the packages in the feed, every version', 200, ['Package'])
  async list(): Promise<Package[]> {
    return (await this.packages.list()).map(toPackageDto);
  }
}
