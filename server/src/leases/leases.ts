/**
 * Leases: the right of one target run to be in flight. A lease row is taken before any work is sent, so the window
 * is counted by the database, not by a process's memory. Every transition here is idempotent: a message that
 * arrives twice, or after a server restart, changes nothing the second time.
 *
 * The deployment row is locked FOR NO KEY UPDATE, not FOR UPDATE: log inserts take a key-share lock on it through
 * their foreign key, and must not queue behind (or deadlock with) a result or a dispatcher round.
 *
 * Lock order, everywhere: the deployment row first, then lease and target-run rows, and the log's head row last
 * (see DeploymentLogService). One order means no deadlock between the orchestrator, agent results and the log, on
 * whichever node each runs; a transaction may skip a level (log lines take lease rows and the head only).
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { clampLogText, type AgentMessageOf, type LeaseOffer, type LogLine } from '#shared/protocol/index.js';
import { maskSecrets, outputName, resolveScoped } from '#shared/variables/index.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { returned } from '../database/sql.js';
import { DeploymentLogService, type LogEntryInput } from '../deployments/deployment-log.js';
import type { DeploymentRow, TargetAction, TargetRunRow } from '../deployments/deployment.types.js';
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

/** A success result on its way to the database, with what settling it needs. */
interface SuccessItem {
  ctx: LeaseContext;
  msg: AgentMessageOf<'lease.result'>;
  secrets: Set<string>;
}

/** Results settled in one transaction at most: a burst of a thousand goes in a few, none too large. */
const MAX_SUCCESS_BATCH = 200;

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

interface ReleaseFacts {
  process: ReleaseEntity['process'];
  packages: ReleaseEntity['packages'];
  version: string;
  variables: ReleaseEntity['variables'];
  defaultTimeoutSeconds: number | null;
}

interface LogQueue {
  items: Array<{ ctx: LeaseContext; lines: LogLine[]; resolve: (seq: number) => void; reject: (e: unknown) => void }>;
  running: boolean;
}

const OUTCOME_TEXT = { success: 'succeeded', failed: 'failed', cancelled: 'was cancelled' } as const;

@Injectable()
export class LeasesService {
  /** Immutable facts about a lease (who, which step, action names), kept so the log path does not re-read them. */
  private contexts = new Map<string, LeaseContext>();
  private secrets = new Map<string, Set<string>>();
  private releases = new Map<string, ReleaseFacts>();
  private logQueues = new Map<string, LogQueue>();
  /** Successes waiting for their deployment's batch in flight (see settleSuccess). */
  private successQueues = new Map<string, Array<SuccessItem & { resolve: (duplicate: boolean) => void; reject: (e: unknown) => void }>>();
  /** Machines seen since the last flush: one UPDATE for all of them instead of one per heartbeat. */
  private seen = new Set<string>();
  private seenTimer?: NodeJS.Timeout;

