import { Injectable } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { returned } from '../database/sql.js';
import { LiveEvents } from '../live/live-events.js';

export interface LogEntryInput {
  level: 'debug' | 'info' | 'warn' | 'error';
  text: string;
  at?: Date | string;
  machineId?: string | null;
  stepName?: string | null;
  actionName?: string | null;
}

export interface LogEntry {
  seq: number;
  at: string;
  level: string;
  machineId?: string;
  stepName?: string;
  actionName?: string;
  text: string;
}

/**
 * The deployment log: one sequence per deployment, no gaps, read by cursor.
 *
 * Sequence numbers come from the deployment's row in `deployment_log_heads`, bumped in the same transaction that
 * inserts the lines. The bump takes that row's lock until commit, so transactions that write one deployment's log
 * commit in sequence order: a reader that has seen seq N will never later find a line below N appear. It is a row
 * of its own, not a column of the deployment, so that log writes and state changes do not wait on each other; a
 * transaction takes it last (after any deployment, lease or target-run row), which keeps the lock order whole.
 */
@Injectable()
export class DeploymentLogService {
  constructor(
    private readonly ds: DataSource,
    private readonly events: LiveEvents,
  ) {}

  /** Appends inside the caller's transaction (which thereby holds the log's head row until it commits). */
  async append(m: EntityManager, deploymentId: string, entries: LogEntryInput[]): Promise<number> {
    if (!entries.length) return 0;
    const now = new Date().toISOString();
    // One statement (one round trip): bump the head, then insert the batch numbered below the new head with
    // unnest() of parallel arrays, the fastest insert both databases accept.
    const [row] = returned<{ seq: string }>(
      await m.query(
        `WITH h AS (
           INSERT INTO deployment_log_heads AS h (deployment_id, seq) VALUES ($1, $2)
           ON CONFLICT (deployment_id) DO UPDATE SET seq = h.seq + EXCLUDED.seq RETURNING seq
         ), ins AS (
           INSERT INTO deployment_log (deployment_id, seq, at, level, machine_id, step_name, action_name, text)
           SELECT $1, (SELECT seq FROM h) - $2 + x.n, x.a, x.l, x.mi, x.sn, x.an, x.t
           FROM unnest($3::timestamptz[], $4::text[], $5::uuid[], $6::text[], $7::text[], $8::text[]) WITH ORDINALITY AS x(a, l, mi, sn, an, t, n)
         )
         SELECT seq FROM h`,
        [
          deploymentId,
          entries.length,
          entries.map((e) => (e.at instanceof Date ? e.at.toISOString() : (e.at ?? now))),
          entries.map((e) => e.level),
          entries.map((e) => e.machineId ?? null),
          entries.map((e) => e.stepName ?? null),
          entries.map((e) => e.actionName ?? null),
          entries.map((e) => e.text.replace(/\u0000/g, '')),
        ],
      ),
    );
    const last = Number(row.seq);
    // Every change to a deployment writes its log, so this one notice covers them all (read after the commit).
    this.events.emit('deployment', deploymentId);
    return last;
  }

  /** Appends in a transaction of its own. */
  appendNow(deploymentId: string, entries: LogEntryInput[]) {
    return this.ds.transaction((m) => this.append(m, deploymentId, entries));
  }

  async read(deploymentId: string, afterSeq: number, limit: number, machineId?: string): Promise<{ entries: LogEntry[]; nextSeq: number }> {
    const rows: Array<{ seq: string; at: Date; level: string; machine_id: string | null; step_name: string | null; action_name: string | null; text: string }> = await this.ds.query(
      `SELECT seq, at, level, machine_id, step_name, action_name, text FROM deployment_log
       WHERE deployment_id = $1 AND seq > $2 ${machineId ? 'AND machine_id = $4' : ''} ORDER BY seq LIMIT $3`,
      machineId ? [deploymentId, afterSeq, limit, machineId] : [deploymentId, afterSeq, limit],
    );
    const entries = rows.map((r) => ({
      seq: Number(r.seq),
      at: r.at.toISOString(),
      level: r.level,
      ...(r.machine_id ? { machineId: r.machine_id } : {}),
      ...(r.step_name ? { stepName: r.step_name } : {}),
      ...(r.action_name ? { actionName: r.action_name } : {}),
      text: r.text,
    }));
    return { entries, nextSeq: entries.length ? entries[entries.length - 1].seq : afterSeq };
  }
}
