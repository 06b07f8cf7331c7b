import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { ApiKeyEntity } from './api-key.entity.js';
import { ApiKeysController, MeController } from './api-keys.controller.js';
import { ApiKeysService } from './api-keys.service.js';
import { ScopeResolver } from './scope.js';

/**
 * API keys: the admin key, keys made through the API with their roles and scopes, and what the guard every route
 * passes needs (AppModule installs it; permissions.ts is its table).
 */
@Module({
  imports: [TypeOrmModule.forFeature([ApiKeyEntity])],
  providers: [ApiKeysService, ScopeResolver],
  controllers: [ApiKeysController, MeController],
  exports: [ApiKeysService, ScopeResolver],
})
export class AuthModule {}
