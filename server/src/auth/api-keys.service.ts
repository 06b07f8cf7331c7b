import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Inject, Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { IsNull, Repository } from 'typeorm';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { ApiKeyEntity } from './api-key.entity.js';

export const hashKey = (key: string) => createHash('sha256').update(key).digest('hex');

@Injectable()
export class ApiKeysService {
  // Hash → name, so that a dashboard polling every second does not cost a query per request.
  private cache = new Map<string, { name: string; until: number }>();

  constructor(
    @InjectRepository(ApiKeyEntity) private readonly repo: Repository<ApiKeyEntity>,
    @Inject(CONFIG) private readonly config: CuttleConfig,
  ) {}

  /**
   * The admin key: CUTTLE_ADMIN_API_KEY, or one generated on first start and written to `<home>/admin-api-key`.
   * Its hash is stored under the name `admin` (replaced when the configured key changes).
   */
  async ensureAdminKey(): Promise<string> {
    const file = join(this.config.home, 'admin-api-key');
    let key = this.config.adminApiKey;
    if (!key) {
      if (existsSync(file)) key = readFileSync(file, 'utf8').trim();
      else {
        key = `ck_${randomBytes(24).toString('base64url')}`;
        writeFileSync(file, key + '\n', { mode: 0o600 });
      }
    }
    const hash = hashKey(key);
    await this.repo.manager.transaction(async (m) => {
      const existing = await m.findOne(ApiKeyEntity, { where: { name: 'admin' } });
      if (!existing) await m.insert(ApiKeyEntity, { name: 'admin', keyHash: hash });
      else if (existing.keyHash !== hash || existing.revokedAt) await m.update(ApiKeyEntity, { id: existing.id }, { keyHash: hash, revokedAt: null });
    });
    this.cache.clear();
    return key;
  }

  /** Drops cached verdicts (after a revocation; other nodes' caches expire within 5 s). */
  forget() {
    this.cache.clear();
  }

  /** The key's name when the key is valid and not revoked. */
  async verify(key: string): Promise<string | null> {
    const hash = hashKey(key);
    const hit = this.cache.get(hash);
    if (hit && hit.until > Date.now()) return hit.name;
    const row = await this.repo.findOne({ where: { keyHash: hash, revokedAt: IsNull() } });
    if (!row) return null;
    this.cache.set(hash, { name: row.name, until: Date.now() + 5_000 });
    return row.name;
  }
}
