/**
 * Lease accounting: the right of one target run to be in flight. A lease row is taken before any work is sent, so
 * the window is counted by the database, not by a process's memory. Four transitions, each idempotent (a message that
 * arrives twice, or after a server restart, changes nothing the second time):
 *   take    a free slot of the step's window, for a target run (the dispatcher, under the deployment's lock);
 *   renew   on the agent's acceptance and heartbeats, up to one TTL ahead;
 *   release on the agent's result, settling the target run (a success, a failure, a guided failure's question);
 *   expire  once the TTL passes with no heartbeat: the target run fails as "agent lost", its slot frees.
 * Every statement is in deployments/deployment.repository.ts, whose header gives the lock order these follow.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import type { FailureKind } from '#shared/api/types.js';
import { HEALTH_CHECK_ACTION } from '#shared/process/index.js';
import type { AgentMessageOf } from '#shared/protocol/index.js';
import { isUuid } from '../common/http.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { DeploymentEvents } from '../deployments/deployment-events.js';
import { DeploymentLogService, freshEntries } from '../deployments/deployment-log.service.js';
import { DeploymentSecrets } from '../deployments/deployment-secrets.js';
import { DeploymentRepository } from '../deployments/deployment.repository.js';
import type {
  DeploymentRow,
  LeaseContext,
  LogEntryInput,
  TargetAction,
  TargetRunRow,
} from '../deployments/deployment.types.js';
import { InterruptionsService } from '../deployments/interruptions.service.js';
import { LOGGER, type Logger } from '../logging/logger.js';

/** A success result on its way to the database, with what settling it needs. */
interface SuccessItem {
  ctx: LeaseContext;
  msg: AgentMessageOf<'lease.result'>;
  secrets: Set<string>;
}

/** Results settled in one transaction at most: a burst of a thousand goes in a few, none too large. */
const MAX_SUCCESS_BATCH = 200;
/** Expired leases handled per sweep (the sweep runs every dispatcher tick). */
const EXPIRE_BATCH = 200;

const OUTCOME_TEXT = { success: 'succeeded', failed: 'failed', cancelled: 'was cancelled' } as const;

@Injectable()
export class LeasesService {
  /** Immutable facts about a lease, kept so the paths of agents' messages do not re-read them. */
  private contexts = new Map<string, LeaseContext>();
  /** Successes waiting for their deployment's batch in flight (see settleSuccess). */
  private successQueues = new Map<
    string,
    Array<SuccessItem & { resolve: (duplicate: boolean) => void; reject: (e: unknown) => void }>
  >();

  /** This service's log lines carry `context: 'leases'`. */
  private readonly logger: Logger;

  constructor(
    private readonly repo: DeploymentRepository,
    private readonly log: DeploymentLogService,
    private readonly secrets: DeploymentSecrets,
    private readonly interruptions: InterruptionsService,
    private readonly events: DeploymentEvents,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.logger = logger.child({ context: 'leases' });
  }

  private get ttlSeconds() {
    return this.config.leaseTtlMs / 1000;
  }

  /**
   * Takes free slots `0 <= slot < window` of a step for target runs, in their order, as many as are free, and marks
   * those target runs running; returns the leases taken. The caller holds the deployment's row lock. With
   * `exclusive` (the machine rule), a target run whose machine is busy with another deployment gets no lease, and the
   * ones after it take the free slots: a lease is taken only when both a slot and the machine are free.
   */
  take(
    tx: EntityManager,
    p: {
      deploymentId: string;
      stepIndex: number;
      window: number;
      exclusive: boolean;
      /** `check`: the targets' bake checks, not their actions. */
      purpose?: 'run' | 'check';
      targets: Array<{ targetRunId: string; machineId: string; waitingSince: Date | null }>;
    },
  ): Promise<Array<{ id: string; slot: number; targetRunId: string; machineId: string }>> {
    if (!p.targets.length || p.window < 1) return Promise.resolve([]);
    return this.repo.takeLeases(tx, { ...p, node: this.config.nodeId, ttlSeconds: this.ttlSeconds });
  }

