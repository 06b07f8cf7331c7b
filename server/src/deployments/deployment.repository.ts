/**
 * The deployment aggregate's one data-access home: every statement on `deployments`, `deployment_steps`,
 * `target_runs`, `leases`, `interruptions`, `output_variables`, `deployment_log` and `deployment_log_heads` is here,
 * with typed rows in and out. Services decide; this file only reads and writes. Raw SQL is kept where it earns its
 * place (row locks, one-statement rounds, batched `unnest` writes); the CRUD entities elsewhere stay on TypeORM.
 *
 * Transactions: `transaction(fn)` hands `fn` the transaction's EntityManager (`tx`); every method that takes a `tx`
 * must be given it while inside one. On the embedded database a statement sent through the pool from inside a
 * transaction waits for ever (one connection), so methods that may run either way take `db`, the manager or the
 * DataSource.
 *
 * Lock order, for every transaction on every node:
 *   0. a (project, environment) pair's queue lock, taken only by a deployment's creation (`insertDeployment`: an
 *      advisory lock held until commit, so deployments of a pair commit in the order of their `queue_seq`; a
 *      rollback takes it first with `lockQueue`, before the row of the deployment it rolls back);
 *   1. the deployment's row (`lockDeployment`, `lockOwnedDeployment`: FOR NO KEY UPDATE);
 *   1b. machines' locks, in key order, taken only by `takeLeases` under level 1 (advisory locks held until commit:
 *      two deployments cannot both see a machine free and both take a lease on it, on whichever nodes they run);
 *   2. an interruption's row (`lockInterruption`);
 *   3. lease rows, in id order when several (`lockLease`, `lockLeasesForLog`, `lockSuccesses`, `lockExpiredLease`),
 *      then target-run rows (`lockTargetRun`, or with their leases in `lockSuccesses`);
 *   4. the deployment's log head row, last (taken by `appendLog`, held until commit).
 * A transaction may skip levels but never goes back up: then no two transactions wait on each other in a cycle,
 * whether they are a dispatcher round, an agent's result, an operator's answer or a batch of log lines. The
 * deployment row is locked FOR NO KEY UPDATE, not FOR UPDATE: rows that reference it (log lines, leases) take a
 * key-share lock through their foreign key, and must not queue behind a round or a result.
 *
 * `deployment_steps` rows are written only under their deployment's lock (level 1), so they need no lock of their
 * own. A success result changes neither the deployment nor its steps: it takes levels 3 and 4 only (see
 * `lockSuccesses`), so a wave of results does not queue behind the dispatcher's rounds.
 */
import { Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import type { FailureKind } from '#shared/api/types.js';
import type { ReleaseEntity } from '../releases/release.entity.js';
import { returned } from '../database/sql.js';
import { SecretBox } from '../secrets/secret-box.js';
import type { RunState } from '../orchestration/planner.js';
import {
  ACTIVE_STATES_SQL,
  type DeploymentRow,
  type DeploymentState,
  type InterruptionKind,
  type InterruptionRow,
  type LeaseRow,
  type LogEntry,
  type LogEntryInput,
  type OutputVariableRow,
  type StepPolicy,
  type StepRow,
  type TargetAction,
  type TargetRunRow,
} from './deployment.types.js';

/**
 * The deployment a target run's machine is busy with, or NULL (see `machinesBusy`), for a row `x` of (run_id,
 * machine_id, since) and the deployment `$1`: another deployment's active lease on the machine, else another
 * deployment's target run waiting for it since earlier. Projects that allow concurrent work on machines count for
 * neither.
 */
const MACHINE_HOLDER = `coalesce(
  (SELECT l.deployment_id FROM leases l JOIN deployments od ON od.id = l.deployment_id JOIN projects op ON op.id = od.project_id
   WHERE l.machine_id = x.machine_id AND l.released_at IS NULL AND l.deployment_id <> $1 AND NOT op.allow_concurrent_on_machines LIMIT 1),
  (SELECT w.deployment_id FROM target_runs w JOIN deployments wd ON wd.id = w.deployment_id JOIN projects wp ON wp.id = wd.project_id
   WHERE w.machine_id = x.machine_id AND w.waiting_since IS NOT NULL AND w.state = 'pending' AND w.deployment_id <> $1
     AND wd.state = 'executing' AND NOT wp.allow_concurrent_on_machines AND (x.since IS NULL OR w.waiting_since < x.since)
   ORDER BY w.waiting_since LIMIT 1))`;

/** A release's newest deployment in one environment (its lifecycle progression shows it). */
export interface ReleaseLastDeployment {
  id: string;
  environment_id: string;
  state: DeploymentState;
  created_at: Date;
  finished_at: Date | null;
}

/** The transaction's manager, or the DataSource for a statement of its own. */
export type Db = EntityManager | DataSource;
type Process = ReleaseEntity['process'];

/** What an offer is built from: a lease joined to its target run, deployment, project, environment and machine. */
export interface OfferRow {
  id: string;
  deployment_id: string;
  step_index: number;
  purpose: 'run' | 'check';
  target_run_id: string;
  target_actions: TargetAction[];
  machine_name: string;
  machine_id: string;
  machine_roles: string[];
  release_id: string;
  project_id: string;
  project_name: string;
  keep_releases: number;
  environment_id: string;
  environment_name: string;
}

@Injectable()
export class DeploymentRepository {
  constructor(
    private readonly ds: DataSource,
    private readonly box: SecretBox,
  ) {}

  transaction<T>(fn: (tx: EntityManager) => Promise<T>): Promise<T> {
    return this.ds.transaction(fn);
  }

  // ------------------------------------------------------------------ deployments

  /**
   * Inserts a queued deployment. Its `queue_seq` (creation order) is taken under the (project, environment) pair's
   * queue lock, held until commit: a deployment with a later number can never be committed, and so start, before an
   * earlier one is visible to it.
   */
  async insertDeployment(
    tx: EntityManager,
    d: {
      releaseId: string;
      projectId: string;
      environmentId: string;
      guidedFailure: boolean;
      rollbackOnFailure?: boolean;
      /** The failed deployment whose failed targets this one retries. */
      retryOf?: string;
      /** The deployment this one rolls back. */
      rollbackOf?: string;
      /** The API key that asked for it. */
      createdBy?: { id: string; name: string } | null;
      specific: string[];
      excluded: string[];
      ownerNode: string;
      ownershipTtlSeconds: number;
      /** Scheduled: it waits `scheduled`, without an owner, until then (see `activateScheduled`). */
      queueAt?: Date | null;
      queueExpiresAt?: Date | null;
      trigger?: { kind: 'new-machine'; machineId: string } | null;
    },
  ): Promise<string> {
    await this.lockQueue(tx, d.projectId, d.environmentId);
    // created_at is read now, under the queue's lock, not at the transaction's start: two deployments created at once
    // then show the order they are queued in (queue_seq), which is the order they run in.
    const scheduled = !!d.queueAt;
    const [row] = returned<{ id: string }>(
      await tx.query(
        `INSERT INTO deployments (release_id, project_id, environment_id, state, guided_failure, specific_machine_ids, excluded_machine_ids, owner_node, owner_expires_at, rollback_on_failure, retry_of, rollback_of, created_by_key_id, created_by_name, queue_at, queue_expires_at, trigger, trigger_machine_id, created_at)
         VALUES ($1, $2, $3, $14, $4, $5, $6, $7, now() + make_interval(secs => $8), $9, $10, $11, $12, $13, $15, $16, $17, $18, clock_timestamp()) RETURNING id`,
        [
          d.releaseId,
          d.projectId,
          d.environmentId,
          d.guidedFailure,
          JSON.stringify(d.specific),
          JSON.stringify(d.excluded),
          scheduled ? null : d.ownerNode,
          d.ownershipTtlSeconds,
          d.rollbackOnFailure ?? false,
          d.retryOf ?? null,
          d.rollbackOf ?? null,
          d.createdBy?.id ?? null,
          d.createdBy?.name ?? null,
          scheduled ? 'scheduled' : 'queued',
          d.queueAt ?? null,
          d.queueExpiresAt ?? null,
          d.trigger?.kind ?? null,
          d.trigger?.machineId ?? null,
        ],
      ),
    );
    return row.id;
  }

  // ------------------------------------------------------------------ scheduled deployments

  /** Scheduled deployments whose time has come, oldest first. No lock: `activateScheduled` checks again. */
  async dueScheduled(limit: number): Promise<Array<Pick<DeploymentRow, 'id' | 'project_id' | 'environment_id'>>> {
    return this.ds.query(
      `SELECT id, project_id, environment_id FROM deployments WHERE state = 'scheduled' AND queue_at <= now() ORDER BY queue_at LIMIT $1`,
      [limit],
    );
  }

  /** Deployments not started by their `queue_expires_at` (scheduled, or queued behind another). No lock. */
  async expiredUnstarted(limit: number): Promise<Array<Pick<DeploymentRow, 'id' | 'project_id' | 'environment_id'>>> {
    return this.ds.query(
      `SELECT id, project_id, environment_id FROM deployments
       WHERE queue_expires_at IS NOT NULL AND started_at IS NULL AND queue_expires_at <= now() AND state IN ('scheduled', 'queued')
       ORDER BY queue_expires_at LIMIT $1`,
      [limit],
    );
  }

  /**
   * A scheduled deployment joins the queue now: `queued`, owned by `node`, with a new place in its pair's queue (taken
   * now, under the pair's queue lock the caller holds: it goes behind what was created while it waited, as if it were
   * created at its time). The caller holds its row (level 1) and read it `scheduled`.
   */
  async activateScheduled(tx: EntityManager, id: string, node: string, ttlSeconds: number): Promise<void> {
    await tx.query(
      `UPDATE deployments SET state = 'queued', queue_seq = nextval('deployments_queue_seq'), owner_node = $2,
         owner_expires_at = now() + make_interval(secs => $3)
       WHERE id = $1 AND state = 'scheduled'`,
      [id, node, ttlSeconds],
    );
  }

  /** A deployment that never started ends `cancelled`, with why (`error`). The caller holds its row (level 1). */
  async cancelUnstarted(tx: EntityManager, id: string, reason: string): Promise<void> {
    await tx.query(
      `UPDATE deployments SET state = 'cancelled', finished_at = now(), owner_node = NULL, error = $2
       WHERE id = $1 AND started_at IS NULL AND state IN ('scheduled', 'queued', 'paused')`,
      [id, reason],
    );
  }

  // ------------------------------------------------------------------ target triggers

  /**
   * The release of the project's newest successful deployment to the environment, if any (what a new machine there
   * gets). No lock: a finished deployment does not change.
   */
  async lastSuccessfulRelease(projectId: string, environmentId: string, db: Db = this.ds): Promise<string | undefined> {
    const [row] = await db.query(
      `SELECT release_id FROM deployments WHERE project_id = $1 AND environment_id = $2 AND state = 'success'
       ORDER BY created_at DESC LIMIT 1`,
      [projectId, environmentId],
    );
    return row?.release_id;
  }

  /** A trigger's deployment for this machine, project and environment that has not ended (scheduled or active). */
  async pendingTriggered(
    tx: EntityManager,
    machineId: string,
    projectId: string,
    environmentId: string,
  ): Promise<string | undefined> {
    const [row] = await tx.query(
      `SELECT id FROM deployments WHERE trigger_machine_id = $1 AND project_id = $2 AND environment_id = $3
         AND state IN ('scheduled', ${ACTIVE_STATES_SQL}) LIMIT 1`,
      [machineId, projectId, environmentId],
    );
    return row?.id;
  }

  // ------------------------------------------------------------------ retention

  /**
   * One batch of the retention sweep, in its own transaction: at most `limit` finished deployments created (and
   * finished) before `cutoff`, oldest first, deleted with everything that hangs off them (steps, target runs, leases,
   * interruptions, output variables, log lines and head: their foreign keys cascade). Kept whatever their age: per
   * project and environment the newest finished deployment and the newest successful one (what a rollback or a target
   * trigger deploys from), and any deployment an unfinished one retries or rolls back. Rows another transaction holds
   * are skipped (SKIP LOCKED), and the sweep runs on one node at a time (`pg_try_advisory_xact_lock`): `null` when
   * another node holds it. Returns what was deleted.
   */
  async deleteExpiredBatch(
    cutoff: Date,
    limit: number,
  ): Promise<{ deployments: number; logLines: number; ids: string[] } | null> {
    return this.transaction(async (tx) => {
      const [lock] = await tx.query(`SELECT pg_try_advisory_xact_lock(hashtextextended('cuttle/retention', 0)) AS ok`);
      if (!lock.ok) return null;
      const rows: Array<{ id: string }> = await tx.query(
        `SELECT d.id FROM deployments d
         WHERE d.state IN ('success', 'failed', 'cancelled') AND d.created_at < $1 AND coalesce(d.finished_at, d.created_at) < $1
           AND EXISTS (SELECT 1 FROM deployments n WHERE n.project_id = d.project_id AND n.environment_id = d.environment_id
                       AND n.state IN ('success', 'failed', 'cancelled') AND (n.created_at, n.id) > (d.created_at, d.id))
           AND (d.state <> 'success' OR EXISTS (SELECT 1 FROM deployments n WHERE n.project_id = d.project_id
                AND n.environment_id = d.environment_id AND n.state = 'success' AND (n.created_at, n.id) > (d.created_at, d.id)))
           AND NOT EXISTS (SELECT 1 FROM deployments a WHERE (a.retry_of = d.id OR a.rollback_of = d.id)
                           AND a.state IN ('scheduled', ${ACTIVE_STATES_SQL}))
         ORDER BY d.created_at LIMIT $2
         FOR UPDATE OF d SKIP LOCKED`,
        [cutoff, limit],
      );
      const ids = rows.map((r) => r.id);
      if (!ids.length) return { deployments: 0, logLines: 0, ids };
      const [lines] = await tx.query(
        `WITH gone AS (DELETE FROM deployment_log WHERE deployment_id = ANY($1::uuid[]) RETURNING 1) SELECT count(*)::int AS n FROM gone`,
        [ids],
      );
      const gone = returned(await tx.query(`DELETE FROM deployments WHERE id = ANY($1::uuid[]) RETURNING id`, [ids]));
      return { deployments: gone.length, logLines: lines.n, ids };
    });
  }

  /**
   * Level 0: the (project, environment) pair's queue lock, held until commit (re-entrant within the transaction).
   * `insertDeployment` takes it; a transaction that locks a deployment's row before creating another deployment of
   * the pair (a rollback) takes it first, so that it never waits for level 0 while holding level 1.
   */
  async lockQueue(tx: EntityManager, projectId: string, environmentId: string): Promise<void> {
    await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/' || $2::text, 0))`, [
      projectId,
      environmentId,
    ]);
  }

  /**
   * The deployment that rolls this one back. The caller holds this one's row lock (level 1), under which it read the
   * column empty: so it is set once.
   */
  async setRolledBackBy(tx: EntityManager, id: string, rollbackId: string): Promise<void> {
    await tx.query(`UPDATE deployments SET rolled_back_by = $2 WHERE id = $1`, [id, rollbackId]);
  }

  /**
   * What a rollback of `d` deploys: the newest successful deployment of the same project and environment created
   * before `d` whose release is another one; undefined when there is none. No lock: a finished deployment's state
   * and release do not change.
   */
  async previousSuccess(
    d: Pick<DeploymentRow, 'project_id' | 'environment_id' | 'release_id' | 'created_at'>,
    db: Db = this.ds,
  ): Promise<{ id: string; release_id: string } | undefined> {
    const [row] = await db.query(
      `SELECT id, release_id FROM deployments
       WHERE project_id = $1 AND environment_id = $2 AND state = 'success' AND release_id <> $3 AND created_at < $4
       ORDER BY created_at DESC LIMIT 1`,
      [d.project_id, d.environment_id, d.release_id, d.created_at],
    );
    return row;
  }

  /**
   * A release's history for its lifecycle progression: the environments where it has a succeeded deployment, and
   * per environment its newest deployment. No lock: a deployment created or finished meanwhile is as if it came
   * just after the read (the lifecycle check of a new deployment reads in the creating transaction).
   */
  async releaseHistory(
    releaseId: string,
    db: Db = this.ds,
  ): Promise<{ succeeded: Set<string>; last: ReleaseLastDeployment[] }> {
    const last: ReleaseLastDeployment[] = await db.query(
      `SELECT DISTINCT ON (environment_id) id, environment_id, state, created_at, finished_at
       FROM deployments WHERE release_id = $1 ORDER BY environment_id, created_at DESC`,
      [releaseId],
    );
    const ok: Array<{ environment_id: string }> = await db.query(
      `SELECT DISTINCT environment_id FROM deployments WHERE release_id = $1 AND state = 'success'`,
      [releaseId],
    );
    return { succeeded: new Set(ok.map((r) => r.environment_id)), last };
  }

  /**
   * The machines that got a deployment's release: those with a target run in it that started, newest first (by the
   * latest start of their target runs in it). What a rollback undoes, in the order it undoes it. No lock: read of a
   * finished deployment.
   */
  machinesThatGotRelease(
    deploymentId: string,
    db: Db = this.ds,
  ): Promise<Array<{ machine_id: string; machine_name: string; got_at: Date }>> {
    return db.query(
      `SELECT machine_id, max(machine_name) AS machine_name, max(started_at) AS got_at FROM target_runs
       WHERE deployment_id = $1 AND machine_id IS NOT NULL AND started_at IS NOT NULL
       GROUP BY machine_id ORDER BY got_at DESC, machine_name`,
      [deploymentId],
    );
  }

  /**
   * Per step name, the median duration in seconds of a target run that finished (success or failed) in the newest
   * `limit` finished deployments of a project, in any environment: what the preview's estimates are made of. No
   * lock (a read of finished work).
   */
  async stepDurationMedians(projectId: string, limit: number, db: Db = this.ds): Promise<Map<string, number>> {
    const rows: Array<{ name: string; median: number | string }> = await db.query(
      `SELECT s.name, percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM t.finished_at - t.started_at)) AS median
       FROM (SELECT id FROM deployments WHERE project_id = $1 AND state IN ('success', 'failed', 'cancelled')
             ORDER BY created_at DESC LIMIT $2) d
       JOIN deployment_steps s ON s.deployment_id = d.id
       JOIN target_runs t ON t.deployment_id = d.id AND t.step_index = s.step_index
       WHERE t.state IN ('success', 'failed') AND t.started_at IS NOT NULL AND t.finished_at IS NOT NULL
       GROUP BY s.name`,
      [projectId, limit],
    );
    return new Map(rows.map((r) => [r.name, Number(r.median)]));
  }

  async findDeployment(id: string, db: Db = this.ds): Promise<DeploymentRow | undefined> {
    const [row] = await db.query(`SELECT * FROM deployments WHERE id = $1`, [id]);
    return row;
  }

  /** Level 1 of the lock order. */
  async lockDeployment(tx: EntityManager, id: string): Promise<DeploymentRow | undefined> {
    const [row] = await tx.query(`SELECT * FROM deployments WHERE id = $1 FOR NO KEY UPDATE`, [id]);
    return row;
  }

  /** Level 1, only if this node owns the deployment. */
  async lockOwnedDeployment(tx: EntityManager, id: string, node: string): Promise<DeploymentRow | undefined> {
    const [row] = await tx.query(`SELECT * FROM deployments WHERE id = $1 AND owner_node = $2 FOR NO KEY UPDATE`, [
      id,
      node,
    ]);
    return row;
  }

  /** A deployment's steps and target runs (in order) and its release's version: what the API shows. */
  async readView(
    d: DeploymentRow,
    db: Db = this.ds,
  ): Promise<{ steps: StepRow[]; runs: TargetRunRow[]; releaseVersion: string }> {
    const [steps, runs, [release]]: [StepRow[], TargetRunRow[], Array<{ version: string }>] = await Promise.all([
      db.query(`SELECT * FROM deployment_steps WHERE deployment_id = $1 ORDER BY step_index`, [d.id]),
      db.query(`SELECT * FROM target_runs WHERE deployment_id = $1 ORDER BY step_index, position`, [d.id]),
      db.query(`SELECT version FROM releases WHERE id = $1`, [d.release_id]),
    ]);
    return { steps, runs, releaseVersion: release.version };
  }

  /**
   * Steps, target runs and whether a person is awaited, in one round trip (a dispatcher round's cost is mostly round
   * trips). Read after the deployment's lock, by a statement that sees what was committed before it.
   */
  async readRound(
    tx: EntityManager,
    d: DeploymentRow,
  ): Promise<{ steps: StepRow[]; runs: TargetRunRow[]; awaitsPerson: boolean; concurrentOnMachines: boolean }> {
    const [row] = await tx.query(
      `SELECT (SELECT coalesce(json_agg(s ORDER BY s.step_index), '[]') FROM deployment_steps s WHERE s.deployment_id = $1) AS steps,
              (SELECT coalesce(json_agg(t ORDER BY t.step_index, t.position), '[]') FROM target_runs t WHERE t.deployment_id = $1) AS runs,
              EXISTS (SELECT 1 FROM interruptions i WHERE i.deployment_id = $1 AND i.state = 'pending') AS awaits_person,
              (SELECT allow_concurrent_on_machines FROM projects WHERE id = $2) AS concurrent`,
      [d.id, d.project_id],
    );
    // json_agg gives times as text: the machines' line and the bake compare them, so they are dates again.
    const runs: TargetRunRow[] = row.runs.map((r: TargetRunRow) => ({
      ...r,
      waiting_since: r.waiting_since ? new Date(r.waiting_since) : null,
    }));
    const steps: StepRow[] = row.steps.map((s: StepRow) => ({
      ...s,
      gate_until: s.gate_until ? new Date(s.gate_until) : null,
    }));
    return { steps, runs, awaitsPerson: row.awaits_person, concurrentOnMachines: !!row.concurrent };
  }

  /**
   * The active deployment of the same project and environment directly ahead of this one in creation order, which it
   * waits for (one at a time per pair); undefined when none is.
   */
  async queuedBehind(
    d: Pick<DeploymentRow, 'project_id' | 'environment_id' | 'queue_seq'>,
    db: Db = this.ds,
  ): Promise<string | undefined> {
    const [row] = await db.query(
      `SELECT id FROM deployments WHERE project_id = $1 AND environment_id = $2 AND state IN (${ACTIVE_STATES_SQL}) AND queue_seq < $3
       ORDER BY queue_seq DESC LIMIT 1`,
      [d.project_id, d.environment_id, d.queue_seq],
    );
    return row?.id;
  }

  /** Deployments, newest first; a queued one carries `queued_behind` (see queuedBehind). */
  listDeployments(f: {
    projectId?: string;
    environmentId?: string;
    state?: string;
    /** A key's scope: only deployments in these environments and projects. */
    environmentIds?: string[] | null;
    projectIds?: string[] | null;
    limit: number;
  }): Promise<Array<DeploymentRow & { queued_behind: string | null }>> {
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, value: unknown) => {
      params.push(value);
      where.push(sql.replace('?', `$${params.length}`));
    };
    if (f.projectId) add('d.project_id = ?', f.projectId);
    if (f.environmentId) add('d.environment_id = ?', f.environmentId);
    if (f.state) add('d.state = ?', f.state);
    if (f.environmentIds) add('d.environment_id = ANY(?::uuid[])', f.environmentIds);
    if (f.projectIds) add('d.project_id = ANY(?::uuid[])', f.projectIds);
    params.push(f.limit);
    return this.ds.query(
      `SELECT d.*, CASE WHEN d.state = 'queued' THEN (
         SELECT p.id FROM deployments p WHERE p.project_id = d.project_id AND p.environment_id = d.environment_id
           AND p.state IN (${ACTIVE_STATES_SQL}) AND p.queue_seq < d.queue_seq ORDER BY p.queue_seq DESC LIMIT 1) END AS queued_behind
       FROM deployments d ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY d.created_at DESC LIMIT $${params.length}`,
      params,
    );
  }

  /** A deployment's release's process: immutable, so it may be read outside any lock. */
  async processOf(deploymentId: string, db: Db = this.ds): Promise<Process | undefined> {
    const [row] = await db.query(
      `SELECT r.process FROM deployments d JOIN releases r ON r.id = d.release_id WHERE d.id = $1`,
      [deploymentId],
    );
    return row?.process;
  }

  /** The release's variables of a deployment (for its secrets). */
  async releaseVariablesOf(deploymentId: string): Promise<ReleaseEntity['variables']> {
    const [row] = await this.ds.query(
      `SELECT r.variables FROM deployments d JOIN releases r ON r.id = d.release_id WHERE d.id = $1`,
      [deploymentId],
    );
    return row?.variables ?? [];
  }

  async setDeploymentState(tx: EntityManager, id: string, state: DeploymentState): Promise<void> {
    await tx.query(`UPDATE deployments SET state = $2 WHERE id = $1`, [id, state]);
  }

  /** The operator paused it: it keeps its place in the queue and its running targets; nothing new starts. */
  async pauseDeployment(tx: EntityManager, id: string): Promise<void> {
    await tx.query(`UPDATE deployments SET state = 'paused', paused_at = now() WHERE id = $1`, [id]);
  }

  /** Resumed: back to queued when it never started, else executing (the next round says whether a person is awaited). */
  async unpauseDeployment(tx: EntityManager, id: string): Promise<void> {
    await tx.query(
      `UPDATE deployments SET state = CASE WHEN started_at IS NULL THEN 'queued' ELSE 'executing' END, paused_at = NULL WHERE id = $1 AND state = 'paused'`,
      [id],
    );
  }

  async startDeployment(tx: EntityManager, id: string): Promise<void> {
    await tx.query(`UPDATE deployments SET state = 'executing', started_at = now() WHERE id = $1`, [id]);
  }

  async finishDeployment(tx: EntityManager, id: string, outcome: 'success' | 'failed' | 'cancelled'): Promise<void> {
    await tx.query(`UPDATE deployments SET state = $2, finished_at = now(), owner_node = NULL WHERE id = $1`, [
      id,
      outcome,
    ]);
  }

  /** A person is awaited now (an interruption was opened). */
  async markWaiting(tx: EntityManager, id: string): Promise<void> {
    await tx.query(`UPDATE deployments SET state = 'waiting' WHERE id = $1 AND state IN ('queued', 'executing')`, [id]);
  }

  /** Back to executing once no interruption of the deployment is pending. */
  async resumeIfNoneWaiting(tx: EntityManager, id: string): Promise<void> {
    await tx.query(
      `UPDATE deployments SET state = 'executing' WHERE id = $1 AND state = 'waiting' AND NOT EXISTS (SELECT 1 FROM interruptions WHERE deployment_id = $1 AND state = 'pending')`,
      [id],
    );
  }

  /**
   * Takes or renews this node's ownership of active deployments nobody else holds (or only `onlyId`); returns the
   * ids it holds now.
   */
  async claimOwnership(node: string, ttlSeconds: number, onlyId?: string): Promise<string[]> {
    const rows = returned<{ id: string }>(
      await this.ds.query(
        `UPDATE deployments SET owner_node = $1, owner_expires_at = now() + make_interval(secs => $2)
         WHERE state IN (${ACTIVE_STATES_SQL}) ${onlyId ? 'AND id = $3' : ''}
           AND (owner_node IS NULL OR owner_node = $1 OR owner_expires_at < now())
         RETURNING id`,
        onlyId ? [node, ttlSeconds, onlyId] : [node, ttlSeconds],
      ),
    );
    return rows.map((r) => r.id);
  }

  /** A deployment's last log sequence and its state; undefined when there is no such deployment. */
  async logHead(id: string): Promise<{ seq: number; state: DeploymentState } | undefined> {
    const [row] = await this.ds.query(
      `SELECT COALESCE(h.seq, 0) AS log_seq, d.state FROM deployments d LEFT JOIN deployment_log_heads h ON h.deployment_id = d.id WHERE d.id = $1`,
      [id],
    );
    return row ? { seq: Number(row.log_seq), state: row.state } : undefined;
  }

  // ------------------------------------------------------------------ steps

  async insertSteps(
    tx: EntityManager,
    deploymentId: string,
    steps: Array<{
      index: number;
      name: string;
      state: RunState;
      window: number;
      maxFailures: number;
      condition: string;
      startTrigger: string;
      skipReason: string | null;
      batchCount: number;
      policy: StepPolicy;
    }>,
  ): Promise<void> {
    if (!steps.length) return;
    await tx.query(
      `INSERT INTO deployment_steps (deployment_id, step_index, name, state, window_size, max_failures, condition, start_trigger, skip_reason, batch_count, policy)
       SELECT $1, x.i, x.n, x.s, x.w, x.f, x.c, x.t, x.r, x.b, x.p FROM unnest($2::int[], $3::text[], $4::text[], $5::int[], $6::int[], $7::text[], $8::text[], $9::text[], $10::int[], $11::jsonb[]) AS x(i, n, s, w, f, c, t, r, b, p)`,
      [
        deploymentId,
        steps.map((s) => s.index),
        steps.map((s) => s.name),
        steps.map((s) => s.state),
        steps.map((s) => s.window),
        steps.map((s) => s.maxFailures),
        steps.map((s) => s.condition),
        steps.map((s) => s.startTrigger),
        steps.map((s) => s.skipReason),
        steps.map((s) => s.batchCount),
        steps.map((s) => JSON.stringify(s.policy)),
      ],
    );
  }

  /** A step started (`running`: started_at) or ended (finished_at). */
  async setStepState(tx: EntityManager, deploymentId: string, stepIndex: number, state: RunState): Promise<void> {
    const col = state === 'running' ? 'started_at' : 'finished_at';
    await tx.query(
      `UPDATE deployment_steps SET state = $3, ${col} = now() WHERE deployment_id = $1 AND step_index = $2`,
      [deploymentId, stepIndex, state],
    );
  }

  /** A step's batch and gate (under the deployment's lock, as every write of a step). */
  async setStepGate(
    tx: EntityManager,
    deploymentId: string,
    stepIndex: number,
    g: { currentBatch: number; gate: string | null; gateUntil: Date | null },
  ): Promise<void> {
    await tx.query(
      `UPDATE deployment_steps SET current_batch = $3, gate = $4, gate_until = $5 WHERE deployment_id = $1 AND step_index = $2`,
      [deploymentId, stepIndex, g.currentBatch, g.gate, g.gateUntil],
    );
  }

  async abortStep(tx: EntityManager, deploymentId: string, stepIndex: number): Promise<void> {
    await tx.query(`UPDATE deployment_steps SET aborted = true WHERE deployment_id = $1 AND step_index = $2`, [
      deploymentId,
      stepIndex,
    ]);
  }

  // ------------------------------------------------------------------ target runs

  async insertTargetRuns(
    tx: EntityManager,
    deploymentId: string,
    stepIndex: number,
    state: RunState,
    actions: TargetAction[],
    targets: Array<{ id: string | null; name: string; batch: number }>,
  ): Promise<void> {
    await tx.query(
      `INSERT INTO target_runs (deployment_id, step_index, machine_id, machine_name, position, state, actions, batch)
       SELECT $1, $2, mid, mname, pos, $3, $4::jsonb, b FROM unnest($5::uuid[], $6::text[], $7::int[], $8::int[]) AS x(mid, mname, pos, b)`,
      [
        deploymentId,
        stepIndex,
        state,
        JSON.stringify(actions),
        targets.map((t) => t.id),
        targets.map((t) => t.name),
        targets.map((_, i) => i),
        targets.map((t) => t.batch),
      ],
    );
  }

  /** Level 3 (after the target run's lease, when there is one). */
  async lockTargetRun(tx: EntityManager, id: string): Promise<TargetRunRow> {
    const [row] = await tx.query(`SELECT * FROM target_runs WHERE id = $1 FOR UPDATE`, [id]);
    return row;
  }

  /**
   * A target run the planner settles without running it: its pending actions take the same state; `reason` says why
   * it was skipped (an unavailable machine).
   */
  async settleUnstarted(tx: EntityManager, targetRunId: string, state: RunState, reason?: string): Promise<void> {
    await tx.query(
      `UPDATE target_runs SET state = $2, skip_reason = $3, actions = (SELECT jsonb_agg(CASE WHEN a->>'state' = 'pending' THEN jsonb_set(a, '{state}', to_jsonb($2::text)) ELSE a END ORDER BY i) FROM jsonb_array_elements(actions) WITH ORDINALITY AS x(a, i)) WHERE id = $1`,
      [targetRunId, state, reason ?? null],
    );
  }

  /**
   * A target run starts without a lease: a step on the server, or a target whose next action is a manual
   * intervention (`forPerson`: it waits for a person, holding its place in the window). Resuming after a manual
   * intervention is not a new attempt.
   */
  async startTargetRun(tx: EntityManager, id: string, forPerson = false): Promise<void> {
    await tx.query(
      `UPDATE target_runs SET state = 'running', attempt = attempt + CASE WHEN resume THEN 0 ELSE 1 END,
         started_at = CASE WHEN resume THEN started_at ELSE now() END, resume = false, waiting_for = $2, waiting_since = NULL
       WHERE id = $1`,
      [id, forPerson ? 'person' : null],
    );
  }

  /** The target run waits for a person (its manual intervention), holding its place in the window. */
  async waitForPerson(tx: EntityManager, id: string, actions: TargetAction[]): Promise<void> {
    await tx.query(`UPDATE target_runs SET waiting_for = 'person', actions = $2::jsonb WHERE id = $1`, [
      id,
      JSON.stringify(actions),
    ]);
  }

  /** A person proceeded past a target's manual intervention: it goes on from its next action with its next lease. */
  async resumeTargetRun(tx: EntityManager, id: string, actions: TargetAction[]): Promise<void> {
    await tx.query(
      `UPDATE target_runs SET state = 'pending', resume = true, waiting_for = NULL, actions = $2::jsonb WHERE id = $1`,
      [id, JSON.stringify(actions)],
    );
  }

  /** The bake's health check is due on these target runs. */
  async markChecksDue(tx: EntityManager, targetRunIds: string[]): Promise<void> {
    if (targetRunIds.length)
      await tx.query(`UPDATE target_runs SET bake_check = 'pending' WHERE id = ANY($1::uuid[])`, [targetRunIds]);
  }

  /**
   * A bake check ended: `success` leaves the target as it was; `failed` fails it (it counts against the step's
   * budget); null (a cancel) leaves it undone.
   */
  async settleCheck(
    tx: EntityManager,
    id: string,
    result: 'success' | 'failed' | null,
    failure?: { error: string; kind: FailureKind },
  ): Promise<void> {
    if (result === 'failed' && failure)
      await tx.query(
        `UPDATE target_runs SET bake_check = 'failed', state = 'failed', error = $2, failure_kind = $3, finished_at = now() WHERE id = $1`,
        [id, failure.error, failure.kind],
      );
    else await tx.query(`UPDATE target_runs SET bake_check = $2 WHERE id = $1`, [id, result]);
  }

  /** A target run ends: its state, and its actions and error when given (a success on the server keeps both). */
  async finishTargetRun(
    tx: EntityManager,
    id: string,
    state: RunState,
    change: {
      actions?: TargetAction[];
      error?: string | null;
      failureKind?: FailureKind | null;
      started?: boolean;
    } = {},
  ): Promise<void> {
    const sets = ['state = $2', 'finished_at = now()'];
    const params: unknown[] = [id, state];
    if (change.actions) sets.push(`actions = $${params.push(JSON.stringify(change.actions))}::jsonb`);
    if (change.error !== undefined) sets.push(`error = $${params.push(change.error)}`);
    if (change.failureKind !== undefined) sets.push(`failure_kind = $${params.push(change.failureKind)}`);
    if (change.started) sets.push('started_at = now()');
    await tx.query(`UPDATE target_runs SET ${sets.join(', ')} WHERE id = $1`, params);
  }

  /** A target run's actions (and its failure, when given) change, its state does not. */
  async setTargetActions(
    tx: EntityManager,
    id: string,
    actions: TargetAction[],
    failure?: { error: string | null; kind: FailureKind },
  ): Promise<void> {
    if (!failure)
      await tx.query(`UPDATE target_runs SET actions = $2::jsonb WHERE id = $1`, [id, JSON.stringify(actions)]);
    else
      await tx.query(`UPDATE target_runs SET actions = $2::jsonb, error = $3, failure_kind = $4 WHERE id = $1`, [
        id,
        JSON.stringify(actions),
        failure.error,
        failure.kind,
      ]);
  }

  /** A target run goes back to pending to run again (guided failure's retry). */
  async resetTargetRun(tx: EntityManager, id: string, actions: TargetAction[]): Promise<void> {
    await tx.query(
      `UPDATE target_runs SET state = 'pending', actions = $2::jsonb, error = NULL, failure_kind = NULL WHERE id = $1`,
      [id, JSON.stringify(actions)],
    );
  }

  /** Target runs that waited on closed interruptions end cancelled, unless a lease of theirs is still active. */
  async cancelWaitingTargetRuns(tx: EntityManager, targetRunIds: string[]): Promise<void> {
    for (const id of targetRunIds) {
      await tx.query(
        `UPDATE target_runs SET state = 'cancelled', finished_at = now(),
           actions = (SELECT jsonb_agg(CASE WHEN a->>'state' IN ('pending', 'running') THEN jsonb_set(a, '{state}', '"cancelled"') ELSE a END ORDER BY i) FROM jsonb_array_elements(actions) WITH ORDINALITY AS x(a, i))
         WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM leases WHERE target_run_id = $1 AND released_at IS NULL)`,
        [id],
      );
    }
  }

  /**
   * An action's state changed on the agent: recorded only while the lease is active (a late "running" never reopens
   * a settled target). One statement; it locks the lease row first, as a result does, so the two are ordered.
   */
  async updateActionWhileLeased(
    leaseId: string,
    targetRunId: string,
    actionIndex: number,
    patch: { state: string; exitCode: number | null },
  ): Promise<void> {
    await this.ds.query(
      `WITH l AS (SELECT id FROM leases WHERE id = $5 AND released_at IS NULL FOR UPDATE)
       UPDATE target_runs SET actions = jsonb_set(actions, $2::text[], (actions->($3::int)) || $4::jsonb) WHERE id = $1 AND EXISTS (SELECT 1 FROM l)`,
      [targetRunId, `{${actionIndex}}`, actionIndex, JSON.stringify(patch), leaseId],
    );
  }

  // ------------------------------------------------------------------ machines' line

  /**
   * Which of these target runs (of deployment `deploymentId`) find their machine busy, and with which deployment: a
   * machine is busy for a target run while another deployment holds an active lease on it, or while another
   * deployment's target run has been waiting for it longer (its line: who began waiting first goes first). A project
   * that allows concurrent work on machines neither waits nor holds anyone up. Read under the deployment's lock; the
   * lease's take checks again under the machines' locks.
   */
  async machinesBusy(
    tx: EntityManager,
    deploymentId: string,
    runs: Array<{ id: string; machineId: string; waitingSince: Date | null }>,
  ): Promise<Map<string, string>> {
    if (!runs.length) return new Map();
    const rows: Array<{ run_id: string; holder: string | null }> = await tx.query(
      `SELECT x.run_id, ${MACHINE_HOLDER} AS holder FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[]) AS x(run_id, machine_id, since)`,
      [deploymentId, runs.map((r) => r.id), runs.map((r) => r.machineId), runs.map((r) => r.waitingSince)],
    );
    return new Map(rows.filter((r) => r.holder).map((r) => [r.run_id, r.holder!]));
  }

  /** Level 1b: machines' advisory locks, in key order, held until commit (re-entrant within the transaction). */
  async lockMachines(tx: EntityManager, machineIds: string[]): Promise<void> {
    if (!machineIds.length) return;
    await tx.query(
      `SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended('machine/' || m, 0) AS k FROM unnest($1::text[]) AS m ORDER BY k) AS keys`,
      [machineIds],
    );
  }

  /** These target runs wait for their machines; a run already waiting keeps its place in the line. */
  async markWaitingForMachine(tx: EntityManager, targetRunIds: string[]): Promise<void> {
    if (!targetRunIds.length) return;
    await tx.query(
      `UPDATE target_runs SET waiting_for = 'machine', waiting_since = coalesce(waiting_since, now()) WHERE id = ANY($1::uuid[])`,
      [targetRunIds],
    );
  }

  // ------------------------------------------------------------------ leases

  /**
   * Takes free slots `0 <= slot < window` of a step for target runs, in their order, as many as are free, and marks
   * those target runs running; returns the leases taken. The caller holds the deployment's lock; the partial unique
   * index over active (deployment, step, slot) refuses a second holder of a slot even if a path forgot the lock.
   * One statement for every target of a round: the free slots are read, paired with the targets in order, taken,
   * and the target runs updated, in one round trip.
   */
  async takeLeases(
    tx: EntityManager,
    p: {
      deploymentId: string;
      stepIndex: number;
      window: number;
      node: string;
      ttlSeconds: number;
      /** The machine rule applies (the project does not allow concurrent work on machines). */
      exclusive: boolean;
      /** `run`: the target's actions (it starts running); `check`: its bake check (the check starts running). */
      purpose?: 'run' | 'check';
      targets: Array<{ targetRunId: string; machineId: string; waitingSince: Date | null }>;
    },
  ): Promise<Array<{ id: string; slot: number; targetRunId: string; machineId: string }>> {
    const check = p.purpose === 'check';
    // Level 1b: the machines' locks (held already when the caller took them first: they are re-entrant), then the
    // machine rule checked again by the insert itself.
    if (p.exclusive)
      await this.lockMachines(
        tx,
        p.targets.map((t) => t.machineId),
      );
    const rows = returned<{ id: string; slot: number; target_run_id: string; machine_id: string }>(
      await tx.query(
        `WITH free AS (
           SELECT s AS slot, row_number() OVER (ORDER BY s) AS n FROM generate_series(0, $4::int - 1) AS s
           WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.deployment_id = $1 AND l.step_index = $2 AND l.released_at IS NULL AND l.slot = s)
         ), wanted AS (
           SELECT x.target_run_id, x.machine_id, row_number() OVER (ORDER BY x.n) AS n
           FROM unnest($6::uuid[], $7::uuid[], $8::timestamptz[]) WITH ORDINALITY AS x(target_run_id, machine_id, since, n)
           WHERE NOT $9::boolean OR ${MACHINE_HOLDER} IS NULL
         ), taken AS (
           INSERT INTO leases (deployment_id, step_index, slot, target_run_id, machine_id, node_id, expires_at, purpose)
           SELECT $1, $2, f.slot, w.target_run_id, w.machine_id, $3, now() + make_interval(secs => $5), $10
           FROM wanted w JOIN free f ON f.n = w.n
           ON CONFLICT DO NOTHING RETURNING id, slot, target_run_id, machine_id
         ), started AS (
           UPDATE target_runs SET ${
             check
               ? `bake_check = 'running'`
               : `state = 'running', attempt = attempt + CASE WHEN resume THEN 0 ELSE 1 END,
                  started_at = CASE WHEN resume THEN started_at ELSE now() END, resume = false,
                  error = NULL, failure_kind = NULL, waiting_for = NULL, waiting_since = NULL`
           }
           WHERE id IN (SELECT target_run_id FROM taken)
         )
         SELECT * FROM taken`,
        [
          p.deploymentId,
          p.stepIndex,
          p.node,
          p.window,
          p.ttlSeconds,
          p.targets.map((c) => c.targetRunId),
          p.targets.map((c) => c.machineId),
          p.targets.map((c) => c.waitingSince),
          p.exclusive,
          check ? 'check' : 'run',
        ],
      ),
    );
    return rows.map((r) => ({ id: r.id, slot: r.slot, targetRunId: r.target_run_id, machineId: r.machine_id }));
  }

  /** A lease with its target run's machine name and its release's process (for `LeaseContext`). */
  async leaseWithProcess(leaseId: string): Promise<
    | {
        lease: Pick<LeaseRow, 'id' | 'deployment_id' | 'machine_id' | 'target_run_id' | 'step_index' | 'purpose'>;
        machineName: string;
        process: Process;
      }
    | undefined
  > {
    const [row] = await this.ds.query(
      `SELECT l.id, l.deployment_id, l.machine_id, l.target_run_id, l.step_index, l.purpose, t.machine_name, r.process
       FROM leases l JOIN target_runs t ON t.id = l.target_run_id JOIN deployments d ON d.id = l.deployment_id JOIN releases r ON r.id = d.release_id
       WHERE l.id = $1`,
      [leaseId],
    );
    return row ? { lease: row, machineName: row.machine_name, process: row.process } : undefined;
  }

  /** Active leases joined to what their offers need. */
  offerRows(leaseIds: string[]): Promise<OfferRow[]> {
    return this.ds.query(
      `SELECT l.id, l.deployment_id, l.step_index, l.purpose, t.id AS target_run_id, t.actions AS target_actions, t.machine_name, t.machine_id,
              mc.roles AS machine_roles, d.release_id, p.id AS project_id, p.name AS project_name, p.keep_releases, e.id AS environment_id, e.name AS environment_name
       FROM leases l JOIN target_runs t ON t.id = l.target_run_id JOIN deployments d ON d.id = l.deployment_id
       JOIN projects p ON p.id = d.project_id JOIN environments e ON e.id = d.environment_id JOIN machines mc ON mc.id = t.machine_id
       WHERE l.id = ANY($1::uuid[]) AND l.released_at IS NULL`,
      [leaseIds],
    );
  }

  /** Offered leases of these machines not accepted yet, oldest first. */
  unacceptedLeases(machineIds: string[]): Promise<Array<{ id: string; machine_id: string }>> {
    return this.ds.query(
      `SELECT id, machine_id FROM leases WHERE machine_id = ANY($1::uuid[]) AND released_at IS NULL AND state = 'offered' ORDER BY acquired_at`,
      [machineIds],
    );
  }

  /** Active leases of these machines whose deployment is being cancelled. */
  leasesToCancel(machineIds: string[]): Promise<Array<{ id: string; machine_id: string }>> {
    return this.ds.query(
      `SELECT l.id, l.machine_id FROM leases l JOIN deployments d ON d.id = l.deployment_id
       WHERE l.machine_id = ANY($1::uuid[]) AND l.released_at IS NULL AND d.state = 'cancelling'`,
      [machineIds],
    );
  }

  /** The agent accepted the lease: true when it is still active. */
  async acceptLease(leaseId: string, machineId: string, ttlSeconds: number): Promise<boolean> {
    const rows = returned(
      await this.ds.query(
        `UPDATE leases SET state = 'accepted', accepted_at = COALESCE(accepted_at, now()), expires_at = now() + make_interval(secs => $3)
         WHERE id = $1 AND machine_id = $2 AND released_at IS NULL RETURNING id`,
        [leaseId, machineId, ttlSeconds],
      ),
    );
    return rows.length > 0;
  }

  /** Renews the machine's active leases among `leaseIds`; returns those renewed. */
  async renewLeases(machineId: string, leaseIds: string[], ttlSeconds: number): Promise<string[]> {
    const rows = returned<{ id: string }>(
      await this.ds.query(
        `UPDATE leases SET expires_at = now() + make_interval(secs => $3) WHERE id = ANY($1::uuid[]) AND machine_id = $2 AND released_at IS NULL RETURNING id`,
        [leaseIds, machineId, ttlSeconds],
      ),
    );
    return rows.map((r) => r.id);
  }

  /** Gives every active lease at least `ttlSeconds` from now (a server starting: agents need time to reconnect). */
  async extendActiveLeases(ttlSeconds: number): Promise<void> {
    await this.ds.query(
      `UPDATE leases SET expires_at = greatest(expires_at, now() + make_interval(secs => $1)) WHERE released_at IS NULL`,
      [ttlSeconds],
    );
  }

  /** Level 3, for a log batch: the leases' last stored sequence, in id order. */
  lockLeasesForLog(tx: EntityManager, leaseIds: string[]): Promise<Array<{ id: string; last_log_seq: number }>> {
    return tx.query(`SELECT id, last_log_seq FROM leases WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE`, [
      leaseIds,
    ]);
  }

  async setLeaseLogSeqs(tx: EntityManager, changed: Array<[leaseId: string, seq: number]>): Promise<void> {
    if (!changed.length) return;
    await tx.query(
      `UPDATE leases SET last_log_seq = x.seq FROM unnest($1::uuid[], $2::int[]) AS x(id, seq) WHERE leases.id = x.id`,
      [changed.map((c) => c[0]), changed.map((c) => c[1])],
    );
  }

  /** Level 3: one lease, for its result. */
  async lockLease(
    tx: EntityManager,
    leaseId: string,
  ): Promise<Pick<LeaseRow, 'released_at' | 'last_log_seq' | 'purpose'> | undefined> {
    const [row] = await tx.query(`SELECT released_at, last_log_seq, purpose FROM leases WHERE id = $1 FOR UPDATE`, [
      leaseId,
    ]);
    return row;
  }

  /** The lease ends; `lastLogSeq` when its result brought lines. */
  async releaseLease(tx: EntityManager, leaseId: string, outcome: string, lastLogSeq?: number): Promise<void> {
    if (lastLogSeq === undefined)
      await tx.query(`UPDATE leases SET released_at = now(), state = 'released', outcome = $2 WHERE id = $1`, [
        leaseId,
        outcome,
      ]);
    else
      await tx.query(
        `UPDATE leases SET released_at = now(), state = 'released', outcome = $2, last_log_seq = $3 WHERE id = $1`,
        [leaseId, outcome, lastLogSeq],
      );
  }

  /**
   * Level 3 for a batch of success results: their leases and target runs, locked and read in one statement (lease
   * before target run, leases in id order, so two batches never wait on each other in a cycle).
   */
  lockSuccesses(
    tx: EntityManager,
    leaseIds: string[],
  ): Promise<Array<{ id: string; released_at: Date | null; last_log_seq: number; run: TargetRunRow }>> {
    return tx.query(
      `SELECT l.id, l.released_at, l.last_log_seq, to_jsonb(t) AS run
       FROM leases l JOIN target_runs t ON t.id = l.target_run_id
       WHERE l.id = ANY($1::uuid[]) ORDER BY l.id FOR UPDATE OF l, t`,
      [leaseIds],
    );
  }

  /** Releases the leases of a success batch and settles their target runs as succeeded, in one statement. */
  async settleSuccesses(
    tx: EntityManager,
    s: {
      leaseIds: string[];
      seqs: number[];
      runIds: string[];
      actions: TargetAction[][];
      errors: Array<string | null>;
    },
  ): Promise<void> {
    await tx.query(
      `WITH x AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::text[]) AS x(lease_id, seq, run_id, actions, error)),
       released AS (UPDATE leases l SET released_at = now(), state = 'released', outcome = 'success', last_log_seq = x.seq FROM x WHERE l.id = x.lease_id)
       UPDATE target_runs t SET state = 'success', actions = x.actions::jsonb, error = x.error, finished_at = now() FROM x WHERE t.id = x.run_id`,
      [s.leaseIds, s.seqs, s.runIds, s.actions.map((a) => JSON.stringify(a)), s.errors],
    );
  }

  /** Active leases past their expiry, oldest first. */
  expiredLeases(limit: number): Promise<Array<{ id: string; deployment_id: string }>> {
    return this.ds.query(
      `SELECT id, deployment_id FROM leases WHERE released_at IS NULL AND expires_at < now() ORDER BY expires_at LIMIT $1`,
      [limit],
    );
  }

  /** Level 3: the lease, if it is still active and expired. */
  async lockExpiredLease(tx: EntityManager, leaseId: string): Promise<LeaseRow | undefined> {
    const [row] = await tx.query(
      `SELECT * FROM leases WHERE id = $1 AND released_at IS NULL AND expires_at < now() FOR UPDATE`,
      [leaseId],
    );
    return row;
  }

  // ------------------------------------------------------------------ interruptions

  async insertInterruption(
    tx: EntityManager,
    i: {
      deploymentId: string;
      kind: InterruptionKind;
      stepIndex: number;
      actionIndex: number;
      targetRunId: string | null;
      machineId: string | null;
      instructions: string;
      batch?: number;
      expiresInSeconds?: number;
      defaultResult?: 'proceed' | 'abort';
    },
  ): Promise<string> {
    const [row] = returned<{ id: string }>(
      await tx.query(
        `INSERT INTO interruptions (deployment_id, kind, step_index, action_index, target_run_id, machine_id, instructions, batch, expires_at, default_result)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9::int), $10) RETURNING id`,
        [
          i.deploymentId,
          i.kind,
          i.stepIndex,
          i.actionIndex,
          i.targetRunId,
          i.machineId,
          i.instructions,
          i.batch ?? null,
          i.expiresInSeconds ?? null,
          i.defaultResult ?? null,
        ],
      ),
    );
    return row.id;
  }

  /** For batch approvals: the targets of the batch each lets go, in the order they go. */
  async batchTargets(
    approvals: InterruptionRow[],
  ): Promise<Map<string, Array<{ machineId: string; machineName: string }>>> {
    const rows: Array<{ interruption_id: string; machine_id: string; machine_name: string }> = await this.ds.query(
      `SELECT i.id AS interruption_id, t.machine_id, t.machine_name FROM interruptions i
       JOIN target_runs t ON t.deployment_id = i.deployment_id AND t.step_index = i.step_index AND t.batch = i.batch
       WHERE i.id = ANY($1::uuid[]) AND t.machine_id IS NOT NULL ORDER BY t.position`,
      [approvals.map((a) => a.id)],
    );
    const out = new Map<string, Array<{ machineId: string; machineName: string }>>();
    for (const r of rows)
      out.set(r.interruption_id, [
        ...(out.get(r.interruption_id) ?? []),
        { machineId: r.machine_id, machineName: r.machine_name },
      ]);
    return out;
  }

  /** Level 2: a deployment's batch approvals whose time ran out, unanswered. */
  lockExpiredApprovals(tx: EntityManager, deploymentId: string): Promise<InterruptionRow[]> {
    return tx.query(
      `SELECT * FROM interruptions WHERE deployment_id = $1 AND kind = 'batch-approval' AND state = 'pending' AND expires_at <= now()
       ORDER BY id FOR UPDATE`,
      [deploymentId],
    );
  }

  listInterruptions(f: {
    deploymentId?: string;
    state?: string;
    /** A key's scope: only interruptions of deployments in these environments and projects. */
    environmentIds?: string[] | null;
    projectIds?: string[] | null;
  }): Promise<InterruptionRow[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (f.deploymentId) where.push(`i.deployment_id = $${params.push(f.deploymentId)}`);
    if (f.state) where.push(`i.state = $${params.push(f.state)}`);
    if (f.environmentIds) where.push(`d.environment_id = ANY($${params.push(f.environmentIds)}::uuid[])`);
    if (f.projectIds) where.push(`d.project_id = ANY($${params.push(f.projectIds)}::uuid[])`);
    return this.ds.query(
      `SELECT i.* FROM interruptions i JOIN deployments d ON d.id = i.deployment_id
       ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY i.created_at LIMIT 1000`,
      params,
    );
  }

  async findInterruption(id: string): Promise<InterruptionRow | undefined> {
    const [row] = await this.ds.query(`SELECT * FROM interruptions WHERE id = $1`, [id]);
    return row;
  }

  /** Level 2. */
  async lockInterruption(tx: EntityManager, id: string): Promise<InterruptionRow> {
    const [row] = await tx.query(`SELECT * FROM interruptions WHERE id = $1 FOR UPDATE`, [id]);
    return row;
  }

  async answerInterruption(
    tx: EntityManager,
    id: string,
    a: { result: string; notes: string | null; by: string },
  ): Promise<void> {
    await tx.query(
      `UPDATE interruptions SET state = 'submitted', result = $2, notes = $3, submitted_by = $4, submitted_at = now() WHERE id = $1`,
      [id, a.result, a.notes, a.by],
    );
  }

  /** Closes a deployment's pending interruptions (a cancel); returns the target runs that waited on them. */
  async closePendingInterruptions(tx: EntityManager, deploymentId: string): Promise<string[]> {
    const rows = returned<{ target_run_id: string | null }>(
      await tx.query(
        `UPDATE interruptions SET state = 'cancelled' WHERE deployment_id = $1 AND state = 'pending' RETURNING target_run_id`,
        [deploymentId],
      ),
    );
    return rows.map((r) => r.target_run_id).filter((id): id is string => !!id);
  }

  // ------------------------------------------------------------------ output variables

  /** Sensitive values are stored encrypted and come back decrypted (for the agents that substitute them). */
  async outputVariables(deploymentIds: string[]): Promise<OutputVariableRow[]> {
    const rows: OutputVariableRow[] = await this.ds.query(
      `SELECT deployment_id, step_name, action_name, machine_id, machine_name, name, value, sensitive FROM output_variables WHERE deployment_id = ANY($1::uuid[])`,
      [deploymentIds],
    );
    return rows.map((r) => (r.sensitive ? { ...r, value: this.box.decrypt(r.value) } : r));
  }

  async sensitiveOutputValues(deploymentId: string): Promise<string[]> {
    const rows: Array<{ value: string }> = await this.ds.query(
      `SELECT value FROM output_variables WHERE deployment_id = $1 AND sensitive`,
      [deploymentId],
    );
    return rows.map((r) => this.box.decrypt(r.value));
  }

  /**
   * A retry starts with the output variables of the deployment it retries, so that its later steps see what the
   * earlier steps (not run again) set. Writes only the new deployment's rows (not committed yet: no lock to order).
   * Sensitive values are copied as stored, encrypted.
   */
  async copyOutputVariables(tx: EntityManager, fromId: string, toId: string): Promise<number> {
    const rows = returned(
      await tx.query(
        `INSERT INTO output_variables (deployment_id, step_name, action_name, machine_id, machine_name, name, value, sensitive)
         SELECT $2, step_name, action_name, machine_id, machine_name, name, value, sensitive FROM output_variables WHERE deployment_id = $1
         RETURNING name`,
        [fromId, toId],
      ),
    );
    return rows.length;
  }

  /** The latest value per (step, action, machine, name) wins. A sensitive value is stored encrypted. */
  async upsertOutputVariable(o: Omit<OutputVariableRow, 'machine_id'> & { machine_id: string }): Promise<void> {
    if (o.sensitive) o = { ...o, value: this.box.encrypt(o.value) };
    await this.ds.query(
      `INSERT INTO output_variables (deployment_id, step_name, action_name, machine_id, machine_name, name, value, sensitive)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
       ON CONFLICT (deployment_id, step_name, action_name, machine_name, name) DO UPDATE SET value = EXCLUDED.value, sensitive = EXCLUDED.sensitive`,
      [o.deployment_id, o.step_name, o.action_name, o.machine_id, o.machine_name, o.name, o.value, o.sensitive],
    );
  }

  // ------------------------------------------------------------------ the log

  /**
   * Appends lines in one statement, level 4 of the lock order: bumps the deployment's log head (held until commit, so
   * one deployment's log commits in sequence order and a reader never sees a line appear below one it has seen) and
   * inserts the lines numbered below the new head with unnest() of parallel arrays. Returns the new head.
   */
  async appendLog(tx: EntityManager, deploymentId: string, entries: LogEntryInput[]): Promise<number> {
    const now = new Date().toISOString();
    const [row] = returned<{ seq: string }>(
      await tx.query(
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
          entries.map((e) => e.text),
        ],
      ),
    );
    return Number(row.seq);
  }

  async readLog(deploymentId: string, afterSeq: number, limit: number, machineId?: string): Promise<LogEntry[]> {
    const rows: Array<{
      seq: string;
      at: Date;
      level: string;
      machine_id: string | null;
      step_name: string | null;
      action_name: string | null;
      text: string;
    }> = await this.ds.query(
      `SELECT seq, at, level, machine_id, step_name, action_name, text FROM deployment_log
       WHERE deployment_id = $1 AND seq > $2 ${machineId ? 'AND machine_id = $4' : ''} ORDER BY seq LIMIT $3`,
      machineId ? [deploymentId, afterSeq, limit, machineId] : [deploymentId, afterSeq, limit],
    );
    return rows.map((r) => ({
      seq: Number(r.seq),
      at: r.at.toISOString(),
      level: r.level as LogEntry['level'],
      ...(r.machine_id ? { machineId: r.machine_id } : {}),
      ...(r.step_name ? { stepName: r.step_name } : {}),
      ...(r.action_name ? { actionName: r.action_name } : {}),
      text: r.text,
    }));
  }
}
