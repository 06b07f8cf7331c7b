import { ApiProperty, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import {
  BadRequestException,
  Body,
  ConflictException,
  Controller,
  Get,
  HttpCode,
  Inject,
  Injectable,
  NotFoundException,
  Param,
  Post,
  Query,
} from '@nestjs/common';
import { ArrayMaxSize, IsArray, IsBoolean, IsNotEmpty, IsOptional, IsString, MaxLength } from 'class-validator';
import { DataSource, In, type EntityManager } from 'typeorm';
import { idOf, intQuery, isUuid } from '../common/http.js';
import { returned } from '../database/sql.js';
import { EnvironmentsService } from '../environments/environments.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { MachineEntity } from '../machines/machine.entity.js';
import { ProjectsService } from '../projects/projects.js';
import type { ReleaseEntity } from '../releases/release.entity.js';
import { ReleasesService } from '../releases/releases.js';
import { DeploymentLogService, type LogEntryInput } from './deployment-log.js';
import { layoutDeployment } from './layout.js';
import { ACTIVE_STATES, type DeploymentRow, type StepRow, type TargetAction, type TargetRunRow } from './deployment.types.js';

/** The name shown for the target run of a step that runs on the server (manual intervention). */
export const SERVER_TARGET_NAME = '(server)';

export class CreateDeploymentDto {
  @ApiProperty({ type: String })
  @IsString() @IsNotEmpty() @MaxLength(200) releaseId: string;
  @ApiProperty({ type: String })
  @IsString() @IsNotEmpty() @MaxLength(200) environmentId: string;
  @ApiPropertyOptional({ type: [String] })
  @IsOptional() @IsArray() @ArrayMaxSize(10_000) @IsString({ each: true }) specificMachineIds?: string[];
  @ApiPropertyOptional({ type: [String] })
  @IsOptional() @IsArray() @ArrayMaxSize(10_000) @IsString({ each: true }) excludedMachineIds?: string[];
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional() @IsBoolean() guidedFailure?: boolean;
}

/** Why a target failed, for people and for automation: an agent that went away is not a broken script. */
export function failureKind(error: string | null): 'agent-lost' | 'unknown-result' | 'timeout' | 'script' {
  if (!error) return 'script';
  if (error.startsWith('agent lost')) return 'agent-lost';
  if (error.startsWith('unknown result')) return 'unknown-result';
  if (error.startsWith('timed out')) return 'timeout';
  return 'script';
}

@Injectable()
export class DeploymentsService {
  /** Called after a deployment is created or changed by an operator, so the orchestrator acts without waiting. */
  onChange: (deploymentId: string) => void = () => {};

  constructor(
    private readonly ds: DataSource,
    private readonly releases: ReleasesService,
    private readonly envs: EnvironmentsService,
    private readonly projects: ProjectsService,
    private readonly log: DeploymentLogService,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(CONFIG) private readonly config: CuttleConfig,
  ) {}

  /** The machines a deployment may use: in the environment, not revoked, not disabled, narrowed by the operator. */
  private async candidateMachines(m: EntityManager, environmentId: string, specific: string[], excluded: string[]) {
    for (const [field, ids] of [['specificMachineIds', specific], ['excludedMachineIds', excluded]] as const) {
      const bad = ids.find((i) => !isUuid(i));
      if (bad) throw new BadRequestException(`${field} names an unknown machine "${bad}"`);
      if (ids.length) {
        const found = await m.find(MachineEntity, { where: { id: In(ids) } });
        const known = new Set(found.map((f) => f.id));
        const missing = ids.find((i) => !known.has(i));
        if (missing) throw new BadRequestException(`${field} names an unknown machine "${missing}"`);
        const outside = found.find((f) => !f.environmentIds.includes(environmentId));
        if (outside && field === 'specificMachineIds') throw new BadRequestException(`${field}: machine ${outside.name} is not in the deployment's environment`);
      }
    }
    const all: MachineEntity[] = await m
      .createQueryBuilder(MachineEntity, 'm')
      .where('m.revoked_at IS NULL AND m.disabled = false AND m.environment_ids ? :env', { env: environmentId })
      .getMany();
    // Sets, not lists: ten thousand ids against ten thousand machines stays linear.
    const only = new Set(specific);
    const not = new Set(excluded);
    return all.filter((x) => (!only.size || only.has(x.id)) && !not.has(x.id));
  }

  /**
   * Creates a deployment and lays out its plan: each step's targets (fixed now, in name order), resolved window and
   * failure budget, and each target's actions with those the conditions skip already marked. Returns it as created
   * (`queued`), read in the creating transaction: the dispatcher starts on it the moment it commits, and a read after
   * that would race its first round.
   */
  async create(dto: CreateDeploymentDto): Promise<Awaited<ReturnType<DeploymentsService['get']>>> {
    if (!isUuid(dto.releaseId)) throw new BadRequestException(`releaseId names an unknown release "${dto.releaseId}"`);
    const release = await this.releases.get(dto.releaseId).catch(() => {
      throw new BadRequestException(`releaseId names an unknown release "${dto.releaseId}"`);
    });
    const [env] = await this.envs.resolve([dto.environmentId], 'environmentId');
    const project = await this.projects.get(release.projectId);
    const specific = (dto.specificMachineIds ?? []).map((s) => s.toLowerCase());
    const excluded = (dto.excludedMachineIds ?? []).map((s) => s.toLowerCase());
    const created = await this.ds.transaction(async (m) => {
      const machines = await this.candidateMachines(m, env.id, specific, excluded);
      const steps = layoutDeployment(release.process, env.id, release.channelId, machines);
      const [dep] = returned<{ id: string }>(
        await m.query(
          // The node that creates a deployment drives it (it holds the ownership lease from the first moment).
          `INSERT INTO deployments (release_id, project_id, environment_id, state, guided_failure, specific_machine_ids, excluded_machine_ids, owner_node, owner_expires_at)
           VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, now() + make_interval(secs => $8)) RETURNING id`,
          [release.id, release.projectId, env.id, dto.guidedFailure ?? env.guidedFailure, JSON.stringify(specific), JSON.stringify(excluded), this.config.nodeId, this.config.ownershipTtlMs / 1000],
        ),
      );
      const lines: LogEntryInput[] = [{ level: 'info', text: `Deploying ${project.name} release ${release.version} to ${env.name}` }];
      for (const step of steps) {
        // A step that cannot run here at all is settled now, with its reason, so the plan reads true from the start.
        await m.query(
          `INSERT INTO deployment_steps (deployment_id, step_index, name, state, window_size, max_failures, condition, start_trigger, skip_reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
          [dep.id, step.index, step.name, step.skipReason ? 'skipped' : 'pending', step.window, step.maxFailures, step.condition, step.startTrigger, step.skipReason ?? null],
        );
        if (step.skipReason) {
          lines.push({ level: 'warn', stepName: step.name, text: `Step ${step.name} will be skipped: ${step.skipReason}` });
          if (step.runsOn === 'targets' && step.targets.length === 0) continue;
        }
        const state = step.skipReason ? 'skipped' : 'pending';
        const actions: TargetAction[] = step.actions.map((a) =>
          a.willRun ? { name: a.name, type: a.type, state: state === 'skipped' ? 'skipped' : 'pending' } : { name: a.name, type: a.type, state: 'skipped', skipReason: a.skipReason },
        );
        for (const a of step.actions) if (!a.willRun && !step.skipReason) lines.push({ level: 'info', stepName: step.name, actionName: a.name, text: `Action ${a.name} will be skipped: ${a.skipReason}` });
        const targets = step.runsOn === 'server' ? [{ id: null, name: SERVER_TARGET_NAME }] : step.targets;
        await m.query(
          `INSERT INTO target_runs (deployment_id, step_index, machine_id, machine_name, position, state, actions)
           SELECT $1, $2, mid, mname, pos, $3, $4::jsonb FROM unnest($5::uuid[], $6::text[], $7::int[]) AS x(mid, mname, pos)`,
          [dep.id, step.index, state, JSON.stringify(actions), targets.map((t) => t.id), targets.map((t) => t.name), targets.map((_, i) => i)],
        );
      }
      await this.log.append(m, dep.id, lines);
      return this.get(dep.id, m);
    });
    this.logger.info('deployment created', { context: 'deployments', deploymentId: created.id, release: release.version, environment: env.name });
    this.onChange(created.id);
    return created;
  }

  /** What a deployment of this release to this environment would do, without running anything. */
  async preview(q: { releaseId?: string; environmentId?: string; specificMachineIds?: string; excludedMachineIds?: string }) {
    if (!q.releaseId) throw new BadRequestException('releaseId is required');
    if (!q.environmentId) throw new BadRequestException('environmentId is required');
    if (!isUuid(q.releaseId)) throw new BadRequestException(`releaseId names an unknown release "${q.releaseId}"`);
    const release = await this.releases.get(q.releaseId).catch(() => {
      throw new BadRequestException(`releaseId names an unknown release "${q.releaseId}"`);
    });
    const [env] = await this.envs.resolve([q.environmentId], 'environmentId');
    const list = (s?: string) => (s ? s.split(',').map((x) => x.trim().toLowerCase()).filter(Boolean) : []);
    const machines = await this.candidateMachines(this.ds.manager, env.id, list(q.specificMachineIds), list(q.excludedMachineIds));
    const steps = layoutDeployment(release.process, env.id, release.channelId, machines);
    const FAILURE_ONLY = 'condition: runs only if an earlier step failed';
    return {
      releaseId: release.id,
      environmentId: env.id,
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
          actions: s.actions.map((a) => {
            const reason = a.skipReason ?? (s.skipReason ? `step: ${s.skipReason}` : conditionSkip ? FAILURE_ONLY : undefined);
            return { name: a.name, type: a.type, willRun: !reason, ...(reason ? { skipReason: reason } : {}) };
          }),
        };
      }),
    };
  }

  async getRow(id: string, m: EntityManager | DataSource = this.ds): Promise<DeploymentRow> {
    const [row] = await m.query(`SELECT * FROM deployments WHERE id = $1`, [id]);
    if (!row) throw new NotFoundException(`deployment ${id} not found`);
    return row;
  }

  /** The deployment as the API shows it; `m`: read in that transaction (see create). */
  async get(id: string, m: EntityManager | DataSource = this.ds) {
    const d = await this.getRow(id, m);
    // Through `m` alone: inside a transaction on the embedded database (one connection), a read through the pool
    // would wait for ever.
    const [steps, targets, [release]]: [StepRow[], TargetRunRow[], Array<{ version: string }>] = await Promise.all([
      m.query(`SELECT * FROM deployment_steps WHERE deployment_id = $1 ORDER BY step_index`, [id]),
      m.query(`SELECT * FROM target_runs WHERE deployment_id = $1 ORDER BY step_index, position`, [id]),
      m.query(`SELECT version FROM releases WHERE id = $1`, [d.release_id]),
    ]);
    return {
      id: d.id,
      releaseId: d.release_id,
      releaseVersion: release.version,
      projectId: d.project_id,
      environmentId: d.environment_id,
      state: d.state,
      guidedFailure: d.guided_failure,
      specificMachineIds: d.specific_machine_ids,
      excludedMachineIds: d.excluded_machine_ids,
      error: d.error ?? undefined,
      ownerNode: d.owner_node ?? undefined,
      createdAt: d.created_at,
      startedAt: d.started_at,
      finishedAt: d.finished_at,
      steps: steps.map((s) => ({
        name: s.name,
        state: s.state,
        windowSize: s.window_size,
        maxFailures: s.max_failures,
        condition: s.condition,
        startTrigger: s.start_trigger,
        ...(s.skip_reason ? { skipReason: s.skip_reason } : {}),
        startedAt: s.started_at,
        finishedAt: s.finished_at,
        targets: targets
          .filter((t) => t.step_index === s.step_index)
          .map((t) => ({
            machineId: t.machine_id,
            machineName: t.machine_name,
            state: t.state,
            attempt: t.attempt,
            error: t.error ?? undefined,
            ...(t.state === 'failed' ? { failureKind: failureKind(t.error) } : {}),
            startedAt: t.started_at,
            finishedAt: t.finished_at,
            actions: t.actions.map((a) => ({ name: a.name, state: a.state, exitCode: a.exitCode ?? null, ...(a.skipReason ? { skipReason: a.skipReason } : {}) })),
          })),
      })),
    };
  }

  async list(filter: { projectId?: string; environmentId?: string; state?: string; limit?: number }) {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.projectId) {
      const p = await this.projects.get(filter.projectId);
      params.push(p.id);
      where.push(`project_id = $${params.length}`);
    }
    if (filter.environmentId) {
      if (!isUuid(filter.environmentId)) return [];
      params.push(filter.environmentId);
      where.push(`environment_id = $${params.length}`);
    }
    if (filter.state) {
      params.push(filter.state);
      where.push(`state = $${params.length}`);
    }
    params.push(filter.limit ?? 100);
    const rows: DeploymentRow[] = await this.ds.query(
      `SELECT * FROM deployments ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY created_at DESC LIMIT $${params.length}`,
      params,
    );
    return rows.map((d) => ({ id: d.id, releaseId: d.release_id, projectId: d.project_id, environmentId: d.environment_id, state: d.state, createdAt: d.created_at, startedAt: d.started_at, finishedAt: d.finished_at }));
  }

  /** Asks a deployment to stop: nothing new starts, running scripts are killed, it ends `cancelled`. */
  async cancel(id: string) {
    await this.ds.transaction(async (m) => {
      const [d] = await m.query(`SELECT state FROM deployments WHERE id = $1 FOR NO KEY UPDATE`, [id]);
      if (!d) throw new NotFoundException(`deployment ${id} not found`);
      if (d.state === 'cancelling') return;
      if (!(ACTIVE_STATES as readonly string[]).includes(d.state)) throw new ConflictException(`deployment ${id} has already finished (${d.state})`);
      await m.query(`UPDATE deployments SET state = 'cancelling' WHERE id = $1`, [id]);
      // Questions nobody needs to answer any more are closed; the targets that waited on them end cancelled.
      const closed = returned<{ target_run_id: string }>(
        await m.query(`UPDATE interruptions SET state = 'cancelled' WHERE deployment_id = $1 AND state = 'pending' RETURNING target_run_id`, [id]),
      );
      for (const c of closed) {
        await m.query(
          `UPDATE target_runs SET state = 'cancelled', finished_at = now(),
             actions = (SELECT jsonb_agg(CASE WHEN a->>'state' IN ('pending', 'running') THEN jsonb_set(a, '{state}', '"cancelled"') ELSE a END ORDER BY i) FROM jsonb_array_elements(actions) WITH ORDINALITY AS x(a, i))
           WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM leases WHERE target_run_id = $1 AND released_at IS NULL)`,
          [c.target_run_id],
        );
      }
      await this.log.append(m, id, [
        { level: 'warn', text: `Cancellation requested: no new work starts; running scripts are being stopped${closed.length ? `; ${closed.length} pending interruption(s) closed` : ''}` },
      ]);
    });
    this.onChange(id);
  }
}

@ApiTags('deployments')
@Controller('api/deployments')
export class DeploymentsController {
  constructor(
    private readonly deployments: DeploymentsService,
    private readonly log: DeploymentLogService,
  ) {}

  @Post()
  @HttpCode(201)
  async create(@Body() dto: CreateDeploymentDto) {
    return this.deployments.create(dto);
  }

  @Get()
  list(@Query('projectId') projectId?: string, @Query('environmentId') environmentId?: string, @Query('state') state?: string, @Query('limit') limit?: string) {
    return this.deployments.list({ projectId, environmentId, state, limit: intQuery('limit', limit, { min: 1, max: 1000, dflt: 100 }) });
  }

  @Get('preview')
  preview(
    @Query('releaseId') releaseId?: string,
    @Query('environmentId') environmentId?: string,
    @Query('specificMachineIds') specificMachineIds?: string,
    @Query('excludedMachineIds') excludedMachineIds?: string,
  ) {
    return this.deployments.preview({ releaseId, environmentId, specificMachineIds, excludedMachineIds });
  }

  @Get(':id')
  get(@Param('id', idOf('deployment')) id: string) {
    return this.deployments.get(id);
  }

  @Get(':id/log')
  async readLog(@Param('id', idOf('deployment')) id: string, @Query('afterSeq') afterSeq?: string, @Query('limit') limit?: string, @Query('machineId') machineId?: string) {
    const after = intQuery('afterSeq', afterSeq, { min: 0, max: Number.MAX_SAFE_INTEGER, dflt: 0 });
    const lim = intQuery('limit', limit, { min: 1, max: 10_000, dflt: 1000 });
    if (machineId !== undefined && !isUuid(machineId)) throw new BadRequestException('machineId must be a machine id');
    await this.deployments.getRow(id);
    return this.log.read(id, after, lim, machineId);
  }

  @Post(':id/cancel')
  @HttpCode(202)
  async cancel(@Param('id', idOf('deployment')) id: string) {
    await this.deployments.cancel(id);
    return { id, state: 'cancelling' };
  }
}
