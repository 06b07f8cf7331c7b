import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { AuditService } from '../audit/audit.service.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { DeploymentRepository } from '../deployments/deployment.repository.js';
import { LOGGER, type Logger } from '../logging/logger.js';

const DAY_MS = 86_400_000;
/** Deployments deleted per transaction: a large backlog never holds one long transaction or many locks. */
export const RETENTION_BATCH = 200;

export interface RetentionResult {
  deployments: number;
  logLines: number;
  auditEvents: number;
  /** Another node was sweeping: this one left the deployments to it. */
  skipped: boolean;
}

/**
 * Server retention: deployments finished more than CUTTLE_RETENTION_DAYS ago are deleted with their log, steps,
 * target runs, leases, interruptions and output variables, in batches, except per project and environment the newest
 * finished deployment and the newest successful one (a rollback and a target trigger deploy from it), and any that an
 * unfinished deployment retries or rolls back; unfinished (active or scheduled) deployments are never touched. Audit
 * events older than the same age go too. It runs at boot and every CUTTLE_RETENTION_INTERVAL_SECONDS on every node;
 * the deployments' sweep runs on one node at a time (an advisory lock, see DeploymentRepository.deleteExpiredBatch).
 * What was removed is logged. CUTTLE_RETENTION_DAYS=0 keeps everything.
 */
@Injectable()
export class RetentionService implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;
  private stopped = false;
  private readonly logger: Logger;

  constructor(
    private readonly repo: DeploymentRepository,
    private readonly audit: AuditService,
    @Inject(CONFIG) private readonly config: Pick<CuttleConfig, 'retentionDays' | 'retentionIntervalMs'>,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.logger = logger.child({ context: 'retention' });
  }

  onApplicationBootstrap() {
    if (!this.config.retentionDays) return;
    this.timer = setInterval(() => void this.sweepLogged(), this.config.retentionIntervalMs);
    this.timer.unref?.();
    void this.sweepLogged();
  }

  async onApplicationShutdown() {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  private async sweepLogged() {
    if (this.running || this.stopped) return;
    const p = this.sweep().catch((e: Error) => {
      if (!this.stopped) this.logger.error('retention sweep failed', { error: e.message, stack: e.stack });
    });
    this.running = p;
    await p;
    this.running = undefined;
  }

  /** One sweep: everything older than the retention age (`now` for tests), batch after batch. */
  async sweep(now = Date.now(), batch = RETENTION_BATCH): Promise<RetentionResult> {
    const days = this.config.retentionDays;
    const out: RetentionResult = { deployments: 0, logLines: 0, auditEvents: 0, skipped: false };
    if (!days) return out;
    const cutoff = new Date(now - days * DAY_MS);
    for (;;) {
      if (this.stopped) break;
      const r = await this.repo.deleteExpiredBatch(cutoff, batch);
      if (!r) {
        out.skipped = true;
        break;
      }
      out.deployments += r.deployments;
      out.logLines += r.logLines;
      if (r.deployments < batch) break;
    }
    if (!this.stopped) out.auditEvents = await this.audit.deleteOlderThan(cutoff);
    if (out.deployments || out.auditEvents)
      this.logger.info('retention: deleted what was older than the retention age', {
        retentionDays: days,
        before: cutoff.toISOString(),
        deployments: out.deployments,
        logLines: out.logLines,
        auditEvents: out.auditEvents,
      });
    return out;
  }
}
