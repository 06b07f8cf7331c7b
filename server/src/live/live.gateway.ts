/**
 * The dashboard's live channel: socket.io on the REST port, namespace `/live`, authenticated with an API key
 * (`auth: {apiKey}` in the handshake). Nothing is broadcast per log line: a change marks a deployment dirty, and
 * within 150 ms each subscriber of it receives one snapshot and the log lines it has not seen.
 *
 *   client → server  `subscribe {deploymentId, afterSeq}`, `unsubscribe {deploymentId}`
 *   server → client  `deployment` (the GET /api/deployments/:id body), `log {deploymentId, entries}` (in seq order),
 *                    `deployments` (the list changed: refetch), `machines` (machine states changed: refetch),
 *                    `interruptions {deploymentId}` (with every deployment snapshot, so open questions show at once)
 *
 * Changes made by another server node raise no event here, so subscribed deployments are also compared with the
 * database every 2 s.
 */
import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { Server, type Namespace, type Socket } from 'socket.io';
import type { ErrorCode } from '#shared/api/errors.js';
import {
  LIVE_NAMESPACE,
  LiveSubscribeSchema,
  LiveUnsubscribeSchema,
  type LiveClientEvents,
  type LiveServerEvents,
} from '#shared/api/live.js';
import type { AuthenticatedKey } from '../auth/api-key.guard.js';
import { ApiKeysService } from '../auth/api-keys.service.js';
import { inScope } from '../auth/scope.js';
import { DeploymentLogService } from '../deployments/deployment-log.service.js';
import { DeploymentRepository } from '../deployments/deployment.repository.js';
import { DeploymentsService } from '../deployments/deployments.service.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { LiveEvents } from './live-events.js';

interface Room {
  cursor: number;
  state?: string;
  timer?: NodeJS.Timeout;
}

@Injectable()
export class LiveGateway implements OnApplicationBootstrap, OnApplicationShutdown {
  private io?: Server;
  private ns?: Namespace<LiveClientEvents, LiveServerEvents>;
  private rooms = new Map<string, Room>();
  private listTimer?: NodeJS.Timeout;
  private machinesTimer?: NodeJS.Timeout;
  private sweep?: NodeJS.Timeout;

  /** This service's log lines carry `context: 'live'`. */
  private readonly logger: Logger;

  constructor(
    private readonly host: HttpAdapterHost,
    private readonly keys: ApiKeysService,
    private readonly deployments: DeploymentsService,
    private readonly log: DeploymentLogService,
    private readonly repo: DeploymentRepository,
    events: LiveEvents,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.logger = logger.child({ context: 'live' });
    events.on('deployment', (id) => this.dirty(id));
    events.on('machines', () => this.machinesChanged());
  }

  onApplicationBootstrap() {
    this.io = new Server(this.host.httpAdapter.getHttpServer(), {
      serveClient: true,
      transports: ['websocket', 'polling'],
    });
    this.ns = this.io.of(LIVE_NAMESPACE);
    this.ns.use((socket, next) => {
      const key = (socket.handshake.auth as { apiKey?: unknown })?.apiKey;
      const refuse = (message: string) =>
        next(Object.assign(new Error(message), { data: { code: 'unauthorized' satisfies ErrorCode } }));
      if (typeof key !== 'string' || !key) return refuse('unauthorized: give an API key');
      this.keys
        .verify(key)
        .then((found) => {
          if (!found) return refuse('unauthorized: not a valid API key');
          socket.data.apiKey = found;
          next();
        })
        .catch(() => refuse('unauthorized'));
    });
    this.ns.on('connection', (socket) => this.onConnection(socket));
    this.sweep = setInterval(() => void this.compareWithDatabase(), 2_000);
  }

  async onApplicationShutdown() {
    if (this.sweep) clearInterval(this.sweep);
    for (const r of this.rooms.values()) clearTimeout(r.timer);
    await new Promise<void>((r) => (this.io ? this.io.close(() => r()) : r()));
  }

