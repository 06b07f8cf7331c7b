import { Module } from '@nestjs/common';
import { WebhookSender } from './webhook-sender.js';
import { WebhooksController } from './webhooks.controller.js';
import { WebhooksService } from './webhooks.service.js';

/**
 * Webhooks: subscriptions, the delivery log, and the sender every node runs. It depends on no other domain module
 * (deliveries are enqueued with SQL in the callers' transactions), so deployments can import it.
 */
@Module({
  providers: [WebhooksService, WebhookSender],
  controllers: [WebhooksController],
  exports: [WebhooksService],
})
export class WebhooksModule {}
