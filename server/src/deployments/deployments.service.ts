/**
 * Deployments as operators see them: created (with their plan laid out), read, listed, previewed, cancelled. Driving
 * one is the dispatcher's (orchestration/); this service tells it through DeploymentEvents.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import type { Deployment, DeploymentSummary, Preview } from '#shared/api/types.js';
import { DomainError, invalid, notFound, unknownReference } from '../common/errors.js';
import { isUuid } from '../common/http.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { EnvironmentsService } from '../environments/environments.service.js';
import { LifecyclesService } from '../lifecycles/lifecycles.service.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { MachinesService } from '../machines/machines.service.js';
import { ProjectsService } from '../projects/projects.service.js';
import { ReleasesService } from '../releases/releases.service.js';
import { DeploymentEvents } from './deployment-events.js';
import { DeploymentLogService } from './deployment-log.service.js';
import { iso } from '../database/sql.js';
import { DeploymentRepository, type Db } from './deployment.repository.js';
import { HEALTH_CHECK_ACTION, type Step } from '#shared/process/index.js';
import type { EnvironmentEntity } from '../environments/environment.entity.js';
import type { ReleaseEntity } from '../releases/release.entity.js';
import {
  ACTIVE_STATES,
  type DeploymentRow,
  type LogEntryInput,
  type StepPolicy,
  type TargetAction,
} from './deployment.types.js';
import type { CreateDeploymentDto } from './dto/create-deployment.dto.js';
import type { KeyScope } from '../auth/scope.js';
import { estimateDeployment } from './estimate.js';
import { layoutDeployment, type LayoutMachine, type LayoutOptions } from './layout.js';

/** The name shown for the target run of a step that runs on the server (manual intervention). */
export const SERVER_TARGET_NAME = '(server)';

/** The preview's estimates go by this many of the project's newest finished deployments. */
const ESTIMATE_HISTORY = 50;

const FINISHED_STATES: readonly string[] = ['success', 'failed', 'cancelled'];

/**
 * What a new deployment is made of. Creating one, retrying a failed one's targets and rolling one back differ only
 * in these; `insertNew` lays it out and writes it the same way for all three.
 */
interface NewDeployment {
  release: ReleaseEntity;
  env: EnvironmentEntity;
  projectName: string;
  /** The machines it may target (deployable now), read in the creating transaction. */
  machines: LayoutMachine[];
  guidedFailure: boolean;
  rollbackOnFailure: boolean;
  specific: string[];
  excluded: string[];
  /** The order machines go in (a rollback: newest first), and per step the only machines it targets (a retry). */
  layout?: LayoutOptions;
  /** Steps settled at once as skipped, without targets, with their reason (a retry: what succeeded before). */
  settled?: ReadonlyMap<number, string>;
  retryOf?: string;
  rollbackOf?: string;
  /** The API key that asked for it (a retry or rollback: whoever asked for that). */
  createdBy: Creator | null;
  /** Why it exists, logged after its first line. */
  lines?: LogEntryInput[];
  /** Scheduled: queued at this time (laid out then), cancelled if not started by `queueExpiresAt`. */
  queueAt?: Date;
  queueExpiresAt?: Date;
  /** Made by a target trigger for this machine. */
  trigger?: { kind: 'new-machine'; machineId: string };
}

/** Who asked for a deployment: an API key's id and name. */
export interface Creator {
  id: string;
  name: string;
}

/** What the dispatcher needs of a step's rollout policy, kept on the step's row. */
function stepPolicy(step: Step): StepPolicy {
  const p: StepPolicy = {};
  if (step.bakeSeconds) p.bakeSeconds = step.bakeSeconds;
  if (step.healthCheck) p.healthCheck = true;
  if (step.approveEachBatch) {
    p.approveEachBatch = true;
    if (step.approvalTimeoutSeconds) p.approvalTimeoutSeconds = step.approvalTimeoutSeconds;
    p.approvalDefault = step.approvalDefault ?? 'abort';
  }
  if (step.skipUnavailable) p.skipUnavailable = true;
  return p;
}

/** Items cut into batches of these sizes, in order. */
function batchesOf<T>(items: T[], sizes: number[]): T[][] {
  let at = 0;
  return sizes.map((n) => items.slice(at, (at += n)));
}

/** For each target in order, its batch (from 0), given the batches' sizes. */
function batchIndexes(sizes: number[]): number[] {
  return sizes.flatMap((n, b) => Array<number>(n).fill(b));
}

/** Who created a deployment row, if it was recorded. */
function creatorOf(d: DeploymentRow): Creator | null {
  return d.created_by_name ? { id: d.created_by_key_id!, name: d.created_by_name } : null;
}
const createdBy = (d: DeploymentRow) => {
  const c = creatorOf(d);
  return c ? { createdBy: c } : {};
};

/** Who a target trigger's deployments are created by: the system, not a key (no key has this id). */
export const TRIGGER_CREATOR: Creator = { id: '00000000-0000-0000-0000-000000000000', name: 'trigger' };

/** A deployment's schedule and trigger as the API shows them (each only when set). */
function scheduleAndTrigger(d: DeploymentRow) {
  return {
    ...(d.queue_at ? { queueAt: iso(d.queue_at)! } : {}),
    ...(d.queue_expires_at ? { queueExpiresAt: iso(d.queue_expires_at)! } : {}),
    ...(d.trigger ? { trigger: d.trigger } : {}),
    ...(d.trigger_machine_id ? { triggerMachineId: d.trigger_machine_id } : {}),
  };
}

