/**
 * Deployments as operators see them: created (with their plan laid out), read, listed, previewed, cancelled. Driving
 * one is the dispatcher's (orchestration/); this service tells it through DeploymentEvents.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { Deployment, DeploymentSummary, Preview } from '#shared/api/types.js';
import { DomainError, invalid, notFound, unknownReference } from '../common/errors.js';
import { isUuid } from '../common/http.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { EnvironmentsService } from '../environments/environments.service.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { MachinesService } from '../machines/machines.service.js';
import { ProjectsService } from '../projects/projects.service.js';
import { ReleasesService } from '../releases/releases.service.js';
import { DeploymentEvents } from './deployment-events.js';
import { DeploymentLogService } from './deployment-log.service.js';
import { iso } from '../database/sql.js';
import { DeploymentRepository, type Db } from './deployment.repository.js';
import { HEALTH_CHECK_ACTION, type Step } from '#shared/process/index.js';
import {
  ACTIVE_STATES,
  type DeploymentRow,
  type LogEntryInput,
  type StepPolicy,
  type TargetAction,
} from './deployment.types.js';
import type { CreateDeploymentDto } from './dto/create-deployment.dto.js';
import { layoutDeployment } from './layout.js';

/** The name shown for the target run of a step that runs on the server (manual intervention). */
export const SERVER_TARGET_NAME = '(server)';

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
  async create(dto: CreateDeploymentDto): Promise<Deployment> {
    if (!isUuid(dto.releaseId)) throw unknownReference(`releaseId names an unknown release "${dto.releaseId}"`);
    const release = await this.releases.get(dto.releaseId).catch(() => {
      throw unknownReference(`releaseId names an unknown release "${dto.releaseId}"`);
    });
    const [env] = await this.envs.resolve([dto.environmentId], 'environmentId');
    const project = await this.projects.get(release.projectId);
    const specific = (dto.specificMachineIds ?? []).map((s) => s.toLowerCase());
    const excluded = (dto.excludedMachineIds ?? []).map((s) => s.toLowerCase());
    const created = await this.repo.transaction(async (tx) => {
      const machines = await this.machines.deployable(env.id, specific, excluded, tx);
      const steps = layoutDeployment(release.process, env.id, release.channelId, machines);
      // The node that creates a deployment drives it (it holds the ownership lease from the first moment).
      const id = await this.repo.insertDeployment(tx, {
        releaseId: release.id,
        projectId: release.projectId,
        environmentId: env.id,
        guidedFailure: dto.guidedFailure ?? env.guidedFailure,
        specific,
        excluded,
        ownerNode: this.config.nodeId,
        ownershipTtlSeconds: this.config.ownershipTtlMs / 1000,
      });
      const lines: LogEntryInput[] = [
        { level: 'info', text: `Deploying ${project.name} release ${release.version} to ${env.name}` },
      ];
      // A step that cannot run here at all is settled now, with its reason, so the plan reads true from the start.
      await this.repo.insertSteps(
        tx,
        id,
        steps.map((s) => ({
          index: s.index,
          name: s.name,
          state: s.skipReason ? 'skipped' : 'pending',
          window: s.window,
          maxFailures: s.maxFailures,
          condition: s.condition,
          startTrigger: s.startTrigger,
          skipReason: s.skipReason ?? null,
          batchCount: Math.max(1, s.batches.length),
          policy: stepPolicy(release.process[s.index]),
        })),
      );
      for (const step of steps) {
        if (step.skipReason) {
          lines.push({
            level: 'warn',
            stepName: step.name,
            text: `Step ${step.name} will be skipped: ${step.skipReason}`,
          });
          if (step.runsOn === 'targets' && step.targets.length === 0) continue;
        }
        const state = step.skipReason ? 'skipped' : 'pending';
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
          if (!a.willRun && !step.skipReason)
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
          text: `Queued behind deployment ${ahead}: deployments of ${project.name} to ${env.name} run one at a time, in the order they were created`,
        });
      await this.log.append(tx, id, lines);
      return this.get(id, tx);
    });
    this.logger.info('deployment created', {
      deploymentId: created.id,
      release: release.version,
      environment: env.name,
    });
    this.events.emit('changed', created.id);
    return created;
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
    return {
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
      ...(d.state === 'paused' && d.paused_at ? { pausedAt: iso(d.paused_at)! } : {}),
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
      limit: filter.limit ?? 100,
    });
    return rows.map((d) => ({
      id: d.id,
      releaseId: d.release_id,
      projectId: d.project_id,
      environmentId: d.environment_id,
      state: d.state,
      ...(d.queued_behind ? { queuedBehind: d.queued_behind } : {}),
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
}