  /** Who a lease is for (cached: a lease's facts never change). */
  async context(leaseId: string): Promise<LeaseContext | null> {
    const hit = this.contexts.get(leaseId);
    if (hit) return hit;
    if (!isUuid(leaseId)) return null;
    const row = await this.repo.leaseWithProcess(leaseId);
    if (!row) return null;
    const step = row.process[row.lease.step_index];
    const ctx: LeaseContext = {
      leaseId,
      deploymentId: row.lease.deployment_id,
      machineId: row.lease.machine_id,
      machineName: row.machineName,
      targetRunId: row.lease.target_run_id,
      stepIndex: row.lease.step_index,
      stepName: step.name,
      actionNames: [...step.actions.map((a) => a.name), ...(step.healthCheck ? [HEALTH_CHECK_ACTION] : [])],
      purpose: row.lease.purpose ?? 'run',
      segmented: step.actions.some((a) => a.type === 'manual-intervention'),
    };
    if (this.contexts.size > 50_000) this.contexts.clear();
    this.contexts.set(leaseId, ctx);
    return ctx;
  }

  /** The lease if it exists and belongs to this machine: an agent may only speak for its own leases. */
  async own(machineId: string, leaseId: string): Promise<LeaseContext | null> {
    const ctx = await this.context(leaseId);
    return ctx && ctx.machineId === machineId ? ctx : null;
  }

  /** Offered leases of these machines not accepted yet (for delivery after a (re)connect or a lost offer). */
  unaccepted(machineIds: string[]) {
    return machineIds.length ? this.repo.unacceptedLeases(machineIds) : Promise.resolve([]);
  }

  /** Active leases of these machines whose deployment is being cancelled: the agents must stop them. */
  toCancel(machineIds: string[]) {
    return machineIds.length ? this.repo.leasesToCancel(machineIds) : Promise.resolve([]);
  }

  /** Agents need time to reconnect after a server restart: every active lease gets one TTL from now. */
  extendAll() {
    return this.repo.extendActiveLeases(this.ttlSeconds);
  }

  /** Returns false when the lease is no longer active (expired or finished): the agent must not run it. */
  async accept(machineId: string, leaseId: string): Promise<boolean> {
    if (!(await this.own(machineId, leaseId))) return false;
    return this.repo.acceptLease(leaseId, machineId, this.ttlSeconds);
  }

  /** Renews the machine's leases named in a heartbeat; returns those that are no longer active. */
  async renew(machineId: string, leaseIds: string[]): Promise<string[]> {
    if (!leaseIds.length) return [];
    const live = new Set(await this.repo.renewLeases(machineId, leaseIds.filter(isUuid), this.ttlSeconds));
    return leaseIds.filter((i) => !live.has(i));
  }

  /** An action's state changed on the agent. Ignored once the lease is released (the result already settled it). */
  async actionUpdate(ctx: LeaseContext, msg: AgentMessageOf<'lease.action'>): Promise<void> {
    // A bake check's progress is its own (bakeCheck): the target's actions ended before its bake.
    if (msg.actionIndex >= ctx.actionNames.length || ctx.purpose === 'check') return;
    await this.repo.updateActionWhileLeased(msg.leaseId, ctx.targetRunId, msg.actionIndex, {
      state: msg.state,
      exitCode: msg.exitCode ?? null,
    });
  }

  /**
   * Releases a lease on its agent's result and settles its target run (its slot frees). A result for a lease already
   * released is a duplicate: no change. Tells the dispatcher when a target settled.
   */
  async complete(ctx: LeaseContext, msg: AgentMessageOf<'lease.result'>): Promise<{ duplicate: boolean }> {
    const secrets = msg.lines?.length ? await this.secrets.of(ctx.deploymentId) : new Set<string>();
    // A success changes only its lease and target run: it does not queue for the deployment's row behind the other
    // results of a wave and the dispatcher's rounds (it takes lease → target run → log head, an order no one
    // reverses), and goes in a batch (settleSuccess).
    // A bake check, or a lease that ends at a manual intervention, may change the deployment: the locked path.
    const duplicate =
      msg.state === 'success' && ctx.purpose === 'run' && !ctx.segmented
        ? await this.settleSuccess({ ctx, msg, secrets })
        : await this.settleOther(ctx, msg, secrets);
    if (!duplicate) this.events.emit('progressed', ctx.deploymentId);
    return { duplicate };
  }