/** A clock a second behind ours is not "in the past": a client that asks for "now" must not be refused. */
const SCHEDULE_SLACK_MS = 1_000;

/**
 * A deployment's schedule from its request: `queueAt` (ISO-8601, not in the past) and `queueExpiresAt` (after
 * `queueAt`, or after now without one: a queued deployment not started by then is cancelled too). Refused naming the
 * field.
 */
export function scheduleOf(
  dto: Pick<CreateDeploymentDto, 'queueAt' | 'queueExpiresAt'>,
  now = Date.now(),
): { queueAt?: Date; queueExpiresAt?: Date } {
  const parse = (field: 'queueAt' | 'queueExpiresAt') => {
    const v = dto[field];
    if (v === undefined || v === null) return undefined;
    const t = typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(v) ? new Date(v) : new Date(NaN);
    if (Number.isNaN(t.getTime()))
      throw invalid(`${field} must be an ISO-8601 time like 2026-12-24T18:00:00Z (got ${JSON.stringify(v)})`);
    return t;
  };
  const queueAt = parse('queueAt');
  const queueExpiresAt = parse('queueExpiresAt');
  if (queueAt && queueAt.getTime() < now - SCHEDULE_SLACK_MS)
    throw invalid(`queueAt must not be in the past (got ${queueAt.toISOString()})`);
  if (queueExpiresAt && queueAt && queueExpiresAt.getTime() <= queueAt.getTime())
    throw invalid(`queueExpiresAt must be after queueAt (got ${queueExpiresAt.toISOString()})`);
  if (queueExpiresAt && queueExpiresAt.getTime() <= now)
    throw invalid(`queueExpiresAt must be in the future (got ${queueExpiresAt.toISOString()})`);
  return { ...(queueAt ? { queueAt } : {}), ...(queueExpiresAt ? { queueExpiresAt } : {}) };
}

@Injectable()
export class DeploymentsService {
  /** This service's log lines carry `context: 'deployments'`. */
  private readonly logger: Logger;

  constructor(
    private readonly repo: DeploymentRepository,
    private readonly releases: ReleasesService,
    private readonly envs: EnvironmentsService,
    private readonly projects: ProjectsService,
    private readonly machines: MachinesService,
    private readonly log: DeploymentLogService,
    private readonly events: DeploymentEvents,
    private readonly lifecycles: LifecyclesService,
    @Inject(LOGGER) logger: Logger,
    @Inject(CONFIG) private readonly config: CuttleConfig,
  ) {
    this.logger = logger.child({ context: 'deployments' });
  }

  /**
   * Creates a deployment and lays out its plan: each step's targets (fixed now, in name order), resolved window and
   * failure budget, and each target's actions with those the conditions skip already marked. Returns it as created
   * (`queued`), read in the creating transaction: the dispatcher starts on it the moment it commits, and a read after
   * that would race its first round.
   */
  async create(dto: CreateDeploymentDto, by: Creator | null = null): Promise<Deployment> {
    if (!isUuid(dto.releaseId)) throw unknownReference(`releaseId names an unknown release "${dto.releaseId}"`);
    const release = await this.releases.get(dto.releaseId).catch(() => {
      throw unknownReference(`releaseId names an unknown release "${dto.releaseId}"`);
    });
    const [env] = await this.envs.resolve([dto.environmentId], 'environmentId');
    const project = await this.projects.get(release.projectId);
    const specific = (dto.specificMachineIds ?? []).map((s) => s.toLowerCase());
    const excluded = (dto.excludedMachineIds ?? []).map((s) => s.toLowerCase());
    const schedule = scheduleOf(dto);
    const created = await this.repo.transaction(async (tx) => {
      // Only a deployment asked for is held to the lifecycle: a retry or a rollback goes where a release already went.
      const lifecycle = await this.lifecycles.of(release, tx);
      if (lifecycle)
        this.lifecycles.assertAllowed(
          lifecycle,
          release,
          env,
          (await this.repo.releaseHistory(release.id, tx)).succeeded,
        );
      const machines = await this.machines.deployable(env.id, specific, excluded, tx);
      const id = await this.insertNew(tx, {
        release,
        env,
        projectName: project.name,
        machines,
        guidedFailure: dto.guidedFailure ?? env.guidedFailure,
        rollbackOnFailure: dto.rollbackOnFailure ?? env.rollbackOnFailure,
        specific,
        excluded,
        createdBy: by,
        ...schedule,
      });
      return this.get(id, tx);
    });
    this.logger.info(schedule.queueAt ? 'deployment scheduled' : 'deployment created', {
      deploymentId: created.id,
      release: release.version,
      environment: env.name,
      ...(schedule.queueAt ? { queueAt: schedule.queueAt.toISOString() } : {}),
    });
    this.events.emit('changed', created.id);
    return created;
  }

