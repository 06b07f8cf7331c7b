/**
 * The deployment log: one sequence per deployment, no gaps, read by cursor.
 *
 * Sequence numbers come from the deployment's row in `deployment_log_heads`, bumped in the same transaction that
 * inserts the lines (`DeploymentRepository.appendLog`). The bump holds that row's lock until commit, so transactions
 * that write one deployment's log commit in sequence order: a reader that has seen seq N will never later find a
 * line below N appear. It is a row of its own, not a column of the deployment, so that log writes and state changes
 * do not wait on each other; it is the last level of the lock order (see deployment.repository.ts).
 *
 * Agents' lines arrive in chunks per lease; they are stored once each (deduplicated by lease and sequence), masked,
 * and acknowledged with the highest sequence stored. Chunks of one deployment that arrive while its previous batch is
 * being written go into the next transaction together (group commit): every chunk bumps the deployment's log head,
 * so one transaction per chunk would cap a deployment's log at one chunk per commit.
 */
import { Injectable } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import { clampLogText, type LogLine } from '#shared/protocol/index.js';
import { maskSecrets } from '#shared/variables/index.js';
import { LiveEvents } from '../live/live-events.js';
import { DeploymentRepository } from './deployment.repository.js';
import { DeploymentSecrets } from './deployment-secrets.js';
import type { LeaseContext, LogEntry, LogEntryInput } from './deployment.types.js';

export type { LogEntry, LogEntryInput } from './deployment.types.js';

/** Chunks written in one transaction at most. */
const MAX_LOG_BATCH = 200;

interface LogQueue {
  items: Array<{ ctx: LeaseContext; lines: LogLine[]; resolve: (seq: number) => void; reject: (e: unknown) => void }>;
  running: boolean;
}

@Injectable()
export class DeploymentLogService {
  private queues = new Map<string, LogQueue>();

  constructor(
    private readonly repo: DeploymentRepository,
    private readonly secrets: DeploymentSecrets,
    private readonly events: LiveEvents,
  ) {}

  /** Appends inside the caller's transaction (which thereby holds the log's head row until it commits). */
  async append(tx: EntityManager, deploymentId: string, entries: LogEntryInput[]): Promise<number> {
    if (!entries.length) return 0;
    const last = await this.repo.appendLog(tx, deploymentId, entries);
    // Every change to a deployment writes its log, so this one notice covers them all (read after the commit).
    this.events.emit('deployment', deploymentId);
    return last;
  }

  async read(
    deploymentId: string,
    afterSeq: number,
    limit: number,
    machineId?: string,
  ): Promise<{ entries: LogEntry[]; nextSeq: number }> {
    const entries = await this.repo.readLog(deploymentId, afterSeq, limit, machineId);
    return { entries, nextSeq: entries.length ? entries[entries.length - 1].seq : afterSeq };
  }

  /**
   * Stores an agent's lines of one lease that the log does not have yet and returns the highest sequence now stored
   * for the lease, which the agent takes as its acknowledgement.
   */
  appendAgentLines(ctx: LeaseContext, lines: LogLine[]): Promise<number> {
    return new Promise((resolve, reject) => {
      const q = this.queues.get(ctx.deploymentId) ?? { items: [], running: false };
      this.queues.set(ctx.deploymentId, q);
      q.items.push({ ctx, lines, resolve, reject });
      if (!q.running) void this.drain(ctx.deploymentId, q);
    });
  }

  private async drain(deploymentId: string, q: LogQueue) {
    q.running = true;
    try {
      while (q.items.length) {
        const batch = q.items.splice(0, MAX_LOG_BATCH);
        try {
          const acks = await this.writeBatch(deploymentId, batch);
          batch.forEach((b, i) => b.resolve(acks[i]));
        } catch (e) {
          batch.forEach((b) => b.reject(e));
        }
      }
    } finally {
      q.running = false;
      if (!q.items.length) this.queues.delete(deploymentId);
    }
  }

  /** One transaction for many chunks of one deployment's log; returns each chunk's acknowledged sequence. */
  private async writeBatch(deploymentId: string, batch: LogQueue['items']): Promise<number[]> {
    // The agent masks sensitive values already; masking again here means a buggy or hostile agent cannot leak them.
    const secrets = await this.secrets.of(deploymentId);
    return this.repo.transaction(async (tx) => {
      // The lease rows, then the log's head row: never the deployment row, so agents' lines do not wait for results
      // and dispatcher rounds, nor they for lines.
      const rows = await this.repo.lockLeasesForLog(tx, [...new Set(batch.map((b) => b.ctx.leaseId))]);
      const last = new Map(rows.map((r) => [r.id, r.last_log_seq]));
      const before = new Map(last);
      const fresh: LogEntryInput[] = [];
      const acks: number[] = [];
      for (const { ctx, lines } of batch) {
        const { entries, seq } = freshEntries(ctx, lines, last.get(ctx.leaseId) ?? 0, secrets);
        fresh.push(...entries);
        last.set(ctx.leaseId, seq);
        acks.push(seq);
      }
      if (fresh.length) {
        await this.append(tx, deploymentId, fresh);
        await this.repo.setLeaseLogSeqs(
          tx,
          [...last].filter(([id, seq]) => before.get(id) !== seq),
        );
      }
      return acks;
    });
  }
}

/**
 * The lines of a lease the log does not have yet, in sequence after `lastSeq` (a duplicate is skipped; at a gap the
 * rest waits for the agent to resend from the acknowledged sequence), masked, as log entries; and the new last seq.
 */
export function freshEntries(
  ctx: LeaseContext,
  lines: LogLine[],
  lastSeq: number,
  secrets: Set<string>,
): { entries: LogEntryInput[]; seq: number } {
  let seq = lastSeq;
  const entries: LogEntryInput[] = [];
  for (const l of [...lines].sort((a, b) => a.seq - b.seq)) {
    if (l.seq <= seq) continue;
    if (l.seq !== seq + 1) break;
    seq = l.seq;
    entries.push({
      level: l.level,
      at: l.at,
      // The agent masks sensitive values already; masking again here means a buggy or hostile agent cannot leak them.
      text: clampLogText(secrets.size ? maskSecrets(l.text, secrets) : l.text),
      machineId: ctx.machineId,
      stepName: ctx.stepName,
      actionName: l.actionIndex !== undefined ? (ctx.actionNames[l.actionIndex] ?? null) : null,
    });
  }
  return { entries, seq };
}
