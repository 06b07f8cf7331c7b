import { Inject, Injectable, type BeforeApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { LOGGER, type Logger } from '../logging/logger.js';
import { DeploymentEvents } from './deployment-events.js';
import { DeploymentsService } from './deployments.service.js';

/**
 * Rolls a deployment back when it ends `failed` and was created with `rollbackOnFailure`. It listens to
 * DeploymentEvents' `finished`, which the node that drove the deployment emits once its end is committed. The
 * rollback is made once whatever happens: DeploymentsService reads and sets `rolled_back_by` under the failed
 * deployment's row lock, so a repeated event, another node or an operator's request at the same moment finds it set.
 */
@Injectable()
export class RollbackOnFailure implements OnModuleInit, BeforeApplicationShutdown {
  /** Rollbacks being created: shutdown waits for them before the database closes. */
  private readonly pending = new Set<Promise<void>>();
  private readonly logger: Logger;

  constructor(
    private readonly events: DeploymentEvents,
    private readonly deployments: DeploymentsService,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.logger = logger.child({ context: 'deployments' });
  }

  private readonly onFinished = (deploymentId: string, outcome: 'success' | 'failed' | 'cancelled') => {
    if (outcome !== 'failed') return;
    const p: Promise<void> = this.deployments
      .rollBackFailed(deploymentId)
      .catch((e: Error) => {
        this.logger.error('automatic rollback failed', { deploymentId, error: e.message, stack: e.stack });
      })
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  };

  onModuleInit() {
    this.events.on('finished', this.onFinished);
  }

  async beforeApplicationShutdown() {
    this.events.off('finished', this.onFinished);
    await Promise.all(this.pending);
  }
}
