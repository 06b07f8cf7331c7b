import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { LOGGER, type Logger } from '../logging/logger.js';
import { DeploymentRepository } from './deployment.repository.js';
import { DeploymentsService } from './deployments.service.js';

/** How often every node looks for scheduled deployments whose time came (and unstarted ones past their expiry). */
const TICK_MS = 1_000;
const BATCH = 50;

/**
 * Scheduled deployments: every node, every second, queues the scheduled deployments whose `queueAt` came and cancels
 * those not started by their `queueExpiresAt`. The state is in the database only (a restart, or a node dying, loses
 * nothing: the next tick of any node finds them), and each change is made under the deployment's row lock after
 * checking its state again, so two nodes ticking at once change a deployment once.
 */
@Injectable()
export class Scheduler implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer?: NodeJS.Timeout;
  private ticking = false;
  private stopped = false;
  private readonly logger: Logger;

  constructor(
    private readonly repo: DeploymentRepository,
    private readonly deployments: DeploymentsService,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.logger = logger.child({ context: 'scheduler' });
  }

  onApplicationBootstrap() {
    this.timer = setInterval(() => void this.tick(), TICK_MS);
    void this.tick();
  }

  onApplicationShutdown() {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }

  async tick() {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    try {
      // Expiry first: one whose expiry passed while no node ran is cancelled, not started late.
      for (const d of await this.repo.expiredUnstarted(BATCH)) {
        if (this.stopped) return;
        await this.deployments.expireUnstarted(d.id);
      }
      for (const d of await this.repo.dueScheduled(BATCH)) {
        if (this.stopped) return;
        await this.deployments.activateScheduled(d.id).catch((e: Error) => {
          this.logger.error('scheduled deployment could not be queued', { deploymentId: d.id, error: e.message });
        });
      }
    } catch (e) {
      if (!this.stopped) this.logger.error('scheduler round failed', { error: (e as Error).message });
    } finally {
      this.ticking = false;
    }
  }
}