  /**
   * Writes a new deployment in the caller's transaction, laid out as `create` describes (the plan fixed now), and
   * returns its id: its row (taking the project and environment's queue lock), its steps (those `settled` skipped
   * at once), its target runs, and the first lines of its log. A scheduled one (`queueAt`) is only its row and a
   * line: it is laid out when its time comes (`activateScheduled`), on the machines there are then.
   */
  private async insertNew(tx: EntityManager, n: NewDeployment): Promise<string> {
    const { release, env } = n;
    // The node that creates a deployment drives it (it holds the ownership lease from the first moment).
    const id = await this.repo.insertDeployment(tx, {
      releaseId: release.id,
      projectId: release.projectId,
      environmentId: env.id,
      guidedFailure: n.guidedFailure,
      rollbackOnFailure: n.rollbackOnFailure,
      retryOf: n.retryOf,
      rollbackOf: n.rollbackOf,
      createdBy: n.createdBy,
      specific: n.specific,
      excluded: n.excluded,
      ownerNode: this.config.nodeId,
      ownershipTtlSeconds: this.config.ownershipTtlMs / 1000,
      queueAt: n.queueAt,
      queueExpiresAt: n.queueExpiresAt,
      trigger: n.trigger,
    });
    if (n.queueAt) {
      await this.log.append(tx, id, [
        {
          level: 'info',
          text: `Scheduled: ${n.projectName} release ${release.version} to ${env.name} is queued at ${n.queueAt.toISOString()}${n.queueExpiresAt ? `, or cancelled if it has not started by ${n.queueExpiresAt.toISOString()}` : ''}`,
        },
        ...(n.lines ?? []),
      ]);
      return id;
    }
    await this.layOut(tx, id, n);
    return id;
  }

  /** Lays out a deployment's plan (steps, target runs, the first lines of its log) under its row, in `tx`. */
  private async layOut(tx: EntityManager, id: string, n: NewDeployment): Promise<void> {
    const { release, env } = n;
    const steps = layoutDeployment(release.process, env.id, release.channelId, n.machines, n.layout);
    const lines: LogEntryInput[] = [
      { level: 'info', text: `Deploying ${n.projectName} release ${release.version} to ${env.name}` },
      ...(n.lines ?? []),
    ];
    // A step that cannot run here at all is settled now, with its reason, so the plan reads true from the start.
    await this.repo.insertSteps(
      tx,
      id,
      steps.map((s) => ({
        index: s.index,
        name: s.name,
        state: (n.settled?.get(s.index) ?? s.skipReason) ? 'skipped' : 'pending',
        window: s.window,
        maxFailures: s.maxFailures,
        condition: s.condition,
        startTrigger: s.startTrigger,
        skipReason: n.settled?.get(s.index) ?? s.skipReason ?? null,
        batchCount: Math.max(1, s.batches.length),
        policy: stepPolicy(release.process[s.index]),
      })),
    );
    for (const step of steps) {
      const skipReason = n.settled?.get(step.index) ?? step.skipReason;
      if (skipReason) {
        lines.push({
          level: 'warn',
          stepName: step.name,
          text: `Step ${step.name} will be skipped: ${skipReason}`,
        });
        if (n.settled?.has(step.index) || (step.runsOn === 'targets' && step.targets.length === 0)) continue;
      }
      const state = skipReason ? 'skipped' : 'pending';
      const actions: TargetAction[] = step.actions.map((a) =>
        a.willRun
          ? { name: a.name, type: a.type, state: state === 'skipped' ? 'skipped' : 'pending' }
          : { name: a.name, type: a.type, state: 'skipped', skipReason: a.skipReason },
      );
      // A step's health check runs after the target's actions, as one more of them (so a failed check fails the
      // target like a failed action); it is left out where every action is skipped.
      if (
        release.process[step.index].healthCheck &&
        step.runsOn === 'targets' &&
        actions.some((a) => a.state === 'pending')
      )
        actions.push({ name: HEALTH_CHECK_ACTION, type: 'health-check', state: 'pending' });
      for (const a of step.actions)
        if (!a.willRun && !skipReason)
          lines.push({
            level: 'info',
            stepName: step.name,
            actionName: a.name,
            text: `Action ${a.name} will be skipped: ${a.skipReason}`,
          });
      const batchOf = batchIndexes(step.batches);
      const targets =
        step.runsOn === 'server'
          ? [{ id: null, name: SERVER_TARGET_NAME, batch: 0 }]
          : step.targets.map((t, i) => ({ ...t, batch: batchOf[i] }));
      await this.repo.insertTargetRuns(tx, id, step.index, state, actions, targets);
    }
    // Read under the pair's queue lock that insertDeployment took: every deployment ahead of this one is visible.
    const ahead = await this.repo.queuedBehind(
      { project_id: release.projectId, environment_id: env.id, queue_seq: (await this.getRow(id, tx)).queue_seq },
      tx,
    );
    if (ahead)
      lines.push({
        level: 'info',
        text: `Queued behind deployment ${ahead}: deployments of ${n.projectName} to ${env.name} run one at a time, in the order they were created`,
      });
    await this.log.append(tx, id, lines);
  }

