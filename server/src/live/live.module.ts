import { Module } from '@nestjs/common';
import { AuthModule } from '../auth/auth.module.js';
import { DeploymentsModule } from '../deployments/deployments.module.js';
import { LiveGateway } from './live.gateway.js';

/** The dashboard's live channel (socket.io `/live` on the REST port). */
@Module({ imports: [AuthModule, DeploymentsModule], providers: [LiveGateway] })
export class LiveModule {}
