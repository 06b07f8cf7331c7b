import { ApiProperty, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import { randomBytes } from 'node:crypto';
import { Body, ConflictException, Controller, Delete, Get, HttpCode, NotFoundException, Param, Post } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { IsString, Matches } from 'class-validator';
import { Repository } from 'typeorm';
import { conflict, idOf } from '../common/http.js';
import { ApiKeyEntity } from './api-key.entity.js';
import { ApiKeysService, hashKey } from './api-keys.service.js';

export class CreateApiKeyDto {
  @ApiProperty({ type: String })
  @IsString() @Matches(/^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$/, { message: 'name must be letters, digits, spaces, ".", "_", "@" or "-" (at most 100)' }) name: string;
}

const toDto = (k: ApiKeyEntity) => ({ id: k.id, name: k.name, createdAt: k.createdAt, revokedAt: k.revokedAt });

/** API keys: the key itself is shown once, at creation; only its SHA-256 is stored. */
@ApiTags('api-keys')
@Controller('api/api-keys')
export class ApiKeysController {
  constructor(
    @InjectRepository(ApiKeyEntity) private readonly repo: Repository<ApiKeyEntity>,
    private readonly keys: ApiKeysService,
  ) {}

  @Post()
  @HttpCode(201)
  async create(@Body() dto: CreateApiKeyDto) {
    if (await this.repo.exists({ where: { name: dto.name } })) conflict(`an API key named "${dto.name}" already exists`);
    const key = `ck_${randomBytes(24).toString('base64url')}`;
    const row = await this.repo.save(this.repo.create({ name: dto.name, keyHash: hashKey(key), revokedAt: null }));
    return { ...toDto(row), key };
  }

  @Get()
  async list() {
    return (await this.repo.find({ order: { createdAt: 'ASC' } })).map(toDto);
  }

  @Delete(':id')
  @HttpCode(204)
  async revoke(@Param('id', idOf('API key')) id: string) {
    const k = await this.repo.findOne({ where: { id } });
    if (!k) throw new NotFoundException(`API key ${id} not found`);
    if (k.name === 'admin') throw new ConflictException('the admin key is managed by CUTTLE_ADMIN_API_KEY or $CUTTLE_HOME/admin-api-key; change it there');
    if (!k.revokedAt) await this.repo.update({ id }, { revokedAt: new Date() });
    this.keys.forget();
  }
}