  /** What a deployment of this release to this environment would do, without running anything. */
  async preview(q: {
    releaseId?: string;
    environmentId?: string;
    specificMachineIds?: string;
    excludedMachineIds?: string;
  }): Promise<Preview> {
    if (!q.releaseId) throw invalid('releaseId is required');
    if (!q.environmentId) throw invalid('environmentId is required');
    if (!isUuid(q.releaseId)) throw unknownReference(`releaseId names an unknown release "${q.releaseId}"`);
    const release = await this.releases.get(q.releaseId).catch(() => {
      throw unknownReference(`releaseId names an unknown release "${q.releaseId}"`);
    });
    const [env] = await this.envs.resolve([q.environmentId], 'environmentId');
    const list = (s?: string) =>
      s
        ? s
            .split(',')
            .map((x) => x.trim().toLowerCase())
            .filter(Boolean)
        : [];
    const machines = await this.machines.deployable(env.id, list(q.specificMachineIds), list(q.excludedMachineIds));
    const steps = layoutDeployment(release.process, env.id, release.channelId, machines);
    const FAILURE_ONLY = 'condition: runs only if an earlier step failed';
    const preview: Preview = {
      releaseId: release.id,
      environmentId: env.id,
      estimatedSeconds: null,
      steps: steps.map((s) => {
        const conditionSkip = !s.skipReason && s.condition === 'failure';
        const skipReason = s.skipReason ?? (conditionSkip ? FAILURE_ONLY : undefined);
        return {
          name: s.name,
          runsOn: s.runsOn,
          condition: s.condition,
          startTrigger: s.startTrigger,
          windowSize: s.window,
          maxFailures: s.maxFailures,
          willRun: !skipReason,
          ...(skipReason ? { skipReason } : {}),
          targets: s.targets.map((t) => ({ machineId: t.id, machineName: t.name })),
          batches: batchesOf(
            s.targets.map((t) => t.name),
            s.batches,
          ),
          estimatedSeconds: null,
          actions: s.actions.map((a) => {
            const reason =
              a.skipReason ?? (s.skipReason ? `step: ${s.skipReason}` : conditionSkip ? FAILURE_ONLY : undefined);
            return { name: a.name, type: a.type, willRun: !reason, ...(reason ? { skipReason: reason } : {}) };
          }),
        };
      }),
    };
    // Estimates from how long the project's target runs took before (by step name, in any environment).
    const estimate = estimateDeployment(
      steps.map((s, i) => ({
        name: s.name,
        willRun: preview.steps[i].willRun,
        startTrigger: s.startTrigger,
        runsOn: s.runsOn,
        window: s.window,
        batches: s.batches,
        bakeSeconds: release.process[s.index].bakeSeconds,
      })),
      await this.repo.stepDurationMedians(release.projectId, ESTIMATE_HISTORY),
    );
    preview.steps.forEach((s, i) => (s.estimatedSeconds = estimate.steps[i]));
    preview.estimatedSeconds = estimate.total;
    return preview;
  }

  async getRow(id: string, db?: Db): Promise<DeploymentRow> {
    const row = await this.repo.findDeployment(id, db);
    if (!row) throw notFound(`deployment ${id} not found`);
    return row;
  }

  /** The deployment as the API shows it; `db`: read in that transaction (see create). */
  async get(id: string, db?: Db): Promise<Deployment> {
    const d = await this.getRow(id, db);
    // Through `db` alone: inside a transaction on the embedded database (one connection), a read through the pool
    // would wait for ever.
    const { steps, runs, releaseVersion } = await this.repo.readView(d, db);
    const queuedBehind = d.state === 'queued' ? await this.repo.queuedBehind(d, db) : undefined;
    return {
      id: d.id,
      releaseId: d.release_id,
      releaseVersion,
      projectId: d.project_id,
      environmentId: d.environment_id,
      state: d.state,
      ...(queuedBehind ? { queuedBehind } : {}),
      guidedFailure: d.guided_failure,
      rollbackOnFailure: d.rollback_on_failure,
      ...(d.retry_of ? { retryOf: d.retry_of } : {}),
      ...(d.rollback_of ? { rollbackOf: d.rollback_of } : {}),
      ...(d.rolled_back_by ? { rolledBackBy: d.rolled_back_by } : {}),
      ...createdBy(d),
      ...(d.state === 'paused' && d.paused_at ? { pausedAt: iso(d.paused_at)! } : {}),
      ...scheduleAndTrigger(d),
      specificMachineIds: d.specific_machine_ids,
      excludedMachineIds: d.excluded_machine_ids,
      error: d.error ?? undefined,
      ownerNode: d.owner_node ?? undefined,
      createdAt: iso(d.created_at)!,
      startedAt: iso(d.started_at),
      finishedAt: iso(d.finished_at),
      steps: steps.map((s) => ({
        name: s.name,
        state: s.state,
        windowSize: s.window_size,
        maxFailures: s.max_failures,
        condition: s.condition,
        startTrigger: s.start_trigger,
        ...(s.skip_reason ? { skipReason: s.skip_reason } : {}),
        batchCount: s.batch_count,
        currentBatch: s.state === 'running' ? s.current_batch : null,
        ...(s.state === 'running' && s.gate ? { gate: s.gate } : {}),
        ...(s.state === 'running' && s.gate === 'bake' && s.gate_until ? { bakeUntil: iso(s.gate_until)! } : {}),
        startedAt: iso(s.started_at),
        finishedAt: iso(s.finished_at),
        targets: runs
          .filter((t) => t.step_index === s.step_index)
          .map((t) => ({
            machineId: t.machine_id,
            machineName: t.machine_name,
            state: t.state,
            batch: t.batch,
            ...((t.state === 'pending' && t.waiting_for === 'machine') ||
            (t.state === 'running' && t.waiting_for === 'person')
              ? { waitingFor: t.waiting_for }
              : {}),
            ...(t.skip_reason ? { skipReason: t.skip_reason } : {}),
            ...(t.bake_check ? { bakeCheck: t.bake_check } : {}),
            attempt: t.attempt,
            error: t.error ?? undefined,
            ...(t.state === 'failed' ? { failureKind: t.failure_kind ?? 'script' } : {}),
            startedAt: iso(t.started_at),
            finishedAt: iso(t.finished_at),
            actions: t.actions.map((a) => ({
              name: a.name,
              state: a.state,
              exitCode: a.exitCode ?? null,
              ...(a.skipReason ? { skipReason: a.skipReason } : {}),
            })),
          })),
      })),
    };
  }

