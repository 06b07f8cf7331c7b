/**
 * Package downloads on the agent port: `GET /packages/<sha256>` (`?prefetch=1` for a download ahead of the lease),
 * answered to an agent the gateway has already authenticated by its certificate. Lease downloads go before prefetches
 * (DownloadPriority); the bytes go out through PackageFiles' pooled buffers.
 */
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Inject, Injectable } from '@nestjs/common';
import { LOGGER, type Logger } from '../logging/logger.js';
import { DownloadPriority } from './download-priority.js';
import { PackageFiles } from './package-files.js';

const ROUTE = /^\/packages\/([a-f0-9]{64})(\?prefetch=1)?$/;

@Injectable()
export class PackageDownloads {
  /** Bytes of package data sent by this node (the benchmark reads it from the health endpoint). */
  bytesSent = 0;
  private readonly priority = new DownloadPriority();

  /** This service's log lines carry `context: 'packages'`. */
  private readonly log: Logger;

  constructor(
    private readonly files: PackageFiles,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'packages' });
  }

  /** Answers a request of an authenticated agent (`machineName`): the package, or 404. */
  async serve(req: IncomingMessage, res: ServerResponse, machineName: string): Promise<void> {
    const m = ROUTE.exec(req.url ?? '');
    try {
      if (req.method !== 'GET' || !m) {
        res
          .writeHead(404, { 'content-type': 'application/json' })
          .end(JSON.stringify({ statusCode: 404, message: 'not found' }));
        return;
      }
      if (!this.files.has(m[1])) {
        res
          .writeHead(404, { 'content-type': 'application/json' })
          .end(JSON.stringify({ statusCode: 404, message: `no package with sha256 ${m[1]}` }));
        return;
      }
      const { size } = await stat(this.files.pathOf(m[1]));
      const transfer = async () => {
        res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': size });
        await this.files.send(m[1], res);
      };
      await (m[2] ? this.priority.prefetch(transfer) : this.priority.lease(transfer));
      this.bytesSent += size;
      this.log.debug('package sent', { machine: machineName, sha256: m[1], bytes: size });
    } catch (e) {
      this.log.warn('package download failed', { machine: machineName, error: (e as Error).message });
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    }
  }
}
