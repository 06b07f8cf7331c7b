/**
 * Sends webhook deliveries: every node runs one. A round claims due pending deliveries with `FOR UPDATE SKIP LOCKED`
 * and pushes their next try a minute ahead before committing (the claim), so no other node takes them while this one
 * posts; the posts happen outside any transaction (a slow receiver holds no lock) and each outcome is written after.
 * A node that dies mid-post leaves its claims to lapse and be taken again: a receiver may see a delivery twice, and
 * tells by X-Cuttle-Delivery. Nothing here runs inside a deployment's round: a receiver never slows a deployment.
 */
import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { returned } from '../database/sql.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { SecretBox } from '../secrets/secret-box.js';
import { DELIVERY_TTL_MS, retryDelayMs, signature } from './delivery.js';

const POST_TIMEOUT_MS = 10_000;
/** How long a claimed delivery is left to its node before another may take it (well past the post's timeout). */
const CLAIM_SECONDS = 60;
const BATCH = 20;
/** Delivered and expired deliveries are kept this long for the delivery log, then deleted. */
const KEEP_DAYS = 30;
const PRUNE_EVERY_MS = 3600_000;

interface Claimed {
  id: string;
  event: string;
  payload: unknown;
  attempts: number;
  created_at: Date;
  url: string;
  secret: string;
}

@Injectable()
export class WebhookSender implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer?: NodeJS.Timeout;
  private running = false;
  private stopped = false;
  private prunedAt = 0;
  private readonly logger: Logger;

  constructor(
    private readonly ds: DataSource,
    private readonly box: SecretBox,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.logger = logger.child({ context: 'webhooks' });
  }

  onApplicationBootstrap() {
    const every = Math.min(1000, Math.max(100, Math.floor(this.config.webhookRetryBaseMs / 2)));
    this.timer = setInterval(() => void this.round(), every);
  }

  onApplicationShutdown() {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }

  /** One round: claim what is due, post it, record the outcomes. Rounds never overlap on a node. */
  async round() {
    if (this.running || this.stopped) return;
    this.running = true;
    try {
      const claimed = await this.claim();
      await Promise.all(claimed.map((d) => this.send(d)));
      if (Date.now() - this.prunedAt > PRUNE_EVERY_MS) {
        this.prunedAt = Date.now();
        await this.ds.query(
          `DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < now() - interval '${KEEP_DAYS} days'`,
        );
      }
    } catch (e) {
      if (!this.stopped) this.logger.error('webhook round failed', { error: (e as Error).message });
    } finally {
      this.running = false;
    }
  }

  private claim(): Promise<Claimed[]> {
    return this.ds.transaction(async (tx) => {
      const rows: Claimed[] = await tx.query(
        `SELECT d.id, d.event, d.payload, d.attempts, d.created_at, w.url, w.secret
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND NOT w.disabled
         ORDER BY d.next_attempt_at LIMIT ${BATCH} FOR UPDATE OF d SKIP LOCKED`,
      );
      if (rows.length)
        await tx.query(
          `UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = now() + interval '${CLAIM_SECONDS} seconds'
           WHERE id = ANY($1::uuid[])`,
          [rows.map((r) => r.id)],
        );
      return rows.map((r) => ({ ...r, attempts: r.attempts + 1 }));
    });
  }

  private async send(d: Claimed) {
    let status: number | null = null;
    let error: string | null = null;
    try {
      const body = JSON.stringify(d.payload);
      const res = await fetch(d.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': `cuttle/${this.config.version}`,
          'x-cuttle-event': d.event,
          'x-cuttle-delivery': d.id,
          'x-cuttle-signature': signature(this.box.decrypt(d.secret), body),
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(POST_TIMEOUT_MS),
      });
      status = res.status;
      // The receiver's answer is not kept: only its status tells delivered from not.
      await res.body?.cancel().catch(() => undefined);
      if (status < 200 || status > 299) error = `answered ${status}`;
    } catch (e) {
      const err = e as Error & { cause?: { code?: string; message?: string } };
      error =
        err.name === 'TimeoutError'
          ? `no answer within ${POST_TIMEOUT_MS / 1000} s`
          : (err.cause?.code ?? err.cause?.message ?? err.message);
    }
    if (!error) {
      await this.ds.query(
        `UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), last_status_code = $2, last_error = NULL
         WHERE id = $1`,
        [d.id, status],
      );
      return;
    }
    const age = Date.now() - new Date(d.created_at).getTime();
    const wait = retryDelayMs(d.attempts, this.config.webhookRetryBaseMs);
    const expired = age + wait > DELIVERY_TTL_MS;
    const rows = returned<{ id: string }>(
      await this.ds.query(
        `UPDATE webhook_deliveries SET last_status_code = $2, last_error = $3, status = $4,
           next_attempt_at = now() + ($5::int * interval '1 millisecond')
         WHERE id = $1 AND status = 'pending' RETURNING id`,
        [d.id, status, error.slice(0, 500), expired ? 'expired' : 'pending', wait],
      ),
    );
    if (rows.length)
      this.logger[expired ? 'warn' : 'debug'](
        expired ? 'webhook delivery given up after 24 h' : 'webhook delivery failed, will retry',
        { deliveryId: d.id, attempts: d.attempts, error, retryInMs: expired ? undefined : wait },
      );
  }
}