  async list(filter: {
    projectId?: string;
    environmentId?: string;
    state?: string;
    limit?: number;
    /** The key's scope: only its environments' and projects' deployments are listed. */
    scope?: KeyScope;
  }): Promise<DeploymentSummary[]> {
    const projectId = filter.projectId ? (await this.projects.get(filter.projectId)).id : undefined;
    // An environment by id or by name (an unknown name is refused).
    const environmentId = !filter.environmentId
      ? undefined
      : isUuid(filter.environmentId)
        ? filter.environmentId.toLowerCase()
        : (await this.envs.resolve([filter.environmentId], 'environmentId'))[0].id;
    const rows = await this.repo.listDeployments({
      projectId,
      environmentId,
      state: filter.state,
      environmentIds: filter.scope?.environmentIds,
      projectIds: filter.scope?.projectIds,
      limit: filter.limit ?? 100,
    });
    return rows.map((d) => ({
      id: d.id,
      releaseId: d.release_id,
      projectId: d.project_id,
      environmentId: d.environment_id,
      state: d.state,
      ...(d.queued_behind ? { queuedBehind: d.queued_behind } : {}),
      ...(d.retry_of ? { retryOf: d.retry_of } : {}),
      ...(d.rollback_of ? { rollbackOf: d.rollback_of } : {}),
      ...createdBy(d),
      ...scheduleAndTrigger(d),
      ...(d.error ? { error: d.error } : {}),
      createdAt: iso(d.created_at)!,
      startedAt: iso(d.started_at),
      finishedAt: iso(d.finished_at),
    }));
  }

  /** Asks a deployment to stop: nothing new starts, running scripts are killed, it ends `cancelled`. */
  /**
   * Pauses a deployment: no target, check, batch or step starts until it is resumed; running ones finish, and it keeps
   * its place in the queue. Pausing a paused one changes nothing. The state is a row: it holds across a restart and
   * on every node.
   */
  async pause(id: string): Promise<DeploymentRow['state']> {
    await this.repo.transaction(async (tx) => {
      const d = await this.repo.lockDeployment(tx, id);
      if (!d) throw notFound(`deployment ${id} not found`);
      if (d.state === 'paused') return;
      if (d.state === 'cancelling' || !(ACTIVE_STATES as readonly string[]).includes(d.state))
        throw new DomainError('deployment_finished', `deployment ${id} cannot be paused: it is ${d.state}`);
      await this.repo.pauseDeployment(tx, id);
      await this.log.append(tx, id, [
        { level: 'warn', text: 'Paused: no new target starts until it is resumed; running ones finish' },
      ]);
    });
    this.events.emit('changed', id);
    return 'paused';
  }

  /** Resumes a paused deployment where it stopped; resuming one that is not paused changes nothing. */
  async resume(id: string): Promise<DeploymentRow['state']> {
    const state = await this.repo.transaction(async (tx) => {
      const d = await this.repo.lockDeployment(tx, id);
      if (!d) throw notFound(`deployment ${id} not found`);
      if (!(ACTIVE_STATES as readonly string[]).includes(d.state) || d.state === 'cancelling')
        throw new DomainError('deployment_finished', `deployment ${id} cannot be resumed: it is ${d.state}`);
      if (d.state !== 'paused') return d.state;
      await this.repo.unpauseDeployment(tx, id);
      await this.log.append(tx, id, [{ level: 'info', text: 'Resumed' }]);
      return d.started_at ? 'executing' : 'queued';
    });
    this.events.emit('changed', id);
    return state;
  }

  async cancel(id: string) {
    await this.repo.transaction(async (tx) => {
      const d = await this.repo.lockDeployment(tx, id);
      if (!d) throw notFound(`deployment ${id} not found`);
      if (d.state === 'cancelling') return;
      if (d.state === 'scheduled') {
        // Nothing of it runs or is laid out yet: it ends now, no dispatcher round needed.
        const reason = 'cancelled before its scheduled time';
        await this.repo.cancelUnstarted(tx, id, reason);
        await this.log.append(tx, id, [{ level: 'warn', text: `Deployment cancelled: ${reason}` }]);
        return;
      }
      if (!(ACTIVE_STATES as readonly string[]).includes(d.state))
        throw new DomainError('deployment_finished', `deployment ${id} has already finished (${d.state})`);
      await this.repo.setDeploymentState(tx, id, 'cancelling');
      // Questions nobody needs to answer any more are closed; the targets that waited on them end cancelled.
      const closed = await this.repo.closePendingInterruptions(tx, id);
      await this.repo.cancelWaitingTargetRuns(tx, closed);
      await this.log.append(tx, id, [
        {
          level: 'warn',
          text: `Cancellation requested: no new work starts; running scripts are being stopped${closed.length ? `; ${closed.length} pending interruption(s) closed` : ''}`,
        },
      ]);
    });
    this.events.emit('changed', id);
  }

