import { Module } from '@nestjs/common';
import { AgentConnections } from './agent-connections.js';

/** The agents connected to this node: below the gateway, so orchestration and health checks can reach them. */
@Module({ providers: [AgentConnections], exports: [AgentConnections] })
export class AgentConnectionsModule {}