  constructor(
    private readonly ds: DataSource,
    private readonly log: DeploymentLogService,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  /**
   * Takes free slots `0 <= slot < window` of a step for target runs, in their order, as many as are free, and marks
   * those target runs running; returns the leases taken. The caller holds the deployment's row lock; the partial
   * unique index over active (deployment, step, slot) refuses a second holder of a slot even if some other code path
   * forgot the lock. One statement for every target of the round (a wide window starts many at once): the free slots
   * are read, paired with the targets in order, taken, and the target runs updated, in one round trip.
   */
  async acquire(
    m: EntityManager,
    p: { deploymentId: string; stepIndex: number; window: number; targets: Array<{ targetRunId: string; machineId: string }> },
  ): Promise<Array<{ id: string; slot: number; targetRunId: string; machineId: string }>> {
    if (!p.targets.length || p.window < 1) return [];
    const rows = returned<{ id: string; slot: number; target_run_id: string; machine_id: string }>(
      await m.query(
        `WITH free AS (
           SELECT s AS slot, row_number() OVER (ORDER BY s) AS n FROM generate_series(0, $4::int - 1) AS s
           WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.deployment_id = $1 AND l.step_index = $2 AND l.released_at IS NULL AND l.slot = s)
         ), taken AS (
           INSERT INTO leases (deployment_id, step_index, slot, target_run_id, machine_id, node_id, expires_at)
           SELECT $1, $2, f.slot, x.target_run_id, x.machine_id, $3, now() + make_interval(secs => $5)
           FROM unnest($6::uuid[], $7::uuid[]) WITH ORDINALITY AS x(target_run_id, machine_id, n) JOIN free f ON f.n = x.n
           ON CONFLICT DO NOTHING RETURNING id, slot, target_run_id, machine_id
         ), started AS (
           UPDATE target_runs SET state = 'running', attempt = attempt + 1, started_at = now(), error = NULL
           WHERE id IN (SELECT target_run_id FROM taken)
         )
         SELECT * FROM taken`,
        [p.deploymentId, p.stepIndex, this.config.nodeId, p.window, this.config.leaseTtlMs / 1000, p.targets.map((c) => c.targetRunId), p.targets.map((c) => c.machineId)],
      ),
    );
    return rows.map((r) => ({ id: r.id, slot: r.slot, targetRunId: r.target_run_id, machineId: r.machine_id }));
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

  /** Releases are immutable: what offers and prefetches need of one is read once per node. */
  async release(releaseId: string, m: EntityManager | DataSource = this.ds): Promise<ReleaseFacts> {
    const hit = this.releases.get(releaseId);
    if (hit) return hit;
    const [r] = await m.query(`SELECT process, packages, version, variables, default_timeout_seconds FROM releases WHERE id = $1`, [releaseId]);
    const facts: ReleaseFacts = { process: r.process, packages: r.packages, version: r.version, variables: r.variables, defaultTimeoutSeconds: r.default_timeout_seconds };
    if (this.releases.size > 1_000) this.releases.clear();
    this.releases.set(releaseId, facts);
    return facts;
  }

  /**
   * What the agents are asked to run, for many leases in a few queries (a wide window starts many targets at once):
   * each step's actions still pending on its target (the conditions may have skipped some; a retry starts from the
   * failed one), their packages, and the variables resolved for the target. Released leases are left out.
   */
  async buildOffers(leaseIds: string[]): Promise<LeaseOffer[]> {
    if (!leaseIds.length) return [];
    const rows: Array<Record<string, any>> = await this.ds.query(
      `SELECT l.id, l.deployment_id, l.step_index, t.id AS target_run_id, t.actions AS target_actions, t.machine_name, t.machine_id,
              mc.roles AS machine_roles, d.release_id, p.id AS project_id, p.name AS project_name, e.id AS environment_id, e.name AS environment_name
       FROM leases l JOIN target_runs t ON t.id = l.target_run_id JOIN deployments d ON d.id = l.deployment_id
       JOIN projects p ON p.id = d.project_id JOIN environments e ON e.id = d.environment_id JOIN machines mc ON mc.id = t.machine_id
       WHERE l.id = ANY($1::uuid[]) AND l.released_at IS NULL`,
      [leaseIds],
    );
    if (!rows.length) return [];
    // Output variables of earlier steps, for every deployment concerned at once.
    const outputs: Array<{ deployment_id: string; step_name: string; action_name: string; machine_id: string | null; machine_name: string; name: string; value: string; sensitive: boolean }> = await this.ds.query(
      `SELECT deployment_id, step_name, action_name, machine_id, machine_name, name, value, sensitive FROM output_variables WHERE deployment_id = ANY($1::uuid[])`,
      [[...new Set(rows.map((r) => r.deployment_id))]],
    );
    const offers: LeaseOffer[] = [];
    for (const row of rows) {
      const release = await this.release(row.release_id);
      const offer = this.offerFrom(row, release, outputs.filter((o) => o.deployment_id === row.deployment_id));
      if (offer) offers.push(offer);
    }
    return offers;
  }

  private offerFrom(row: Record<string, any>, release: ReleaseFacts, outputs: Array<{ step_name: string; action_name: string; machine_id: string | null; machine_name: string; name: string; value: string; sensitive: boolean }>): LeaseOffer | null {
    const leaseId: string = row.id;
    const step = release.process[row.step_index];
    const targetActions = row.target_actions as TargetAction[];
    const actions = step.actions
      .map((a, index) => ({ a, index }))
      .filter(({ index }) => targetActions[index]?.state === 'pending')
      .map(({ a, index }) => ({
        index,
        name: a.name,
        type: a.type as 'script' | 'package',
        script: a.script,
        timeoutSeconds: a.timeoutSeconds ?? release.defaultTimeoutSeconds ?? undefined,
        retries: a.retries ?? 0,
        retryDelaySeconds: a.retryDelaySeconds ?? 0,
        package: a.type === 'package' ? release.packages.find((p) => p.packageId === a.packageId) : undefined,
      }));
    if (!actions.length) return null;

    const roles: string[] = row.machine_roles;
    const vars = new Map<string, { value: string; sensitive: boolean }>();
    for (const v of resolveScoped(release.variables, { environmentId: row.environment_id, roles, machineId: row.machine_id }).values()) vars.set(v.name, v);
    const system: Record<string, string> = {
      'Cuttle.Project.Name': row.project_name,
      'Cuttle.Project.Id': row.project_id,
      'Cuttle.Release.Number': release.version,
      'Cuttle.Release.Id': row.release_id,
      'Cuttle.Environment.Name': row.environment_name,
      'Cuttle.Environment.Id': row.environment_id,
      'Cuttle.Deployment.Id': row.deployment_id,
      'Cuttle.Machine.Name': row.machine_name,
      'Cuttle.Machine.Id': row.machine_id,
      'Cuttle.Machine.Roles': roles.join(','),
      'Cuttle.Step.Name': step.name,
    };
    for (const [name, value] of Object.entries(system)) vars.set(name, { value, sensitive: false });
    // Output variables of earlier steps: by machine name always, unqualified when this machine set them.
    for (const o of outputs) {
      vars.set(outputName(o.step_name, o.action_name, o.name, o.machine_name), { value: o.value, sensitive: o.sensitive });
      if (o.machine_id === row.machine_id) vars.set(outputName(o.step_name, o.action_name, o.name), { value: o.value, sensitive: o.sensitive });
    }
    return {
      type: 'lease.offer',
      leaseId,
      deploymentId: row.deployment_id,
      targetRunId: row.target_run_id,
      stepName: step.name,
      machineName: row.machine_name,
      actions,
      startAt: 0,
      env: {
        CUTTLE_PROJECT_NAME: row.project_name,
        CUTTLE_RELEASE_NUMBER: release.version,
        CUTTLE_ENVIRONMENT_NAME: row.environment_name,
        CUTTLE_DEPLOYMENT_ID: row.deployment_id,
        CUTTLE_MACHINE_NAME: row.machine_name,
        CUTTLE_STEP_NAME: step.name,
      },
      variables: [...vars].map(([name, v]) => ({ name, value: v.value, sensitive: v.sensitive })),
    };
  }

  /** Sensitive values a deployment's log must never show: the release's sensitive variables and outputs. */
  private async secretsOf(deploymentId: string): Promise<Set<string>> {
    const hit = this.secrets.get(deploymentId);
    if (hit) return hit;
    const [row] = await this.ds.query(`SELECT r.variables FROM deployments d JOIN releases r ON r.id = d.release_id WHERE d.id = $1`, [deploymentId]);
    const outs: Array<{ value: string }> = await this.ds.query(`SELECT value FROM output_variables WHERE deployment_id = $1 AND sensitive`, [deploymentId]);
    const set = new Set<string>([...((row?.variables ?? []) as ReleaseEntity['variables']).filter((v) => v.sensitive && v.value).map((v) => v.value), ...outs.map((o) => o.value)]);
    if (this.secrets.size > 1_000) this.secrets.clear();
    this.secrets.set(deploymentId, set);
    return set;
  }

  /** A script set an output variable. The latest value per (step, action, machine, name) wins. */
  async storeOutput(machineId: string, msg: AgentMessageOf<'lease.output'>): Promise<void> {
    const ctx = await this.own(machineId, msg.leaseId);
    if (!ctx || msg.actionIndex >= ctx.actionNames.length) return;
    await this.ds.query(
      `INSERT INTO output_variables (deployment_id, step_name, action_name, machine_id, machine_name, name, value, sensitive)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
       ON CONFLICT (deployment_id, step_name, action_name, machine_name, name) DO UPDATE SET value = EXCLUDED.value, sensitive = EXCLUDED.sensitive`,
      [ctx.deploymentId, ctx.stepName, ctx.actionNames[msg.actionIndex], ctx.machineId, ctx.machineName, msg.name, msg.value, msg.sensitive],
    );
    if (msg.sensitive && msg.value) (await this.secretsOf(ctx.deploymentId)).add(msg.value);
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

  /** Records that a machine was heard from; written within a second, for all machines heard in one statement. */
  markSeen(machineId: string) {
    this.seen.add(machineId);
    this.seenTimer ??= setTimeout(() => {
      this.seenTimer = undefined;
      const ids = [...this.seen];
      this.seen.clear();
      this.ds.query(`UPDATE machines SET last_seen_at = now() WHERE id = ANY($1::uuid[])`, [ids]).catch((e) => this.logger.warn('last-seen update failed', { context: 'leases', error: (e as Error).message }));
    }, 1_000);
    this.seenTimer.unref?.();
  }

  /** Renews the machine's leases named in a heartbeat; returns those that are no longer active. */
  async renew(machineId: string, leaseIds: string[]): Promise<string[]> {
    this.markSeen(machineId);
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
    // Group commit: chunks for one deployment that arrive while its previous batch is being written go into the
    // next transaction together. Every chunk of a deployment takes that deployment's row lock (it numbers the log),
    // so one transaction per chunk would cap a deployment's log at one chunk per commit.
    return new Promise((resolve, reject) => {
      const q = this.logQueues.get(ctx.deploymentId) ?? { items: [], running: false };
      this.logQueues.set(ctx.deploymentId, q);
      q.items.push({ ctx, lines, resolve, reject });
      if (!q.running) void this.drainLogQueue(ctx.deploymentId, q);
    });
  }

  private async drainLogQueue(deploymentId: string, q: LogQueue) {
    q.running = true;
    try {
      while (q.items.length) {
        const batch = q.items.splice(0, 200);
        try {
          const acks = await this.writeLogBatch(deploymentId, batch);
          batch.forEach((b, i) => b.resolve(acks[i]));
        } catch (e) {
          batch.forEach((b) => b.reject(e));
        }
      }
    } finally {
      q.running = false;
      if (!q.items.length) this.logQueues.delete(deploymentId);
    }
  }

  /** One transaction for many chunks of one deployment's log; returns each chunk's acknowledged sequence. */
  private async writeLogBatch(deploymentId: string, batch: LogQueue['items']): Promise<number[]> {
    // The agent masks sensitive values already; masking again here means a buggy or hostile agent cannot leak them.
    const secrets = await this.secretsOf(deploymentId);
    return this.ds.transaction(async (m) => {
      // The lease rows, then the log's head row (in append): never the deployment row, so agents' lines do not
      // wait for results and dispatcher rounds, nor they for lines.
      const leaseIds = [...new Set(batch.map((b) => b.ctx.leaseId))];
      const rows: Array<{ id: string; last_log_seq: number }> = await m.query(`SELECT id, last_log_seq FROM leases WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE`, [leaseIds]);
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
        await this.log.append(m, deploymentId, fresh);
        const changed = [...last].filter(([id, seq]) => before.get(id) !== seq);
        await m.query(`UPDATE leases SET last_log_seq = x.seq FROM unnest($1::uuid[], $2::int[]) AS x(id, seq) WHERE leases.id = x.id`, [changed.map((c) => c[0]), changed.map((c) => c[1])]);
      }
      return acks;
    });
  }

  /** An action's state changed on the agent. Ignored once the lease is released (the result already settled it). */
  async actionUpdate(machineId: string, msg: AgentMessageOf<'lease.action'>): Promise<void> {
    const ctx = await this.own(machineId, msg.leaseId);
    if (!ctx || msg.actionIndex >= ctx.actionNames.length) return;
    // One statement: the CTE locks the lease row (as the result does, so the two are ordered) and the update happens
    // only while the lease is active: a late "running" never reopens a settled target.
    await this.ds.query(
      `WITH l AS (SELECT id FROM leases WHERE id = $5 AND released_at IS NULL FOR UPDATE)
       UPDATE target_runs SET actions = jsonb_set(actions, $2::text[], (actions->($3::int)) || $4::jsonb) WHERE id = $1 AND EXISTS (SELECT 1 FROM l)`,
      [ctx.targetRunId, `{${msg.actionIndex}}`, msg.actionIndex, JSON.stringify({ state: msg.state, exitCode: msg.exitCode ?? null }), msg.leaseId],
    );
  }

  /**
   * Settles a target run from the agent's result and releases its lease (its slot frees). Returns the deployment id,
   * or null if the message is not this agent's. A result for a lease already released is a duplicate: no change.
   */
  async complete(machineId: string, msg: AgentMessageOf<'lease.result'>): Promise<{ deploymentId: string; duplicate: boolean } | null> {
    const ctx = await this.own(machineId, msg.leaseId);
    if (!ctx) return null;
    const secrets = msg.lines?.length ? await this.secretsOf(ctx.deploymentId) : new Set<string>();
    // A success changes only its lease and target run: it does not queue for the deployment's row behind the other
    // results of a wave and the dispatcher's rounds (it takes lease → target run → log head, an order no one
    // reverses), and goes in a batch (settleSuccess).
    if (msg.state === 'success') return { deploymentId: ctx.deploymentId, duplicate: await this.settleSuccess({ ctx, msg, secrets }) };
    const duplicate = await this.ds.transaction(async (m) => {
      // A failure may change the deployment (guided failure, a cancel's outcome): it locks the deployment's row
      // first, as every other writer of it does.
      const [dep]: DeploymentRow[] = await m.query(`SELECT * FROM deployments WHERE id = $1 FOR NO KEY UPDATE`, [ctx.deploymentId]);
      const [lease] = await m.query(`SELECT released_at, last_log_seq FROM leases WHERE id = $1 FOR UPDATE`, [msg.leaseId]);
      if (!lease || lease.released_at) return true;
      // The lease's last lines came with its result: stored in this transaction, before the outcome's line.
      const tail = freshEntries(ctx, msg.lines ?? [], lease.last_log_seq, secrets);
      // Only the deployment's cancel makes a target "cancelled"; a run stopped for any other reason failed.
      if (msg.state === 'cancelled' && dep.state !== 'cancelling') msg = { ...msg, state: 'failed', error: msg.error ?? 'stopped on the agent' };
      const [run]: TargetRunRow[] = await m.query(`SELECT * FROM target_runs WHERE id = $1 FOR UPDATE`, [ctx.targetRunId]);
      const actions = mergeActions(run.actions, msg.actions);
      await m.query(`UPDATE leases SET released_at = now(), state = 'released', outcome = $2, last_log_seq = $3 WHERE id = $1`, [msg.leaseId, msg.state, tail.seq]);
      await this.settleTarget(m, dep, run, ctx.stepName, msg.state, actions, msg.error ?? null, outcomeText(ctx, msg), tail.entries);
      return false;
    });
    return { deploymentId: ctx.deploymentId, duplicate };
  }

  /**
   * Successes are settled in batches per deployment, group-commit style: one goes at once when none of its
   * deployment's is being written; those arriving meanwhile wait for that batch and then go together. A wide window
   * ends in a burst, and every result appends to the deployment's log head row, so one transaction each would queue
   * them one behind the other, each paying its round trips.
   */
  private settleSuccess(item: SuccessItem): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      const id = item.ctx.deploymentId;
      const queued = this.successQueues.get(id);
      if (queued) return void queued.push({ ...item, resolve, reject });
      this.successQueues.set(id, [{ ...item, resolve, reject }]);
      void this.drainSuccesses(id);
    });
  }

  private async drainSuccesses(deploymentId: string) {
    const queue = this.successQueues.get(deploymentId)!;
    for (;;) {
      const batch = queue.splice(0, MAX_SUCCESS_BATCH);
      if (!batch.length) {
        this.successQueues.delete(deploymentId);
        return;
      }
      try {
        const duplicates = await this.ds.transaction((m) => this.completeSuccesses(m, batch));
        batch.forEach((b, i) => b.resolve(duplicates[i]));
      } catch (e) {
        // One result must not fail the others of its batch: each is tried on its own.
        if (batch.length === 1) batch[0].reject(e);
        else
          for (const b of batch) {
            await this.ds.transaction((m) => this.completeSuccesses(m, [b])).then(([d]) => b.resolve(d), b.reject);
          }
      }
    }
  }

  /**
   * Settles successes in five statements, however many: their leases and target runs locked and read in one (lease
   * before target run, as on every other path, and leases in id order, so two batches never wait on each other in
   * a cycle), released and settled in one, their lines and outcome lines appended in one. The deployment's row is
   * not read: a success changes nothing of it. Returns, per item, whether it was a duplicate (lease already released).
   */
  private async completeSuccesses(m: EntityManager, items: SuccessItem[]): Promise<boolean[]> {
    const rows: Array<{ id: string; released_at: Date | null; last_log_seq: number; run: TargetRunRow }> = await m.query(
      `SELECT l.id, l.released_at, l.last_log_seq, to_jsonb(t) AS run
       FROM leases l JOIN target_runs t ON t.id = l.target_run_id
       WHERE l.id = ANY($1::uuid[]) ORDER BY l.id FOR UPDATE OF l, t`,
      [items.map((i) => i.msg.leaseId)],
    );
    const byLease = new Map(rows.map((r) => [r.id, r]));
    const settled = { leaseIds: [] as string[], seqs: [] as number[], runIds: [] as string[], actions: [] as string[], errors: [] as Array<string | null> };
    const lines: LogEntryInput[] = [];
    const duplicates = items.map(({ ctx, msg, secrets }) => {
      const row = byLease.get(msg.leaseId);
      if (!row || row.released_at) return true;
      // The same result twice in one batch counts once. Defensive: one connection's messages are handled one at a
      // time, so it would take two connections of one machine at once.
      row.released_at = new Date();
      const tail = freshEntries(ctx, msg.lines ?? [], row.last_log_seq, secrets);
      settled.leaseIds.push(msg.leaseId);
      settled.seqs.push(tail.seq);
      settled.runIds.push(row.run.id);
      settled.actions.push(JSON.stringify(finalActions(mergeActions(row.run.actions, msg.actions), 'success')));
      settled.errors.push(msg.error ?? null);
      lines.push(...tail.entries, { level: 'info', text: outcomeText(ctx, msg), machineId: row.run.machine_id, stepName: ctx.stepName });
      return false;
    });
    if (settled.leaseIds.length) {
      await m.query(
        `WITH x AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::text[]) AS x(lease_id, seq, run_id, actions, error)),
         released AS (UPDATE leases l SET released_at = now(), state = 'released', outcome = 'success', last_log_seq = x.seq FROM x WHERE l.id = x.lease_id)
         UPDATE target_runs t SET state = 'success', actions = x.actions::jsonb, error = x.error, finished_at = now() FROM x WHERE t.id = x.run_id`,
        [settled.leaseIds, settled.seqs, settled.runIds, settled.actions, settled.errors],
      );
      await this.log.append(m, items[0].ctx.deploymentId, lines);
    }
    return duplicates;
  }

  /**
   * Records a target run's outcome. A failure under guided failure does not settle the target: it stays in flight
   * (holding its place in the window) and the deployment waits on a guided-failure interruption for it alone.
   */
  private async settleTarget(
    m: EntityManager,
    dep: DeploymentRow,
    run: TargetRunRow,
    stepName: string,
    state: 'success' | 'failed' | 'cancelled',
    actions: TargetAction[],
    error: string | null,
    text: string,
    agentLines: LogEntryInput[] = [],
  ) {
    const guided = state === 'failed' && dep.guided_failure && dep.state !== 'cancelling';
    const lines: LogEntryInput[] = [...agentLines, { level: state === 'success' ? 'info' : state === 'failed' ? 'error' : 'warn', text, machineId: run.machine_id, stepName }];
    if (guided) {
      const failedAt = Math.max(0, actions.findIndex((a) => a.state === 'failed' || a.state === 'running' || a.state === 'pending'));
      const settled = actions.map((a) => (a.state === 'running' ? { ...a, state: 'failed' as const } : a));
      await m.query(`UPDATE target_runs SET actions = $2::jsonb, error = $3 WHERE id = $1`, [run.id, JSON.stringify(settled), error]);
      const [intr] = returned<{ id: string }>(
        await m.query(
          `INSERT INTO interruptions (deployment_id, kind, step_index, action_index, target_run_id, machine_id, instructions)
           VALUES ($1, 'guided-failure', $2, $3, $4, $5, $6) RETURNING id`,
          [dep.id, run.step_index, failedAt, run.id, run.machine_id, `${stepName} failed on ${run.machine_name}${error ? `: ${error}` : ''}. Retry it from action ${actions[failedAt]?.name ?? failedAt + 1}, skip this target, or abort the step.`],
        ),
      );
      await m.query(`UPDATE deployments SET state = 'waiting' WHERE id = $1 AND state IN ('queued', 'executing')`, [dep.id]);
      lines.push({ level: 'warn', machineId: run.machine_id, stepName, text: `Guided failure: waiting for an operator to retry, skip or abort ${stepName} on ${run.machine_name} (interruption ${intr.id})` });
    } else {
      const final = finalActions(actions, state);
      await m.query(`UPDATE target_runs SET state = $2, actions = $3::jsonb, error = $4, finished_at = now() WHERE id = $1`, [run.id, state, JSON.stringify(final), error]);
    }
    await this.log.append(m, dep.id, lines);
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
        const [dep]: DeploymentRow[] = await m.query(`SELECT * FROM deployments WHERE id = $1 FOR NO KEY UPDATE`, [l.deployment_id]);
        const [lease]: LeaseRow[] = await m.query(`SELECT * FROM leases WHERE id = $1 AND released_at IS NULL AND expires_at < now() FOR UPDATE`, [l.id]);
        if (!lease) return;
        const reason = lease.state === 'offered' ? 'agent lost: the target never accepted the work' : `agent lost: no heartbeat for ${Math.round(this.config.leaseTtlMs / 1000)} s`;
        const [run]: TargetRunRow[] = await m.query(`SELECT * FROM target_runs WHERE id = $1 FOR UPDATE`, [lease.target_run_id]);
        await m.query(`UPDATE leases SET released_at = now(), state = 'released', outcome = 'lost' WHERE id = $1`, [l.id]);
        const state = dep.state === 'cancelling' ? 'cancelled' : 'failed';
        await this.settleTarget(m, dep, run, ctx?.stepName ?? 'Step', state, run.actions, reason, `${ctx?.stepName ?? 'Step'} on ${run.machine_name} failed: ${reason}`);
        this.logger.warn('lease expired', { context: 'leases', leaseId: l.id, deploymentId: l.deployment_id, machine: run.machine_name });
        touched.add(l.deployment_id);
      });
    }
    return [...touched];
  }
}