  /**
   * A scheduled deployment whose time came joins the queue (the scheduler calls it on every node; once is all it
   * takes): laid out on the machines deployable now, with a new place in its pair's queue. One whose expiry passed
   * meanwhile (a server that was down), whose lifecycle no longer allows it, or whose machines are gone ends
   * `cancelled` with the reason (`error` and its log). Lock order: the pair's queue lock (level 0), then its row
   * (level 1), under which it must still be `scheduled`. Returns its state afterwards, or undefined when another
   * node (or an operator's cancel) got there first.
   */
  async activateScheduled(id: string): Promise<'queued' | 'cancelled' | undefined> {
    const pre = await this.repo.findDeployment(id);
    if (!pre || pre.state !== 'scheduled') return undefined;
    const [release, env, project] = await Promise.all([
      this.releases.get(pre.release_id),
      this.envs.get(pre.environment_id),
      this.projects.get(pre.project_id),
    ]);
    const outcome = await this.repo.transaction(async (tx) => {
      await this.repo.lockQueue(tx, pre.project_id, pre.environment_id);
      const d = await this.repo.lockDeployment(tx, id);
      if (!d || d.state !== 'scheduled') return undefined;
      const cancel = async (reason: string) => {
        await this.repo.cancelUnstarted(tx, id, reason);
        await this.log.append(tx, id, [{ level: 'warn', text: `Deployment cancelled: ${reason}` }]);
        return 'cancelled' as const;
      };
      if (d.queue_expires_at && d.queue_expires_at.getTime() <= Date.now())
        return cancel(`not started by its expiry (queueExpiresAt ${d.queue_expires_at.toISOString()})`);
      let machines: LayoutMachine[];
      try {
        const lifecycle = await this.lifecycles.of(release, tx);
        if (lifecycle)
          this.lifecycles.assertAllowed(
            lifecycle,
            release,
            env,
            (await this.repo.releaseHistory(release.id, tx)).succeeded,
          );
        machines = await this.machines.deployable(env.id, d.specific_machine_ids, d.excluded_machine_ids, tx);
      } catch (e) {
        if (e instanceof DomainError) return cancel(`it could not start at its scheduled time: ${e.message}`);
        throw e;
      }
      await this.repo.activateScheduled(tx, id, this.config.nodeId, this.config.ownershipTtlMs / 1000);
      await this.layOut(tx, id, {
        release,
        env,
        projectName: project.name,
        machines,
        guidedFailure: d.guided_failure,
        rollbackOnFailure: d.rollback_on_failure,
        specific: d.specific_machine_ids,
        excluded: d.excluded_machine_ids,
        createdBy: creatorOf(d),
        lines: [{ level: 'info', text: `Its scheduled time ${d.queue_at!.toISOString()} came: queued` }],
      });
      return 'queued' as const;
    });
    if (outcome) {
      this.logger.info(outcome === 'queued' ? 'scheduled deployment queued' : 'scheduled deployment cancelled', {
        deploymentId: id,
      });
      this.events.emit('changed', id);
    }
    return outcome;
  }

  /**
   * A deployment not started by its `queueExpiresAt` (still scheduled, or queued behind another) ends `cancelled`
   * with the reason. Under its row lock (level 1), so a dispatcher round that starts it and this cannot both win:
   * whichever is second finds it started, or finished.
   */
  async expireUnstarted(id: string): Promise<boolean> {
    const done = await this.repo.transaction(async (tx) => {
      const d = await this.repo.lockDeployment(tx, id);
      if (!d || d.started_at || !d.queue_expires_at || d.queue_expires_at.getTime() > Date.now()) return false;
      if (d.state !== 'scheduled' && d.state !== 'queued') return false;
      const reason = `not started by its expiry (queueExpiresAt ${d.queue_expires_at.toISOString()})`;
      await this.repo.cancelUnstarted(tx, id, reason);
      await this.log.append(tx, id, [{ level: 'warn', text: `Deployment cancelled: ${reason}` }]);
      return true;
    });
    if (done) {
      this.logger.info('deployment expired before it started', { deploymentId: id });
      this.events.emit('changed', id);
      this.events.emit('finished', id, 'cancelled');
    }
    return done;
  }

  /**
   * A target trigger: deploys the environment's last successful release of the project to one machine that arrived
   * there (`trigger: new-machine`, created by the system), queued behind what runs there like any deployment. Not held
   * to the lifecycle (the release already went there). Undefined when there is nothing to deploy, or when a
   * trigger's deployment for the same machine, project and environment has not ended yet (checked under the pair's
   * queue lock, which creating one takes: two nodes or two events cannot both make one). Refusals (the machine left
   * the environment, was disabled...) are DomainErrors for the caller to record.
   */
  async deployToNewMachine(t: {
    machineId: string;
    projectId: string;
    environmentId: string;
    releaseId: string;
    reason: string;
  }): Promise<Deployment | undefined> {
    const [release, env, project] = await Promise.all([
      this.releases.get(t.releaseId),
      this.envs.get(t.environmentId),
      this.projects.get(t.projectId),
    ]);
    const created = await this.repo.transaction(async (tx) => {
      await this.repo.lockQueue(tx, t.projectId, t.environmentId);
      if (await this.repo.pendingTriggered(tx, t.machineId, t.projectId, t.environmentId)) return undefined;
      const machines = await this.machines.deployable(env.id, [t.machineId], [], tx);
      if (!machines.length) throw invalid(`the machine is disabled or revoked: nothing to deploy to`);
      const id = await this.insertNew(tx, {
        release,
        env,
        projectName: project.name,
        machines,
        guidedFailure: env.guidedFailure,
        rollbackOnFailure: false,
        specific: [t.machineId],
        excluded: [],
        createdBy: TRIGGER_CREATOR,
        trigger: { kind: 'new-machine', machineId: t.machineId },
        lines: [
          {
            level: 'info',
            machineId: t.machineId,
            text: `Target trigger: ${machines[0].name} ${t.reason}; it gets release ${release.version}, the last deployed successfully to ${env.name}`,
          },
        ],
      });
      return this.get(id, tx);
    });
    if (created) {
      this.logger.info('deployment created by a target trigger', {
        deploymentId: created.id,
        machineId: t.machineId,
        release: release.version,
      });
      this.events.emit('changed', created.id);
    }
    return created;
  }

