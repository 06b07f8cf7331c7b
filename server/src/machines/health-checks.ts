/**
 * Machine health: every CUTTLE_HEALTH_CHECK_INTERVAL_SECONDS (and on demand) each node asks the agents connected to
 * it for a health report and measures the round trip. Healthy: the agent answered within 10 s and has at least
 * CUTTLE_MIN_FREE_DISK_MB free in its work folder. A machine no node holds a connection to is unhealthy ("not
 * connected"). An agent is also checked when it connects (`onArrival`), so a machine's health is known within seconds
 * of it coming online, not at the next round.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import type { AgentMessageOf } from '#shared/protocol/index.js';
import { AgentConnections } from '../agent-gateway/agent-connections.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { LiveEvents } from '../live/live-events.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import type { HealthCheck } from '#shared/api/types.js';
import { iso } from '../database/sql.js';
import { MachinesService } from './machines.service.js';

const REPORT_TIMEOUT_MS = 10_000;
/** A machine connecting again within this long of a check that found it healthy is not checked again. */
const ARRIVAL_RECHECK_MS = 30_000;
/** Checks on connect in flight at once: a reconnect storm of thousands of agents is checked a few at a time. */
const ARRIVAL_CONCURRENCY = 16;

export type HealthResult = HealthCheck;

@Injectable()
export class HealthChecks implements OnApplicationBootstrap, OnApplicationShutdown {
  private pending = new Map<
    string,
    { machineId: string; sentAt: number; resolve: (r: AgentMessageOf<'health.report'> | null) => void }
  >();
  private timer?: NodeJS.Timeout;
  /** Machines whose agents connected and wait for their check (in order), and how many such checks run. */
  private arrivals = new Set<string>();
  private arrivalsRunning = 0;
  private stopped = false;

  /** This service's log lines carry `context: 'health'`. */
  private readonly log: Logger;

  constructor(
    private readonly machines: MachinesService,
    private readonly agents: AgentConnections,
    private readonly live: LiveEvents,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'health' });
  }

  onApplicationBootstrap() {
    this.timer = setInterval(() => void this.checkAll(), this.config.healthCheckIntervalMs);
  }

  onApplicationShutdown() {
    this.stopped = true;
    this.arrivals.clear();
    if (this.timer) clearInterval(this.timer);
    for (const p of this.pending.values()) p.resolve(null);
  }

  /** The gateway hands every health report here; an unrequested or foreign one is ignored. */
  onReport(machineId: string, msg: AgentMessageOf<'health.report'>) {
    const p = this.pending.get(msg.requestId);
    if (!p || p.machineId !== machineId) return;
    this.pending.delete(msg.requestId);
    p.resolve(msg);
  }

  /**
   * An agent said hello here: its machine is checked soon, unless it already waits for a check or was found healthy
   * in the last 30 s (an agent reconnecting in a loop is not asked each time). At most 16 such checks run at once.
   */
  onArrival(machineId: string) {
    if (this.stopped || this.arrivals.has(machineId)) return;
    this.arrivals.add(machineId);
    this.drainArrivals();
  }

  private drainArrivals() {
    while (this.arrivalsRunning < ARRIVAL_CONCURRENCY && this.arrivals.size && !this.stopped) {
      const id = this.arrivals.values().next().value as string;
      this.arrivals.delete(id);
      this.arrivalsRunning++;
      void this.checkArrived(id)
        .catch((e: Error) => this.log.warn('health check on connect failed', { machineId: id, error: e.message }))
        .finally(() => {
          this.arrivalsRunning--;
          this.drainArrivals();
        });
    }
  }

  private async checkArrived(machineId: string) {
    const m = await this.machines.get(machineId);
    const recent = m.healthCheckedAt && Date.now() - m.healthCheckedAt.getTime() < ARRIVAL_RECHECK_MS;
    if (recent && m.health === 'healthy') return;
    if (this.agents.isConnected(machineId)) await this.check(machineId);
  }

  async checkAll() {
    for (const id of this.agents.machineIds()) await this.check(id).catch(() => undefined);
    // Machines nobody holds: unhealthy, once they have been gone for 3 heartbeats.
    for (const m of await this.machines.offlineUnmarked())
      await this.machines.recordHealth(m.id, {
        health: 'unhealthy',
        healthReason: `not connected${m.lastSeenAt ? ` (last seen ${m.lastSeenAt.toISOString()})` : ''}`,
        healthCheckedAt: new Date(),
      });
  }

  /** Checks one machine now. A machine connected to another node is reported as that node last measured it. */
  async check(machineId: string): Promise<HealthResult> {
    const m = await this.machines.get(machineId);
    if (!this.agents.isConnected(machineId)) {
      if (this.machines.isOnline(m)) {
        return {
          machineId,
          health: m.health,
          reason: m.healthReason ?? undefined,
          checkedAt: iso(m.healthCheckedAt),
          roundTripMs: m.healthRttMs,
          freeDiskBytes: m.freeDiskBytes,
          agentVersion: m.agentVersion,
          checkedBy: m.connectedNode ?? undefined,
        };
      }
      const checkedAt = new Date();
      const reason = `not connected${m.lastSeenAt ? ` (last seen ${m.lastSeenAt.toISOString()})` : ''}`;
      await this.machines.recordHealth(machineId, {
        health: 'unhealthy',
        healthReason: reason,
        healthCheckedAt: checkedAt,
      });
      return {
        machineId,
        health: 'unhealthy',
        reason,
        checkedAt: checkedAt.toISOString(),
        checkedBy: this.config.nodeId,
      };
    }
    const requestId = randomUUID();
    const sentAt = Date.now();
    const report = await new Promise<AgentMessageOf<'health.report'> | null>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        resolve(null);
      }, REPORT_TIMEOUT_MS);
      this.pending.set(requestId, {
        machineId,
        sentAt,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
      });
      this.agents.send(machineId, { type: 'health.request', requestId });
    });
    const checkedAt = new Date();
    if (!report) {
      const reason = `no answer within ${REPORT_TIMEOUT_MS / 1000} s`;
      await this.machines.recordHealth(machineId, {
        health: 'unhealthy',
        healthReason: reason,
        healthCheckedAt: checkedAt,
        healthRttMs: null,
      });
      return {
        machineId,
        health: 'unhealthy',
        reason,
        checkedAt: checkedAt.toISOString(),
        checkedBy: this.config.nodeId,
      };
    }
    const rtt = Date.now() - sentAt;
    const lowDisk = report.freeDiskBytes < this.config.minFreeDiskBytes;
    const reason = lowDisk
      ? `only ${Math.floor(report.freeDiskBytes / 1024 / 1024)} MB free in ${report.workDir} (at least ${Math.floor(this.config.minFreeDiskBytes / 1024 / 1024)} MB needed)`
      : undefined;
    const health = lowDisk ? 'unhealthy' : 'healthy';
    await this.machines.recordHealth(machineId, {
      health,
      healthReason: reason ?? null,
      healthCheckedAt: checkedAt,
      healthRttMs: rtt,
      freeDiskBytes: report.freeDiskBytes,
      agentVersion: report.agentVersion,
    });
    if (lowDisk) this.log.warn('machine unhealthy', { machineId, reason });
    return {
      machineId,
      health,
      ...(reason ? { reason } : {}),
      checkedAt: checkedAt.toISOString(),
      roundTripMs: rtt,
      freeDiskBytes: report.freeDiskBytes,
      agentVersion: report.agentVersion,
      checkedBy: this.config.nodeId,
    };
  }
}