/**
 * The lines of a lease the log does not have yet, in sequence after `lastSeq` (a duplicate is skipped; at a gap the
 * rest waits for the agent to resend from the acknowledged sequence), masked, as log entries; and the new last seq.
 */
/** The log line of a target's outcome as the agent reported it: "Step on machine succeeded (exit code 0)". */
function outcomeText(ctx: LeaseContext, msg: AgentMessageOf<'lease.result'>): string {
  const exit = msg.exitCode !== undefined && msg.exitCode !== null ? ` (exit code ${msg.exitCode})` : '';
  return `${ctx.stepName} on ${ctx.machineName} ${OUTCOME_TEXT[msg.state]}${exit}${msg.error ? `: ${msg.error}` : ''}`;
}

/** The target run's actions with the states the agent reported for them. */
function mergeActions(actions: TargetAction[], reported: AgentMessageOf<'lease.result'>['actions']): TargetAction[] {
  return actions.map((a, i) => {
    const r = reported.find((x) => x.index === i);
    return r ? { ...a, state: r.state, exitCode: r.exitCode ?? null } : a;
  });
}

/** Actions the agent never reached, once the target is settled: skipped after a failure, cancelled on cancel. */
function finalActions(actions: TargetAction[], state: 'success' | 'failed' | 'cancelled'): TargetAction[] {
  return actions.map((a) =>
    a.state === 'pending' || a.state === 'running' ? { ...a, state: a.state === 'running' ? ('failed' as const) : state === 'cancelled' ? ('cancelled' as const) : ('skipped' as const) } : a,
  );
}

function freshEntries(ctx: LeaseContext, lines: LogLine[], lastSeq: number, secrets: Set<string>): { entries: LogEntryInput[]; seq: number } {
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
