import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import type { AuditEvent } from '#shared/api/types.js';
import { isUuid } from '../common/http.js';
import { returned } from '../database/sql.js';
import { AuditEventEntity } from './audit-event.entity.js';
import type { AuditNames } from './audit-routes.js';

/** One row to append (id and time are the database's). */
export type NewAuditEvent = Omit<AuditEventEntity, 'id' | 'at'>;

export interface AuditFilter {
  since?: Date;
  actor?: string;
  resourceType?: string;
  resourceId?: string;
  outcome?: string;
  /** Only events older than this id (the cursor for the next page). */
  before?: number;
  limit: number;
}

const toDto = (e: AuditEventEntity): AuditEvent => ({
  id: String(e.id),
  at: new Date(e.at).toISOString(),
  actor: e.actor,
  actorKeyId: e.actorKeyId,
  action: e.action,
  resourceType: e.resourceType,
  resourceId: e.resourceId,
  outcome: e.outcome,
  status: e.status,
  summary: e.summary,
});

/** The audit log: appended to by the recorder (audit.recorder.ts), read by GET /api/events. */
@Injectable()
export class AuditService {
  constructor(@InjectRepository(AuditEventEntity) private readonly repo: Repository<AuditEventEntity>) {}

  async append(e: NewAuditEvent): Promise<void> {
    await this.repo.insert(e);
  }

  /** Newest first (by id, the order rows were written in). */
  async list(f: AuditFilter): Promise<AuditEvent[]> {
    const q = this.repo.createQueryBuilder('e').orderBy('e.id', 'DESC').limit(f.limit);
    if (f.since) q.andWhere('e.at >= :since', { since: f.since });
    if (f.actor !== undefined) q.andWhere('e.actor = :actor', { actor: f.actor });
    if (f.resourceType !== undefined) q.andWhere('e.resource_type = :rt', { rt: f.resourceType });
    if (f.resourceId !== undefined) q.andWhere('e.resource_id = :rid', { rid: f.resourceId });
    if (f.outcome !== undefined) q.andWhere('e.outcome = :outcome', { outcome: f.outcome });
    if (f.before !== undefined) q.andWhere('e.id < :before', { before: f.before });
    return (await q.getMany()).map(toDto);
  }

  /**
   * The retention hook (issue #18 will call it on a schedule): deletes events older than `cutoff`, `batchSize` rows
   * per statement so that a large backlog never holds one long transaction or lock. Returns how many were deleted.
   */
  async deleteOlderThan(cutoff: Date, batchSize = 1000): Promise<number> {
    let total = 0;
    for (;;) {
      const rows = returned(
        await this.repo.query(
          `DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < $1 ORDER BY id LIMIT $2)
         RETURNING id`,
          [cutoff, batchSize],
        ),
      );
      const n = rows.length;
      total += n;
      if (n < batchSize) return total;
    }
  }

  /** Names for the ids summaries mention; an unknown or malformed id has none. */
  readonly names: AuditNames = {
    environment: (id) => this.nameIn('environments', id),
    project: (id) => this.nameIn('projects', id),
  };

  private async nameIn(table: 'environments' | 'projects', id: unknown): Promise<string | undefined> {
    if (!isUuid(id)) return undefined;
    const rows: Array<{ name: string }> = await this.repo.query(`SELECT name FROM ${table} WHERE id = $1`, [id]);
    return rows[0]?.name;
  }
}