  private settleOther(ctx: LeaseContext, msg: AgentMessageOf<'lease.result'>, secrets: Set<string>): Promise<boolean> {
    return this.repo.transaction(async (tx) => {
      // A failure may change the deployment (guided failure, a cancel's outcome): it locks the deployment's row
      // first, as every other writer of it does.
      const dep = (await this.repo.lockDeployment(tx, ctx.deploymentId))!;
      const lease = await this.repo.lockLease(tx, msg.leaseId);
      if (!lease || lease.released_at) return true;
      // The lease's last lines came with its result: stored in this transaction, before the outcome's line.
      const tail = freshEntries(ctx, msg.lines ?? [], lease.last_log_seq, secrets);
      // Only the deployment's cancel makes a target "cancelled"; a run stopped for any other reason failed.
      if (msg.state === 'cancelled' && dep.state !== 'cancelling')
        msg = { ...msg, state: 'failed', error: msg.error ?? 'stopped on the agent' };
      const run = await this.repo.lockTargetRun(tx, ctx.targetRunId);
      await this.repo.releaseLease(tx, msg.leaseId, msg.state, tail.seq);
      if (lease.purpose === 'check') {
        await this.settleBakeCheck(tx, dep, run, ctx.stepName, msg, tail.entries);
        return false;
      }
      const actions = mergeActions(run.actions, msg.actions);
      if (msg.state === 'success' && actions.some((a) => a.state === 'pending')) {
        // The lease ended before a manual intervention: the target waits for a person there, keeping its slot.
        run.actions = actions;
        await this.repo.waitForPerson(tx, run.id, actions);
        const process = (await this.repo.processOf(dep.id, tx))!;
        const id = await this.interruptions.openManualIntervention(tx, dep.id, run, process);
        const at = process[run.step_index].actions[actions.findIndex((a) => a.state === 'pending')];
        await this.log.append(tx, dep.id, [
          ...tail.entries,
          {
            level: 'warn',
            machineId: run.machine_id,
            stepName: ctx.stepName,
            actionName: at?.name,
            text: `${ctx.stepName} on ${run.machine_name}: waiting for manual intervention ${at?.name} (interruption ${id}): ${at?.instructions ?? ''}`.trim(),
          },
        ]);
        return false;
      }
      await this.settleTarget(
        tx,
        dep,
        run,
        ctx.stepName,
        msg.state,
        actions,
        { error: msg.error ?? null, kind: msg.failureKind ?? 'script' },
        outcomeText(ctx, msg),
        tail.entries,
      );
      return false;
    });
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
        const duplicates = await this.repo.transaction((tx) => this.completeSuccesses(tx, batch));
        batch.forEach((b, i) => b.resolve(duplicates[i]));
      } catch (e) {
        // One result must not fail the others of its batch: each is tried on its own.
        if (batch.length === 1) batch[0].reject(e);
        else
          for (const b of batch) {
            await this.repo.transaction((tx) => this.completeSuccesses(tx, [b])).then(([d]) => b.resolve(d), b.reject);
          }
      }
    }
  }

  /**
   * Settles successes in a few statements, however many: their leases and target runs locked and read in one,
   * released and settled in one, their lines and outcome lines appended in one. The deployment's row is not read: a
   * success changes nothing of it. Returns, per item, whether it was a duplicate (lease already released).
   */
  private async completeSuccesses(tx: EntityManager, items: SuccessItem[]): Promise<boolean[]> {
    const rows = await this.repo.lockSuccesses(
      tx,
      items.map((i) => i.msg.leaseId),
    );
    const byLease = new Map(rows.map((r) => [r.id, r]));
    const settled = {
      leaseIds: [] as string[],
      seqs: [] as number[],
      runIds: [] as string[],
      actions: [] as TargetAction[][],
      errors: [] as Array<string | null>,
    };
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
      settled.actions.push(finalActions(mergeActions(row.run.actions, msg.actions), 'success'));
      settled.errors.push(msg.error ?? null);
      lines.push(...tail.entries, {
        level: 'info',
        text: outcomeText(ctx, msg),
        machineId: row.run.machine_id,
        stepName: ctx.stepName,
      });
      return false;
    });
    if (settled.leaseIds.length) {
      await this.repo.settleSuccesses(tx, settled);
      await this.log.append(tx, items[0].ctx.deploymentId, lines);
    }
    return duplicates;
  }

  /**
   * A bake check's result: a pass leaves the target as it was; a failure fails the target (it counts against the
   * step's failure budget like any failure; guided failure does not ask about it, the target's actions are done); a
   * cancel leaves the check undone.
   */
  private async settleBakeCheck(
    tx: EntityManager,
    dep: DeploymentRow,
    run: TargetRunRow,
    stepName: string,
    msg: AgentMessageOf<'lease.result'>,
    agentLines: LogEntryInput[],
  ) {
    const result = msg.state === 'success' ? 'success' : msg.state === 'cancelled' ? null : 'failed';
    const error = `health check failed at the end of the bake${msg.error ? `: ${msg.error}` : ''}`;
    await this.repo.settleCheck(tx, run.id, result, { error, kind: 'health-check' });
    await this.log.append(tx, dep.id, [
      ...agentLines,
      {
        level: result === 'failed' ? 'error' : 'info',
        machineId: run.machine_id,
        stepName,
        actionName: HEALTH_CHECK_ACTION,
        text:
          result === 'success'
            ? `${stepName} on ${run.machine_name}: health check passed at the end of the bake`
            : result === 'failed'
              ? `${stepName} on ${run.machine_name} failed: ${error}`
              : `${stepName} on ${run.machine_name}: health check stopped (the deployment is being cancelled)`,
      },
    ]);
  }

  /**
   * Records a target run's outcome. A failure under guided failure does not settle the target: it stays in flight
   * (holding its place in the window) and the deployment waits on a guided-failure interruption for it alone.
   */
  private async settleTarget(
    tx: EntityManager,
    dep: DeploymentRow,
    run: TargetRunRow,
    stepName: string,
    state: 'success' | 'failed' | 'cancelled',
    actions: TargetAction[],
    failure: { error: string | null; kind: FailureKind },
    text: string,
    agentLines: LogEntryInput[] = [],
  ) {
    const { error } = failure;
    const guided = state === 'failed' && dep.guided_failure && dep.state !== 'cancelling';
    const lines: LogEntryInput[] = [
      ...agentLines,
      {
        level: state === 'success' ? 'info' : state === 'failed' ? 'error' : 'warn',
        text,
        machineId: run.machine_id,
        stepName,
      },
    ];
    if (guided) {
      const failedAt = Math.max(
        0,
        actions.findIndex((a) => a.state === 'failed' || a.state === 'running' || a.state === 'pending'),
      );
      await this.repo.setTargetActions(
        tx,
        run.id,
        actions.map((a) => (a.state === 'running' ? { ...a, state: 'failed' as const } : a)),
        failure,
      );
      const id = await this.interruptions.openGuidedFailure(tx, {
        deploymentId: dep.id,
        run,
        stepName,
        failedAt,
        actionName: actions[failedAt]?.name,
        error,
      });
      lines.push({
        level: 'warn',
        machineId: run.machine_id,
        stepName,
        text: `Guided failure: waiting for an operator to retry, skip or abort ${stepName} on ${run.machine_name} (interruption ${id})`,
      });
    } else {
      await this.repo.finishTargetRun(tx, run.id, state, {
        actions: finalActions(actions, state),
        error,
        failureKind: state === 'failed' ? failure.kind : null,
      });
    }
    await this.log.append(tx, dep.id, lines);
  }

  /**
   * Expires leases whose agent went silent past the TTL: the target run fails as "agent lost", told apart from a
   * script's failure, and its slot frees. Safe to run on every node at once.
   */
  async expire(): Promise<void> {
    const due = await this.repo.expiredLeases(EXPIRE_BATCH);
    const touched = new Set<string>();
    for (const l of due) {
      // Read outside the transaction: inside it, only the transaction's own connection may be used.
      const ctx = await this.context(l.id);
      await this.repo.transaction(async (tx) => {
        const dep = (await this.repo.lockDeployment(tx, l.deployment_id))!;
        const lease = await this.repo.lockExpiredLease(tx, l.id);
        if (!lease) return;
        const reason =
          lease.state === 'offered'
            ? 'agent lost: the target never accepted the work'
            : `agent lost: no heartbeat for ${Math.round(this.ttlSeconds)} s`;
        const run = await this.repo.lockTargetRun(tx, lease.target_run_id);
        await this.repo.releaseLease(tx, l.id, 'lost');
        if (lease.purpose === 'check') {
          // Its health cannot be vouched for: the target fails, as agent lost (a cancel leaves the check undone).
          const cancelling = dep.state === 'cancelling';
          await this.repo.settleCheck(tx, run.id, cancelling ? null : 'failed', { error: reason, kind: 'agent-lost' });
          await this.log.append(tx, dep.id, [
            {
              level: cancelling ? 'warn' : 'error',
              machineId: run.machine_id,
              stepName: ctx?.stepName ?? 'Step',
              text: `${ctx?.stepName ?? 'Step'} on ${run.machine_name}: health check at the end of the bake: ${reason}`,
            },
          ]);
          touched.add(l.deployment_id);
          return;
        }
        const state = dep.state === 'cancelling' ? 'cancelled' : 'failed';
        await this.settleTarget(
          tx,
          dep,
          run,
          ctx?.stepName ?? 'Step',
          state,
          run.actions,
          { error: reason, kind: 'agent-lost' },
          `${ctx?.stepName ?? 'Step'} on ${run.machine_name} failed: ${reason}`,
        );
        this.logger.warn('lease expired', { leaseId: l.id, deploymentId: l.deployment_id, machine: run.machine_name });
        touched.add(l.deployment_id);
      });
    }
    for (const id of touched) this.events.emit('progressed', id);
  }
}

