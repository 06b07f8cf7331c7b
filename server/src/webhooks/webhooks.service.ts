/**
 * Webhooks: subscriptions of a URL to events, and the deliveries made for them. An event is enqueued as one delivery
 * row per subscribed webhook, in the caller's transaction (the one that made the event), so nothing is sent for a
 * change that rolled back and nothing is lost when the receiver or this server is down: the sender
 * (webhook-sender.ts) posts due rows from the database. A delivery's body carries names, ids and states only, never a
 * variable's value.
 */
import { Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import type { Webhook, WebhookDelivery, WebhookEvent } from '#shared/api/types.js';
import { invalid, notFound } from '../common/errors.js';
import { iso } from '../database/sql.js';
import { SecretBox } from '../secrets/secret-box.js';
import type { CreateWebhookDto, UpdateWebhookDto } from './dto/webhook.dto.js';
import { urlProblem } from './delivery.js';

interface WebhookRow {
  id: string;
  url: string;
  events: string[];
  secret: string;
  disabled: boolean;
  created_at: Date;
}

interface DeliveryRow {
  id: string;
  webhook_id: string;
  event: WebhookEvent;
  payload: Record<string, unknown>;
  status: WebhookDelivery['status'];
  attempts: number;
  next_attempt_at: Date;
  last_status_code: number | null;
  last_error: string | null;
  created_at: Date;
  delivered_at: Date | null;
}

const toWebhook = (r: WebhookRow): Webhook => ({
  id: r.id,
  url: r.url,
  events: r.events as WebhookEvent[],
  disabled: r.disabled,
  createdAt: iso(r.created_at)!,
});

const toDelivery = (r: DeliveryRow): WebhookDelivery => ({
  id: r.id,
  webhookId: r.webhook_id,
  event: r.event,
  payload: r.payload,
  status: r.status,
  attempts: r.attempts,
  nextAttemptAt: r.status === 'pending' ? iso(r.next_attempt_at) : null,
  lastStatusCode: r.last_status_code,
  lastError: r.last_error,
  createdAt: iso(r.created_at)!,
  deliveredAt: iso(r.delivered_at),
});

/** The deployment's names and ids a delivery's `data` carries. */
const DEPLOYMENT_DATA = `jsonb_build_object(
  'deploymentId', d.id, 'state', d.state, 'projectId', p.id, 'projectName', p.name,
  'environmentId', e.id, 'environmentName', e.name, 'releaseId', r.id, 'releaseVersion', r.version)`;

@Injectable()
export class WebhooksService {
  constructor(
    private readonly ds: DataSource,
    private readonly box: SecretBox,
  ) {}

  async create(dto: CreateWebhookDto): Promise<Webhook> {
    const problem = urlProblem(dto.url);
    if (problem) throw invalid(problem);
    const [row]: WebhookRow[] = await this.ds.query(
      `INSERT INTO webhooks (url, events, secret) VALUES ($1, $2::text[], $3) RETURNING *`,
      [dto.url, [...new Set(dto.events)], this.box.encrypt(dto.secret)],
    );
    return toWebhook(row);
  }

  async list(): Promise<Webhook[]> {
    const rows: WebhookRow[] = await this.ds.query(`SELECT * FROM webhooks ORDER BY created_at, id`);
    return rows.map(toWebhook);
  }

  private async row(id: string): Promise<WebhookRow> {
    const [row]: WebhookRow[] = await this.ds.query(`SELECT * FROM webhooks WHERE id = $1`, [id]);
    if (!row) throw notFound(`webhook ${id} not found`);
    return row;
  }

  async get(id: string): Promise<Webhook> {
    return toWebhook(await this.row(id));
  }

  async update(id: string, dto: UpdateWebhookDto): Promise<Webhook> {
    const w = await this.row(id);
    // `null` passes @IsOptional: only a value of the right type changes a field.
    if (typeof dto.url === 'string') {
      const problem = urlProblem(dto.url);
      if (problem) throw invalid(problem);
      w.url = dto.url;
    }
    if (Array.isArray(dto.events)) w.events = [...new Set(dto.events)];
    if (typeof dto.secret === 'string') w.secret = this.box.encrypt(dto.secret);
    if (typeof dto.disabled === 'boolean') w.disabled = dto.disabled;
    const [row]: WebhookRow[] = await this.ds.query(
      `UPDATE webhooks SET url = $2, events = $3::text[], secret = $4, disabled = $5 WHERE id = $1 RETURNING *`,
      [id, w.url, w.events, w.secret, w.disabled],
    );
    if (!row) throw notFound(`webhook ${id} not found`);
    return toWebhook(row);
  }

  /** Deletes a webhook with its delivery log (pending deliveries are dropped). */
  async remove(id: string): Promise<void> {
    const [, affected]: [unknown, number] = await this.ds.query(`DELETE FROM webhooks WHERE id = $1`, [id]);
    if (!affected) throw notFound(`webhook ${id} not found`);
  }

  /** A webhook's deliveries, newest first (at most `limit`). */
  async deliveries(id: string, limit = 100): Promise<WebhookDelivery[]> {
    await this.row(id);
    const rows: DeliveryRow[] = await this.ds.query(
      `SELECT * FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2`,
      [id, limit],
    );
    return rows.map(toDelivery);
  }

  /**
   * Enqueues a deployment's event for every enabled webhook subscribed to it, in the caller's transaction. Its data is
   * read in the same statement, after the caller's changes (the state is the new one).
   */
  async enqueueDeployment(tx: EntityManager, event: WebhookEvent, deploymentId: string): Promise<void> {
    await tx.query(
      `INSERT INTO webhook_deliveries (id, webhook_id, event, payload)
       SELECT x.id, w.id, $1::text, jsonb_build_object('id', x.id, 'event', $1::text, 'at', now(), 'data', ${DEPLOYMENT_DATA})
       FROM webhooks w CROSS JOIN LATERAL (SELECT gen_random_uuid() AS id) x,
         deployments d JOIN projects p ON p.id = d.project_id JOIN environments e ON e.id = d.environment_id
         JOIN releases r ON r.id = d.release_id
       WHERE d.id = $2 AND NOT w.disabled AND $1::text = ANY(w.events)`,
      [event, deploymentId],
    );
  }

  /** Enqueues `interruption.opened` for an interruption just inserted, in the caller's transaction. */
  async enqueueInterruption(tx: EntityManager, interruptionId: string): Promise<void> {
    await tx.query(
      `INSERT INTO webhook_deliveries (id, webhook_id, event, payload)
       SELECT x.id, w.id, 'interruption.opened', jsonb_build_object('id', x.id, 'event', 'interruption.opened',
         'at', now(), 'data', ${DEPLOYMENT_DATA} || jsonb_build_object('interruptionId', i.id, 'kind', i.kind,
         'instructions', i.instructions))
       FROM webhooks w CROSS JOIN LATERAL (SELECT gen_random_uuid() AS id) x,
         interruptions i JOIN deployments d ON d.id = i.deployment_id JOIN projects p ON p.id = d.project_id
         JOIN environments e ON e.id = d.environment_id JOIN releases r ON r.id = d.release_id
       WHERE i.id = $1 AND NOT w.disabled AND 'interruption.opened' = ANY(w.events)`,
      [interruptionId],
    );
  }
}
