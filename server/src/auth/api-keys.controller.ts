import { Body, Controller, Delete, Get, HttpCode, Param, Post } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { ApiKey, ApiKeyCreated } from '#shared/api/types.js';
import { idOf } from '../common/http.js';
import { Returns } from '../common/openapi.js';
import { ApiKeysService } from './api-keys.service.js';
import { CreateApiKeyDto } from './dto/create-api-key.dto.js';

/** API keys: the key itself is shown once, at creation; only its SHA-256 is stored. */
@ApiTags('api-keys')
@Controller('api/api-keys')
export class ApiKeysController {
  constructor(private readonly keys: ApiKeysService) {}

  @Post()
  @HttpCode(201)
  @Returns('Create an API key (shown this once)', 201, 'ApiKeyCreated', ['already_exists'])
  create(@Body() dto: CreateApiKeyDto): Promise<ApiKeyCreated> {
    return this.keys.create(dto);
  }

  @Get()
  @Returns('List API keys (without the keys)', 200, ['ApiKey'])
  list(): Promise<ApiKey[]> {
    return this.keys.list();
  }

  @Delete(':id')
  @HttpCode(204)
  @Returns('Revoke an API key', 204, null, ['not_found', 'admin_key_protected'])
  revoke(@Param('id', idOf('API key')) id: string): Promise<void> {
    return this.keys.revoke(id);
  }
}
