/**
 * Leases: the right of one target run to be in flight. A lease row is taken before any work is sent, so the window
 * is counted by the database, not by a process's memory. Every transition here is idempotent: a message that
 * arrives twice, or after a server restart, changes nothing the second time.
 *
 * Lock order, everywhere: the deployment row first, then lease and target-run rows. One order means no deadlock
 * between the orchestrator, agent results and the log, on whichever node each runs.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { clampLogText, type AgentMessageOf, type LeaseOffer, type LogLine } from '#shared/protocol/index.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { returned } from '../database/sql.js';
import { DeploymentLogService, type LogEntryInput } from '../deployments/deployment-log.js';
import type { TargetAction, TargetRunRow } from '../deployments/deployment.types.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import type { ReleaseEntity } from '../releases/release.entity.js';

interface LeaseContext {
  leaseId: string;
  deploymentId: string;
  machineId: string;
  machineName: string;
  targetRunId: string;
  stepIndex: number;
  stepName: string;
  actionNames: string[];
}

export interface LeaseRow {
  id: string;
  deployment_id: string;
  step_index: number;
  slot: number;
  target_run_id: string;
  machine_id: string;
  node_id: string;
  state: 'offered' | 'accepted' | 'released';
  expires_at: Date;
  released_at: Date | null;
  outcome: string | null;
  last_log_seq: number;
}

const OUTCOME_TEXT = { success: 'succeeded', failed: 'failed', cancelled: 'was cancelled' } as const;

@Injectable()
export class LeasesService {
  /** Immutable facts about a lease (who, which step, action names), kept so the log path does not re-read them. */
  private contexts = new Map<string, LeaseContext>();

  constructor(
    private readonly ds: DataSource,
    private readonly log: DeploymentLogService,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  /**
   * Takes a free slot `0 <= slot < window` of the step for the target run. The caller holds the deployment's row
   * lock; the partial unique index over active (deployment, step, slot) refuses a second holder of a slot even if
   * some other code path forgot the lock. Returns null when the window is full.
   */
  async acquire(m: EntityManager, p: { deploymentId: string; stepIndex: number; window: number; targetRunId: string; machineId: string }): Promise<{ id: string; slot: number } | null> {
    const used: Array<{ slot: number }> = await m.query(`SELECT slot FROM leases WHERE deployment_id = $1 AND step_index = $2 AND released_at IS NULL`, [p.deploymentId, p.stepIndex]);
    if (used.length >= p.window) return null;
    const taken = new Set(used.map((u) => u.slot));
    let slot = 0;
    while (taken.has(slot)) slot++;
    if (slot >= p.window) return null;
    const rows = returned<{ id: string }>(
      await m.query(
        `INSERT INTO leases (deployment_id, step_index, slot, target_run_id, machine_id, node_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) ON CONFLICT DO NOTHING RETURNING id`,
        [p.deploymentId, p.stepIndex, slot, p.targetRunId, p.machineId, this.config.nodeId, this.config.leaseTtlMs / 1000],
      ),
    );
    return rows[0] ? { id: rows[0].id, slot } : null;
  }

  private async context(leaseId: string): Promise<LeaseContext | null> {
    const hit = this.contexts.get(leaseId);
    if (hit) return hit;
    const [row] = await this.ds.query(
      `SELECT l.id, l.deployment_id, l.machine_id, l.target_run_id, l.step_index, t.machine_name, r.process
       FROM leases l JOIN target_runs t ON t.id = l.target_run_id JOIN deployments d ON d.id = l.deployment_id JOIN releases r ON r.id = d.release_id
       WHERE l.id = $1`,
      [leaseId],
    );
    if (!row) return null;
    const step = (row.process as ReleaseEntity['process'])[row.step_index];
    const ctx: LeaseContext = {
      leaseId,
      deploymentId: row.deployment_id,
      machineId: row.machine_id,
      machineName: row.machine_name,
      targetRunId: row.target_run_id,
      stepIndex: row.step_index,
      stepName: step.name,
      actionNames: step.actions.map((a) => a.name),
    };
    if (this.contexts.size > 50_000) this.contexts.clear();
    this.contexts.set(leaseId, ctx);
    return ctx;
  }

  /** The lease if it exists and belongs to this machine: an agent may only speak for its own leases. */
  private async own(machineId: string, leaseId: string) {
    const ctx = await this.context(leaseId);
    return ctx && ctx.machineId === machineId ? ctx : null;
  }

  /** What the agent is asked to run: the step's actions that the conditions did not skip, with their packages. */
  async buildOffer(leaseId: string): Promise<LeaseOffer | null> {
    const [row] = await this.ds.query(
      `SELECT l.id, l.deployment_id, l.step_index, l.released_at, t.id AS target_run_id, t.actions AS target_actions, t.machine_name, r.process, r.packages, r.version,
              p.name AS project_name, e.name AS environment_name
       FROM leases l JOIN target_runs t ON t.id = l.target_run_id JOIN deployments d ON d.id = l.deployment_id
       JOIN releases r ON r.id = d.release_id JOIN projects p ON p.id = d.project_id JOIN environments e ON e.id = d.environment_id
       WHERE l.id = $1`,
      [leaseId],
    );
    if (!row || row.released_at) return null;
    const step = (row.process as ReleaseEntity['process'])[row.step_index];
    const packages = row.packages as ReleaseEntity['packages'];
    const targetActions = row.target_actions as TargetAction[];
    const actions = step.actions
      .map((a, index) => ({ a, index }))
      .filter(({ index }) => targetActions[index]?.state === 'pending')
      .map(({ a, index }) => ({
        index,
        name: a.name,
        type: a.type as 'script' | 'package',
        script: a.script,
        timeoutSeconds: a.timeoutSeconds,
        package: a.type === 'package' ? packages.find((p) => p.packageId === a.packageId) : undefined,
      }));
    if (!actions.length) return null;
    return {
      type: 'lease.offer',
      leaseId,
      deploymentId: row.deployment_id,
      targetRunId: row.target_run_id,
      stepName: step.name,
      actions,
      startAt: 0,
      env: {
        CUTTLE_PROJECT_NAME: row.project_name,
        CUTTLE_RELEASE_NUMBER: row.version,
        CUTTLE_ENVIRONMENT_NAME: row.environment_name,
        CUTTLE_DEPLOYMENT_ID: row.deployment_id,
        CUTTLE_MACHINE_NAME: row.machine_name,
        CUTTLE_STEP_NAME: step.name,
      },
    };
  }

  /** Offered leases of a machine that it has not accepted yet (for delivery after a (re)connect or a lost offer). */
  async unaccepted(machineIds: string[]): Promise<Array<{ id: string; machine_id: string }>> {
    if (!machineIds.length) return [];
    return this.ds.query(`SELECT id, machine_id FROM leases WHERE machine_id = ANY($1::uuid[]) AND released_at IS NULL AND state = 'offered' ORDER BY acquired_at`, [machineIds]);
  }

  /** Active leases of these machines whose deployment is being cancelled: the agents must stop them. */
  async toCancel(machineIds: string[]): Promise<Array<{ id: string; machine_id: string }>> {
    if (!machineIds.length) return [];
    return this.ds.query(
      `SELECT l.id, l.machine_id FROM leases l JOIN deployments d ON d.id = l.deployment_id
       WHERE l.machine_id = ANY($1::uuid[]) AND l.released_at IS NULL AND d.state = 'cancelling'`,
      [machineIds],
    );
  }

  /** Returns false when the lease is no longer active (expired or finished): the agent must not run it. */
  async accept(machineId: string, leaseId: string): Promise<boolean> {
    if (!(await this.own(machineId, leaseId))) return false;
    const rows = returned(
      await this.ds.query(
        `UPDATE leases SET state = 'accepted', accepted_at = COALESCE(accepted_at, now()), expires_at = now() + make_interval(secs => $3)
         WHERE id = $1 AND machine_id = $2 AND released_at IS NULL RETURNING id`,
        [leaseId, machineId, this.config.leaseTtlMs / 1000],
      ),
    );
    return rows.length > 0;
  }

  /** Renews the machine's leases named in a heartbeat; returns those that are no longer active. */
  async renew(machineId: string, leaseIds: string[]): Promise<string[]> {
    await this.ds.query(`UPDATE machines SET last_seen_at = now() WHERE id = $1`, [machineId]);
    if (!leaseIds.length) return [];
    const rows = returned<{ id: string }>(
      await this.ds.query(
        `UPDATE leases SET expires_at = now() + make_interval(secs => $3) WHERE id = ANY($1::uuid[]) AND machine_id = $2 AND released_at IS NULL RETURNING id`,
        [leaseIds.filter((i) => /^[0-9a-f-]{36}$/i.test(i)), machineId, this.config.leaseTtlMs / 1000],
      ),
    );
    const live = new Set(rows.map((r) => r.id));
    return leaseIds.filter((i) => !live.has(i));
  }

  /**
   * Stores an agent's log lines that the server has not seen (dedup by lease and sequence) and returns the highest
   * sequence now stored for the lease, which the agent takes as its acknowledgement. Null: not this agent's lease.
   */
  async appendAgentLog(machineId: string, leaseId: string, lines: LogLine[]): Promise<number | null> {
    const ctx = await this.own(machineId, leaseId);
    if (!ctx) return null;
    return this.ds.transaction(async (m) => {
      await m.query(`SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE`, [ctx.deploymentId]);
      const [lease] = await m.query(`SELECT last_log_seq FROM leases WHERE id = $1 FOR UPDATE`, [leaseId]);
      let last: number = lease.last_log_seq;
      const fresh: LogEntryInput[] = [];
      for (const l of [...lines].sort((a, b) => a.seq - b.seq)) {
        if (l.seq <= last) continue;
        if (l.seq !== last + 1) break; // a gap: keep order; the agent resends from the ack
        last = l.seq;
        fresh.push({
          level: l.level,
          at: l.at,
          text: clampLogText(l.text),
          machineId: ctx.machineId,
          stepName: ctx.stepName,
          actionName: l.actionIndex !== undefined ? (ctx.actionNames[l.actionIndex] ?? null) : null,
        });
      }
      if (fresh.length) {
        await this.log.append(m, ctx.deploymentId, fresh);
        await m.query(`UPDATE leases SET last_log_seq = $2 WHERE id = $1`, [leaseId, last]);
      }
      return last;
    });
  }

  /** An action's state changed on the agent. Ignored once the lease is released (the result already settled it). */
  async actionUpdate(machineId: string, msg: AgentMessageOf<'lease.action'>): Promise<void> {
    const ctx = await this.own(machineId, msg.leaseId);
    if (!ctx || msg.actionIndex >= ctx.actionNames.length) return;
    await this.ds.transaction(async (m) => {
      await m.query(`SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE`, [ctx.deploymentId]);
      const [lease] = await m.query(`SELECT released_at FROM leases WHERE id = $1`, [msg.leaseId]);
      if (!lease || lease.released_at) return;
      await m.query(
        `UPDATE target_runs SET actions = jsonb_set(actions, $2::text[], (actions->($3::int)) || $4::jsonb) WHERE id = $1`,
        [ctx.targetRunId, `{${msg.actionIndex}}`, msg.actionIndex, JSON.stringify({ state: msg.state, exitCode: msg.exitCode ?? null })],
      );
    });
  }

  /**
   * Settles a target run from the agent's result and releases its lease (its slot frees). Returns the deployment id,
   * or null if the message is not this agent's. A result for a lease already released is a duplicate: no change.
   */
  async complete(machineId: string, msg: AgentMessageOf<'lease.result'>): Promise<{ deploymentId: string; duplicate: boolean } | null> {
    const ctx = await this.own(machineId, msg.leaseId);
    if (!ctx) return null;
    const duplicate = await this.ds.transaction(async (m) => {
      const [dep] = await m.query(`SELECT state FROM deployments WHERE id = $1 FOR UPDATE`, [ctx.deploymentId]);
      const [lease] = await m.query(`SELECT released_at FROM leases WHERE id = $1 FOR UPDATE`, [msg.leaseId]);
      if (!lease || lease.released_at) return true;
      // Only the deployment's cancel makes a target "cancelled"; a run stopped for any other reason failed.
      if (msg.state === 'cancelled' && dep.state !== 'cancelling') msg = { ...msg, state: 'failed', error: msg.error ?? 'stopped on the agent' };
      const [run]: TargetRunRow[] = await m.query(`SELECT * FROM target_runs WHERE id = $1 FOR UPDATE`, [ctx.targetRunId]);
      const actions = run.actions.map((a, i) => {
        const r = msg.actions.find((x) => x.index === i);
        if (r) return { ...a, state: r.state, exitCode: r.exitCode ?? null };
        // An action the agent never reached: skipped after a failure, cancelled on cancel.
        return a.state === 'pending' || a.state === 'running' ? { ...a, state: msg.state === 'cancelled' ? ('cancelled' as const) : ('skipped' as const) } : a;
      });
      await m.query(`UPDATE leases SET released_at = now(), state = 'released', outcome = $2 WHERE id = $1`, [msg.leaseId, msg.state]);
      await m.query(`UPDATE target_runs SET state = $2, actions = $3::jsonb, error = $4, finished_at = now() WHERE id = $1`, [
        ctx.targetRunId,
        msg.state,
        JSON.stringify(actions),
        msg.error ?? null,
      ]);
      const exit = msg.exitCode !== undefined && msg.exitCode !== null ? ` (exit code ${msg.exitCode})` : '';
      await this.log.append(m, ctx.deploymentId, [
        {
          level: msg.state === 'success' ? 'info' : msg.state === 'failed' ? 'error' : 'warn',
          text: `${ctx.stepName} on ${ctx.machineName} ${OUTCOME_TEXT[msg.state]}${exit}${msg.error ? `: ${msg.error}` : ''}`,
          machineId: ctx.machineId,
          stepName: ctx.stepName,
        },
      ]);
      return false;
    });
    return { deploymentId: ctx.deploymentId, duplicate };
  }

  /**
   * Expires leases whose agent went silent past the TTL: the target run fails as "agent lost", told apart from a
   * script's failure, and its slot frees. Safe to run on every node at once. Returns the deployments touched.
   */
  async expire(): Promise<string[]> {
    const due: Array<{ id: string; deployment_id: string }> = await this.ds.query(
      `SELECT id, deployment_id FROM leases WHERE released_at IS NULL AND expires_at < now() ORDER BY expires_at LIMIT 200`,
    );
    const touched = new Set<string>();
    for (const l of due) {
      // Read outside the transaction: inside it, only the transaction's own connection may be used.
      const ctx = await this.context(l.id);
      await this.ds.transaction(async (m) => {
        await m.query(`SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE`, [l.deployment_id]);
        const [lease]: LeaseRow[] = await m.query(`SELECT * FROM leases WHERE id = $1 AND released_at IS NULL AND expires_at < now() FOR UPDATE`, [l.id]);
        if (!lease) return;
        const reason = lease.state === 'offered' ? 'agent lost: the target never accepted the work' : `agent lost: no heartbeat for ${Math.round(this.config.leaseTtlMs / 1000)} s`;
        const [run]: TargetRunRow[] = await m.query(`SELECT * FROM target_runs WHERE id = $1 FOR UPDATE`, [lease.target_run_id]);
        const actions = run.actions.map((a) => (a.state === 'running' ? { ...a, state: 'failed' as const } : a.state === 'pending' ? { ...a, state: 'skipped' as const } : a));
        await m.query(`UPDATE leases SET released_at = now(), state = 'released', outcome = 'lost' WHERE id = $1`, [l.id]);
        await m.query(`UPDATE target_runs SET state = 'failed', error = $2, actions = $3::jsonb, finished_at = now() WHERE id = $1`, [run.id, reason, JSON.stringify(actions)]);
        await this.log.append(m, l.deployment_id, [{ level: 'error', text: `${ctx?.stepName ?? 'Step'} on ${run.machine_name} failed: ${reason}`, machineId: run.machine_id, stepName: ctx?.stepName }]);
        this.logger.warn('lease expired', { context: 'leases', leaseId: l.id, deploymentId: l.deployment_id, machine: run.machine_name });
        touched.add(l.deployment_id);
      });
    }
    return [...touched];
  }
}