  private onConnection(socket: Socket<LiveClientEvents, LiveServerEvents>) {
    socket.on('subscribe', async (raw: unknown) => {
      const p = LiveSubscribeSchema.safeParse(raw);
      if (!p.success)
        return socket.emit('error-message', {
          message: `subscribe: ${p.error.issues[0]?.path.join('.') || 'body'} ${p.error.issues[0]?.message}`,
        });
      const { deploymentId, afterSeq } = p.data;
      try {
        const snapshot = await this.deployments.get(deploymentId);
        // A key limited to environments or projects follows only the deployments it may read.
        const key = socket.data.apiKey as AuthenticatedKey | undefined;
        if (!key || !inScope(key, snapshot))
          return socket.emit('error-message', { message: `deployment ${deploymentId} is outside this key's scope` });
        await socket.join(`dep:${deploymentId}`);
        const room = this.rooms.get(deploymentId) ?? { cursor: afterSeq };
        this.rooms.set(deploymentId, room);
        socket.emit('deployment', snapshot);
        // Catch this subscriber up to the room's cursor; the room's pushes carry it on from there.
        const until = Math.max(room.cursor, (await this.currentSeq(deploymentId)) ?? 0);
        room.cursor = until;
        let after = afterSeq;
        while (after < until) {
          const page = await this.log.read(deploymentId, after, 5_000);
          const entries = page.entries.filter((e) => e.seq <= until);
          if (!entries.length) break;
          socket.emit('log', { deploymentId, entries });
          after = entries[entries.length - 1].seq;
        }
      } catch (e) {
        socket.emit('error-message', { message: (e as Error).message });
      }
    });
    socket.on('unsubscribe', (raw: unknown) => {
      const p = LiveUnsubscribeSchema.safeParse(raw);
      if (p.success) void socket.leave(`dep:${p.data.deploymentId}`);
    });
  }

  private async currentSeq(id: string): Promise<number | null> {
    return (await this.head(id))?.seq ?? null;
  }

  /** A deployment's last log sequence and its state; null when there is no such deployment. */
  private async head(id: string): Promise<{ seq: number; state: string } | null> {
    return (await this.repo.logHead(id)) ?? null;
  }

  private subscribers(id: string) {
    return this.ns?.adapter.rooms.get(`dep:${id}`)?.size ?? 0;
  }

  /** A deployment changed: push to its subscribers shortly (coalescing bursts), and tell every client the list moved. */
  dirty(id: string) {
    this.listChanged();
    if (!this.subscribers(id)) {
      this.rooms.delete(id);
      return;
    }
    const room = this.rooms.get(id);
    if (!room || room.timer) return;
    room.timer = setTimeout(() => void this.flush(id), 150);
  }

  private async flush(id: string) {
    const room = this.rooms.get(id);
    if (!room) return;
    room.timer = undefined;
    try {
      const snapshot = await this.deployments.get(id);
      room.state = snapshot.state;
      this.ns?.to(`dep:${id}`).emit('deployment', snapshot);
      for (;;) {
        const page = await this.log.read(id, room.cursor, 5_000);
        if (!page.entries.length) break;
        room.cursor = page.nextSeq;
        this.ns?.to(`dep:${id}`).emit('log', { deploymentId: id, entries: page.entries });
        if (page.entries.length < 5_000) break;
      }
      this.ns?.to(`dep:${id}`).emit('interruptions', { deploymentId: id });
    } catch (e) {
      this.logger.warn('live update failed', { deploymentId: id, error: (e as Error).message });
    }
  }

  private async compareWithDatabase() {
    for (const [id, room] of this.rooms) {
      if (!this.subscribers(id)) {
        this.rooms.delete(id);
        continue;
      }
      const head = await this.head(id).catch(() => null);
      if (head && (head.seq > room.cursor || head.state !== room.state)) this.dirty(id);
    }
  }

  private listChanged() {
    this.listTimer ??= setTimeout(() => {
      this.listTimer = undefined;
      this.ns?.emit('deployments');
    }, 500);
  }

  private machinesChanged() {
    this.machinesTimer ??= setTimeout(() => {
      this.machinesTimer = undefined;
      this.ns?.emit('machines');
    }, 300);
  }
}
