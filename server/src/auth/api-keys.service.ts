import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Inject, Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { IsNull, Repository } from 'typeorm';
import type { ApiKey, ApiKeyCreated } from '#shared/api/types.js';
import { alreadyExists, DomainError, invalid, notFound, unknownReference } from '../common/errors.js';
import { iso } from '../database/sql.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { ApiKeyEntity } from './api-key.entity.js';
import type { AuthenticatedKey } from './api-key.guard.js';
import type { CreateApiKeyDto } from './dto/create-api-key.dto.js';
import { ScopeResolver } from './scope.js';

/** API keys are stored as their SHA-256 only. */
export const hashKey = (key: string) => createHash('sha256').update(key).digest('hex');
/** A new key: `ck_` and 24 random bytes. */
const newKey = () => `ck_${randomBytes(24).toString('base64url')}`;
const toDto = (k: ApiKeyEntity): ApiKey => ({
  id: k.id,
  name: k.name,
  role: k.role,
  environmentIds: k.environmentIds,
  projectIds: k.projectIds,
  createdAt: k.createdAt.toISOString(),
  revokedAt: iso(k.revokedAt),
});

@Injectable()
export class ApiKeysService {
  // Hash → key, so that a dashboard polling every second does not cost a query per request.
  private cache = new Map<string, { key: AuthenticatedKey; until: number }>();

  constructor(
    @InjectRepository(ApiKeyEntity) private readonly repo: Repository<ApiKeyEntity>,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    private readonly scopes: ScopeResolver,
  ) {}

  /**
   * The admin key: CUTTLE_ADMIN_API_KEY, or one generated on first start and written to `<home>/admin-api-key`.
   * Its hash is stored under the name `admin` (replaced when the configured key changes); it is an unscoped admin.
   */
  async ensureAdminKey(): Promise<string> {
    const file = join(this.config.home, 'admin-api-key');
    let key = this.config.adminApiKey;
    if (!key) {
      if (existsSync(file)) key = readFileSync(file, 'utf8').trim();
      else {
        key = newKey();
        writeFileSync(file, key + '\n', { mode: 0o600 });
      }
    }
    const hash = hashKey(key);
    await this.repo.manager.transaction(async (m) => {
      const existing = await m.findOne(ApiKeyEntity, { where: { name: 'admin' } });
      const admin = { role: 'admin' as const, environmentIds: null, projectIds: null };
      if (!existing) await m.insert(ApiKeyEntity, { name: 'admin', keyHash: hash, ...admin });
      else if (
        existing.keyHash !== hash ||
        existing.revokedAt ||
        existing.role !== 'admin' ||
        existing.environmentIds ||
        existing.projectIds
      )
        await m.update(ApiKeyEntity, { id: existing.id }, { keyHash: hash, revokedAt: null, ...admin });
    });
    this.cache.clear();
    return key;
  }

  /**
   * A new key: shown this once, only its hash is kept. Without a role it is an admin, as every key made before keys
   * had roles, so that the old call keeps its meaning. Environments and projects may be given by id or name and are
   * stored as ids; an admin key is never limited (it manages keys and environments, which have no scope).
   */
  async create(dto: CreateApiKeyDto): Promise<ApiKeyCreated> {
    const role = dto.role ?? 'admin';
    const scope = async (field: 'environmentIds' | 'projectIds'): Promise<string[] | null> => {
      const refs = dto[field];
      if (refs === undefined || refs === null) return null;
      if (role === 'admin')
        throw invalid(`${field}: an admin key cannot be limited (give the key another role, or leave ${field} out)`);
      if (!refs.length) throw invalid(`${field} must name at least one (leave it out for all of them)`);
      const found =
        field === 'environmentIds' ? await this.scopes.environments(refs) : await this.scopes.projects(refs);
      if ('unknown' in found)
        throw unknownReference(
          `${field} names an unknown ${field === 'environmentIds' ? 'environment' : 'project'} "${found.unknown}"`,
        );
      return found.ids;
    };
    const environmentIds = await scope('environmentIds');
    const projectIds = await scope('projectIds');
    if (await this.repo.exists({ where: { name: dto.name } }))
      throw alreadyExists(`an API key named "${dto.name}" already exists`);
    const key = newKey();
    const row = await this.repo.save(
      this.repo.create({ name: dto.name, keyHash: hashKey(key), role, environmentIds, projectIds, revokedAt: null }),
    );
    return { ...toDto(row), key };
  }

  async list(): Promise<ApiKey[]> {
    return (await this.repo.find({ order: { createdAt: 'ASC' } })).map(toDto);
  }

  /** Revokes a key; cached verdicts are dropped here (other nodes' caches expire within 5 s). */
  async revoke(id: string): Promise<void> {
    const k = await this.repo.findOne({ where: { id } });
    if (!k) throw notFound(`API key ${id} not found`);
    if (k.name === 'admin')
      throw new DomainError(
        'admin_key_protected',
        'the admin key is managed by CUTTLE_ADMIN_API_KEY or $CUTTLE_HOME/admin-api-key; change it there',
      );
    if (!k.revokedAt) await this.repo.update({ id }, { revokedAt: new Date() });
    this.cache.clear();
  }

  /** Who the key is, its role and scope, when the key is valid and not revoked. */
  async verify(key: string): Promise<AuthenticatedKey | null> {
    const hash = hashKey(key);
    const hit = this.cache.get(hash);
    if (hit && hit.until > Date.now()) return hit.key;
    const row = await this.repo.findOne({ where: { keyHash: hash, revokedAt: IsNull() } });
    if (!row) return null;
    const found: AuthenticatedKey = {
      id: row.id,
      name: row.name,
      role: row.role,
      environmentIds: row.environmentIds,
      projectIds: row.projectIds,
    };
    this.cache.set(hash, { key: found, until: Date.now() + 5_000 });
    return found;
  }
}