  /**
   * Retries what did not succeed in a failed deployment, as a new deployment of the same release and environment
   * (`retryOf`), with its guided failure and rollback choice: from the first step that failed, each step on the
   * machines whose target run there did not succeed (failed, skipped because never reached, cancelled, pending), a
   * step on the server if it did not succeed; steps before it, and later steps where nothing is left to retry, are
   * settled skipped (`succeeded in deployment ID`). Machines revoked or disabled since (or gone from the environment
   * or the step's roles) are left out, and its log says so. The earlier deployment's output variables are copied, so
   * the steps that run again see what the steps that do not set. It queues like any deployment.
   */
  async retryFailed(id: string, by: Creator | null = null): Promise<Deployment> {
    const orig = await this.getRow(id);
    if (orig.state !== 'failed')
      throw new DomainError(
        'deployment_not_failed',
        `deployment ${id} has not failed (${orig.state}): only a failed deployment's targets can be retried`,
      );
    const [release, env, project, { steps, runs }] = await Promise.all([
      this.releases.get(orig.release_id),
      this.envs.get(orig.environment_id),
      this.projects.get(orig.project_id),
      this.repo.readView(orig),
    ]);
    // A failed deployment has a failed step; the fallback only keeps a deployment without one from retrying nothing.
    const first =
      steps.find((s) => s.state === 'failed') ??
      steps.find((s) => runs.some((r) => r.step_index === s.step_index && r.state !== 'success'));
    const firstIndex = first?.step_index ?? steps.length;
    const created = await this.repo.transaction(async (tx) => {
      const machines = await this.machines.deployable(env.id, [], [], tx);
      const deployable = new Map(machines.map((m) => [m.id, m]));
      const settled = new Map<number, string>();
      const only = new Map<number, Set<string>>();
      const retried = new Map<string, string>();
      const lines: LogEntryInput[] = [
        {
          level: 'info',
          text: `Retrying what did not succeed in deployment ${id}${first ? `, from step ${first.name}` : ''}`,
        },
      ];
      for (const s of steps) {
        const i = s.step_index;
        const again = runs.filter((r) => r.step_index === i && r.state !== 'success');
        if (i < firstIndex || !again.length) {
          settled.set(i, `${s.state === 'success' ? 'succeeded' : s.state} in deployment ${id}`);
          continue;
        }
        const roles = release.process[i].targetRoles ?? [];
        if (!roles.length) {
          lines.push({ level: 'info', stepName: s.name, text: `Step ${s.name}: runs again on the server` });
          continue;
        }
        const kept = again.filter((r) => deployable.get(r.machine_id!)?.roles.some((x) => roles.includes(x)));
        for (const r of again.filter((x) => !kept.includes(x)))
          lines.push({
            level: 'warn',
            stepName: s.name,
            machineId: r.machine_id,
            text: `Step ${s.name} on ${r.machine_name}: left out, ${deployable.has(r.machine_id!) ? "the machine no longer has the step's roles" : 'the machine was revoked or disabled since (or left the environment)'}`,
          });
        if (!kept.length) {
          settled.set(i, `nothing left to retry from deployment ${id}: its machines were revoked or disabled since`);
          continue;
        }
        only.set(i, new Set(kept.map((r) => r.machine_id!)));
        for (const r of kept) retried.set(r.machine_id!, r.machine_name);
        lines.push({
          level: 'info',
          stepName: s.name,
          text: `Step ${s.name}: retrying on ${kept.map((r) => r.machine_name).join(', ')}`,
        });
      }
      const newId = await this.insertNew(tx, {
        release,
        env,
        projectName: project.name,
        machines,
        guidedFailure: orig.guided_failure,
        rollbackOnFailure: orig.rollback_on_failure,
        // What it is limited to: the machines it retries, by name.
        specific: [...retried].sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0)).map(([mid]) => mid),
        excluded: [],
        layout: { only },
        settled,
        retryOf: id,
        createdBy: by,
        lines,
      });
      const outputs = await this.repo.copyOutputVariables(tx, id, newId);
      if (outputs)
        await this.log.append(tx, newId, [
          { level: 'info', text: `${outputs} output variable(s) of deployment ${id} carried over` },
        ]);
      await this.log.append(tx, id, [
        { level: 'info', text: `Retried by deployment ${newId}: what did not succeed here runs again there` },
      ]);
      return this.get(newId, tx);
    });
    this.logger.info('deployment created', { deploymentId: created.id, retryOf: id, release: release.version });
    this.events.emit('changed', created.id);
    return created;
  }

  /**
   * Rolls a finished deployment back on demand (see `rollBack`). A deployment is rolled back once: asked again, the
   * answer is the rollback it already has.
   */
  async rollback(id: string, by: Creator | null = null): Promise<Deployment> {
    return (await this.rollBack(id, by))!;
  }

  /**
   * A deployment ended `failed` on this node (DeploymentEvents `finished`, see RollbackOnFailure): rolls it back if it
   * was created with `rollbackOnFailure` and nothing rolled it back yet; why it could not is written to its log.
   */
  async rollBackFailed(id: string): Promise<void> {
    await this.rollBack(id, 'automatic');
  }

  /**
   * Deploys the environment's last successful release of the project before this deployment (the newest `success`
   * deployment of the project and environment created before it, of another release) to the machines that got this
   * deployment's release (those with a target run in it that started), newest first (by when they last got it), as a
   * new deployment with `rollbackOf`; this one gets `rolledBackBy`. A rollback never rolls back by itself.
   *
   * On demand it is created by the key that asked; automatically, by the key that created the failed deployment
   * (the rollback follows from its request, so an approval in it that prevents self-approval still binds that key).
   *
   * Lock order: the pair's queue lock (level 0) first, the rollback being a deployment of the same pair, then this
   * deployment's row (level 1), under which `rolled_back_by` is read and set: two nodes, a repeated event or an
   * operator at the same moment cannot make two rollbacks.
   */
  private async rollBack(id: string, by: Creator | null | 'automatic'): Promise<Deployment | undefined> {
    const automatic = by === 'automatic';
    const pre = await this.getRow(id);
    const [env, project] = await Promise.all([this.envs.get(pre.environment_id), this.projects.get(pre.project_id)]);
    let existing: string | undefined;
    const created = await this.repo.transaction(async (tx): Promise<Deployment | undefined> => {
      await this.repo.lockQueue(tx, pre.project_id, pre.environment_id);
      const d = (await this.repo.lockDeployment(tx, id))!;
      if (!FINISHED_STATES.includes(d.state)) {
        if (automatic) return undefined;
        throw new DomainError(
          'deployment_active',
          `deployment ${id} has not finished (${d.state}): only a finished deployment can be rolled back`,
        );
      }
      if (automatic && (d.state !== 'failed' || !d.rollback_on_failure)) return undefined;
      if (d.rolled_back_by) {
        existing = d.rolled_back_by;
        return undefined;
      }
      // Automatically, what keeps it from rolling back goes to the failed deployment's log; on demand, to the caller.
      const cannot = async (e: DomainError) => {
        if (!automatic) throw e;
        await this.log.append(tx, id, [{ level: 'warn', text: `Not rolled back: ${e.message}` }]);
        return undefined;
      };
      const from = await this.releases.get(d.release_id, tx);
      const prev = await this.repo.previousSuccess(d, tx);
      if (!prev)
        return cannot(
          new DomainError(
            'no_previous_release',
            `${env.name} has no earlier successful release of ${project.name} to go back to (a successful deployment of another release, created before deployment ${id})`,
          ),
        );
      const got = await this.repo.machinesThatGotRelease(id, tx);
      if (!got.length)
        return cannot(
          invalid(`no machine got release ${from.version} in deployment ${id}: none of its targets started`),
        );
      const machines = await this.machines.deployable(env.id, [], [], tx);
      const deployable = new Map(machines.map((m) => [m.id, m]));
      const back = got.filter((g) => deployable.has(g.machine_id));
      const gone = got.filter((g) => !deployable.has(g.machine_id));
      if (!back.length)
        return cannot(
          invalid(
            `the machines that got release ${from.version} in deployment ${id} (${gone.map((g) => g.machine_name).join(', ')}) were revoked or disabled since`,
          ),
        );
      const release = await this.releases.get(prev.release_id, tx);
      const order = back.map((g) => g.machine_id);
      const names = back.map((g) => g.machine_name).join(', ');
      const newId = await this.insertNew(tx, {
        release,
        env,
        projectName: project.name,
        machines: back.map((g) => deployable.get(g.machine_id)!),
        guidedFailure: env.guidedFailure,
        rollbackOnFailure: false,
        specific: order,
        excluded: [],
        layout: { order },
        rollbackOf: id,
        createdBy: automatic ? creatorOf(d) : by,
        lines: [
          {
            level: 'info',
            text: `Rolling back deployment ${id} (release ${from.version}${automatic ? ', which failed' : ''}) to release ${release.version}, last deployed successfully by deployment ${prev.id}: on ${names}, newest first`,
          },
          ...gone.map((g) => ({
            level: 'warn' as const,
            machineId: g.machine_id,
            text: `${g.machine_name} left out: it got release ${from.version} but was revoked or disabled since (or left the environment)`,
          })),
        ],
      });
      await this.repo.setRolledBackBy(tx, id, newId);
      await this.log.append(tx, id, [
        {
          level: 'warn',
          text: `Rolled back${automatic ? ' automatically' : ''} by deployment ${newId}: release ${release.version} goes back on ${names}`,
        },
      ]);
      return this.get(newId, tx);
    });
    if (!created) return existing && !automatic ? this.get(existing) : undefined;
    this.logger.info('deployment created', {
      deploymentId: created.id,
      rollbackOf: id,
      release: created.releaseVersion,
    });
    this.events.emit('changed', created.id);
    return created;
  }
}
