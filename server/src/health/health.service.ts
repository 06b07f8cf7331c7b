import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import type { Health, Ready } from '#shared/api/types.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { MachinesService } from '../machines/machines.service.js';
import { PackageDownloads } from '../packages/package-downloads.js';

/** Liveness and readiness of this server node. */
@Injectable()
export class HealthService {
  constructor(
    private readonly ds: DataSource,
    private readonly machines: MachinesService,
    private readonly downloads: PackageDownloads,
    @Inject(CONFIG) private readonly config: CuttleConfig,
  ) {}

  /** A summary; null when the database does not answer. */
  async health(): Promise<Health | null> {
    const agents = await this.machines.counts().catch(() => null);
    if (!agents) return null;
    return {
      status: 'ok',
      database: 'up',
      version: this.config.version,
      node: this.config.nodeId,
      agents,
      packageBytesSent: this.downloads.bytesSent,
    };
  }

  /** Ready when the database answers and every migration is applied; otherwise what is missing. */
  async ready(): Promise<Ready | { database: 'up' | 'down'; migrations: 'pending' | 'unknown' }> {
    let pending: boolean;
    try {
      await this.ds.query('SELECT 1');
      pending = await this.ds.showMigrations();
    } catch {
      return { database: 'down', migrations: 'unknown' };
    }
    if (pending) return { database: 'up', migrations: 'pending' };
    return { status: 'ready', database: 'up', migrations: 'applied', node: this.config.nodeId };
  }
}
