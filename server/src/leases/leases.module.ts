import { Module } from '@nestjs/common';
import { DeploymentsModule } from '../deployments/deployments.module.js';
import { LeasesService } from './leases.service.js';

/** Lease accounting: take, renew, release, expire. */
@Module({
  imports: [DeploymentsModule],
  providers: [LeasesService],
  exports: [LeasesService],
})
export class LeasesModule {}