/** The log line of a target's outcome as the agent reported it: "Step on machine succeeded (exit code 0)". */
function outcomeText(ctx: LeaseContext, msg: AgentMessageOf<'lease.result'>): string {
  const exit = msg.exitCode !== undefined && msg.exitCode !== null ? ` (exit code ${msg.exitCode})` : '';
  return `${ctx.stepName} on ${ctx.machineName} ${OUTCOME_TEXT[msg.state]}${exit}${msg.error ? `: ${msg.error}` : ''}`;
}

/** The target run's actions with the states the agent reported for them. */
function mergeActions(actions: TargetAction[], reported: AgentMessageOf<'lease.result'>['actions']): TargetAction[] {
  const byIndex = new Map(reported.map((r) => [r.index, r]));
  return actions.map((a, i) => {
    const r = byIndex.get(i);
    return r ? { ...a, state: r.state, exitCode: r.exitCode ?? null } : a;
  });
}

/** Actions the agent never reached, once the target is settled: skipped after a failure, cancelled on cancel. */
function finalActions(actions: TargetAction[], state: 'success' | 'failed' | 'cancelled'): TargetAction[] {
  return actions.map((a) =>
    a.state === 'pending' || a.state === 'running'
      ? {
          ...a,
          state:
            a.state === 'running'
              ? ('failed' as const)
              : state === 'cancelled'
                ? ('cancelled' as const)
                : ('skipped' as const),
        }
      : a,
  );
}
