import { Body, Controller, Delete, Get, HttpCode, Param, Post } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { ApiKey, ApiKeyCreated, Me } from '#shared/api/types.js';
import { idOf } from '../common/http.js';
import { Returns } from '../common/openapi.js';
import { CurrentKey, type AuthenticatedKey } from './api-key.guard.js';
import { ApiKeysService } from './api-keys.service.js';
import { CreateApiKeyDto } from './dto/create-api-key.dto.js';
import { ROLE_PERMISSIONS } from './permissions.js';

/** API keys: the key itself is shown once, at creation; only its SHA-256 is stored. Managing them is admin's. */
@ApiTags('api-keys')
@Controller('api/api-keys')
export class ApiKeysController {
  constructor(private readonly keys: ApiKeysService) {}

  @Post()
  @HttpCode(201)
  @Returns(
    'Create an API key with a role, optionally limited to environments and projects (shown this once)',
    201,
    'ApiKeyCreated',
    ['already_exists', 'unknown_reference', 'forbidden'],
  )
  create(@Body() dto: CreateApiKeyDto): Promise<ApiKeyCreated> {
    return this.keys.create(dto);
  }

  @Get()
  @Returns('List API keys with their role and scope (without the keys)', 200, ['ApiKey'], ['forbidden'])
  list(): Promise<ApiKey[]> {
    return this.keys.list();
  }

  @Delete(':id')
  @HttpCode(204)
  @Returns('Revoke an API key', 204, null, ['not_found', 'admin_key_protected', 'forbidden'])
  revoke(@Param('id', idOf('API key')) id: string): Promise<void> {
    return this.keys.revoke(id);
  }
}

/** The key a request is made with: clients (the dashboard, `cuttle whoami`) show who they are and what they may do. */
@ApiTags('api-keys')
@Controller('api/me')
export class MeController {
  @Get()
  @Returns("The request's API key: its name, role, scope and permissions", 200, 'Me')
  me(@CurrentKey() key: AuthenticatedKey): Me {
    return {
      id: key.id,
      name: key.name,
      role: key.role,
      environmentIds: key.environmentIds,
      projectIds: key.projectIds,
      permissions: [...ROLE_PERMISSIONS[key.role]],
    };
  }
}
