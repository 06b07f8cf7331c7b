import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { Webhook, WebhookDelivery } from '#shared/api/types.js';
import { Returns } from '../common/openapi.js';
import { idOf } from '../common/http.js';
import { CreateWebhookDto, UpdateWebhookDto } from './dto/webhook.dto.js';
import { WebhooksService } from './webhooks.service.js';

@ApiTags('webhooks')
@Controller('api/webhooks')
export class WebhooksController {
  constructor(private readonly webhooks: WebhooksService) {}

  @Post()
  @HttpCode(201)
  @Returns('Subscribe a URL to events (its secret signs every delivery and is never shown again)', 201, 'Webhook', [
    'validation_failed',
  ])
  create(@Body() dto: CreateWebhookDto): Promise<Webhook> {
    return this.webhooks.create(dto);
  }

  @Get()
  @Returns('List webhooks', 200, ['Webhook'])
  list(): Promise<Webhook[]> {
    return this.webhooks.list();
  }

  @Get(':id')
  @Returns('Get a webhook', 200, 'Webhook', ['not_found'])
  get(@Param('id', idOf('webhook')) id: string): Promise<Webhook> {
    return this.webhooks.get(id);
  }

  @Patch(':id')
  @Returns("Change a webhook's URL, events or secret, or disable it", 200, 'Webhook', [
    'validation_failed',
    'not_found',
  ])
  update(@Param('id', idOf('webhook')) id: string, @Body() dto: UpdateWebhookDto): Promise<Webhook> {
    return this.webhooks.update(id, dto);
  }

  @Delete(':id')
  @HttpCode(204)
  @Returns('Delete a webhook and its delivery log', 204, null, ['not_found'])
  async remove(@Param('id', idOf('webhook')) id: string): Promise<void> {
    await this.webhooks.remove(id);
  }

  @Get(':id/deliveries')
  @Returns("A webhook's deliveries, newest first (the last 100)", 200, ['WebhookDelivery'], ['not_found'])
  deliveries(@Param('id', idOf('webhook')) id: string): Promise<WebhookDelivery[]> {
    return this.webhooks.deliveries(id);
  }
}
