/**
 * Interruptions: questions a deployment waits on. A manual intervention (proceed / abort) runs on the server as a
 * step without target roles; a guided failure (retry / skip / abort) is raised for one failed target when the
 * deployment runs with guided failure. Each interruption belongs to one target run: an answer never applies to
 * another target. Submitting twice is a conflict.
 */
import { ApiProperty, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import { BadRequestException, Body, ConflictException, Controller, Get, HttpCode, Injectable, NotFoundException, Param, Post, Query, Req } from '@nestjs/common';
import { IsOptional, IsString, MaxLength } from 'class-validator';
import { DataSource, type EntityManager } from 'typeorm';
import type { AuthedRequest } from '../auth/api-key.guard.js';
import { idOf, isUuid } from '../common/http.js';
import { returned } from '../database/sql.js';
import type { ReleaseEntity } from '../releases/release.entity.js';
import { DeploymentLogService } from './deployment-log.js';
import type { DeploymentRow, TargetAction, TargetRunRow } from './deployment.types.js';
import { DeploymentsService } from './deployments.js';

export const RESULTS = { 'manual-intervention': ['proceed', 'abort'], 'guided-failure': ['retry', 'skip', 'abort'] } as const;
type Kind = keyof typeof RESULTS;

export class SubmitInterruptionDto {
  @ApiProperty({ type: String })
  @IsString() @MaxLength(50) result: string;
  @ApiPropertyOptional({ type: String })
  @IsOptional() @IsString() @MaxLength(4000) notes?: string;
}

interface InterruptionRow {
  id: string;
  deployment_id: string;
  kind: Kind;
  step_index: number;
  action_index: number;
  target_run_id: string;
  machine_id: string | null;
  instructions: string | null;
  state: 'pending' | 'submitted' | 'cancelled';
  result: string | null;
  notes: string | null;
  submitted_by: string | null;
  submitted_at: Date | null;
  created_at: Date;
}

/** Opens a manual intervention for the first pending manual-intervention action of a server target run, if any. */
export async function openManualIntervention(m: EntityManager, deploymentId: string, run: TargetRunRow, process: ReleaseEntity['process']): Promise<string | null> {
  const index = run.actions.findIndex((a) => a.state === 'pending' && a.type === 'manual-intervention');
  if (index < 0) return null;
  const action = process[run.step_index].actions[index];
  const [row] = returned<{ id: string }>(
    await m.query(
      `INSERT INTO interruptions (deployment_id, kind, step_index, action_index, target_run_id, instructions) VALUES ($1, 'manual-intervention', $2, $3, $4, $5) RETURNING id`,
      [deploymentId, run.step_index, index, run.id, action.instructions ?? `Approve ${action.name} to continue`],
    ),
  );
  const actions = run.actions.map((a, i) => (i === index ? { ...a, state: 'running' as const } : a));
  await m.query(`UPDATE target_runs SET actions = $2::jsonb WHERE id = $1`, [run.id, JSON.stringify(actions)]);
  await m.query(`UPDATE deployments SET state = 'waiting' WHERE id = $1 AND state IN ('queued', 'executing')`, [deploymentId]);
  return row.id;
}

@Injectable()
export class InterruptionsService {
  constructor(
    private readonly ds: DataSource,
    private readonly log: DeploymentLogService,
    private readonly deployments: DeploymentsService,
  ) {}

  private async dto(rows: InterruptionRow[]) {
    const processes = new Map<string, ReleaseEntity['process']>();
    const names = new Map<string, string>();
    for (const r of rows) {
      if (!processes.has(r.deployment_id)) {
        const [x] = await this.ds.query(`SELECT r.process FROM deployments d JOIN releases r ON r.id = d.release_id WHERE d.id = $1`, [r.deployment_id]);
        processes.set(r.deployment_id, x.process);
      }
      if (r.machine_id && !names.has(r.machine_id)) {
        const [mc] = await this.ds.query(`SELECT name FROM machines WHERE id = $1`, [r.machine_id]);
        names.set(r.machine_id, mc?.name);
      }
    }
    return rows.map((r) => {
      const step = processes.get(r.deployment_id)![r.step_index];
      return {
        id: r.id,
        deploymentId: r.deployment_id,
        kind: r.kind,
        stepName: step.name,
        actionName: step.actions[r.action_index]?.name,
        ...(r.machine_id ? { machineId: r.machine_id, machineName: names.get(r.machine_id) } : {}),
        instructions: r.instructions,
        state: r.state,
        allowedResults: RESULTS[r.kind],
        ...(r.result ? { result: r.result } : {}),
        ...(r.notes ? { notes: r.notes } : {}),
        ...(r.submitted_by ? { submittedBy: r.submitted_by, submittedAt: r.submitted_at } : {}),
        createdAt: r.created_at,
      };
    });
  }

  async list(q: { deploymentId?: string; state?: string }) {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.deploymentId) {
      if (!isUuid(q.deploymentId)) throw new BadRequestException('deploymentId must be a deployment id');
      params.push(q.deploymentId);
      where.push(`deployment_id = $${params.length}`);
    }
    if (q.state) {
      if (!['pending', 'submitted', 'cancelled'].includes(q.state)) throw new BadRequestException('state must be one of pending, submitted, cancelled');
      params.push(q.state);
      where.push(`state = $${params.length}`);
    }
    const rows: InterruptionRow[] = await this.ds.query(`SELECT * FROM interruptions ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY created_at LIMIT 1000`, params);
    return this.dto(rows);
  }

  async get(id: string) {
    const rows: InterruptionRow[] = await this.ds.query(`SELECT * FROM interruptions WHERE id = $1`, [id]);
    if (!rows.length) throw new NotFoundException(`interruption ${id} not found`);
    return (await this.dto(rows))[0];
  }

  async submit(id: string, dto: SubmitInterruptionDto, submitter: string) {
    const [pre]: InterruptionRow[] = await this.ds.query(`SELECT * FROM interruptions WHERE id = $1`, [id]);
    if (!pre) throw new NotFoundException(`interruption ${id} not found`);
    const allowed = RESULTS[pre.kind] as readonly string[];
    if (!allowed.includes(dto.result)) throw new BadRequestException(`result must be one of ${allowed.join(', ')} for a ${pre.kind}`);
    const [rel] = await this.ds.query(`SELECT r.process FROM deployments d JOIN releases r ON r.id = d.release_id WHERE d.id = $1`, [pre.deployment_id]);
    const process = rel.process as ReleaseEntity['process'];
    await this.ds.transaction(async (m) => {
      const [dep]: DeploymentRow[] = await m.query(`SELECT * FROM deployments WHERE id = $1 FOR NO KEY UPDATE`, [pre.deployment_id]);
      const [intr]: InterruptionRow[] = await m.query(`SELECT * FROM interruptions WHERE id = $1 FOR UPDATE`, [id]);
      if (intr.state !== 'pending')
        throw new ConflictException(intr.state === 'cancelled' ? `interruption ${id} was closed when the deployment was cancelled` : `interruption ${id} was already answered (${intr.result} by ${intr.submitted_by})`);
      const [run]: TargetRunRow[] = await m.query(`SELECT * FROM target_runs WHERE id = $1 FOR UPDATE`, [intr.target_run_id]);
      await m.query(`UPDATE interruptions SET state = 'submitted', result = $2, notes = $3, submitted_by = $4, submitted_at = now() WHERE id = $1`, [id, dto.result, dto.notes ?? null, submitter]);
      const step = process[intr.step_index];
      const action = step.actions[intr.action_index];
      const who = `${dto.result} by ${submitter}${dto.notes ? `: ${dto.notes}` : ''}`;
      const lines = [
        {
          level: dto.result === 'abort' ? ('warn' as const) : ('info' as const),
          stepName: step.name,
          actionName: action?.name,
          machineId: run.machine_id,
          text: intr.kind === 'manual-intervention' ? `Manual intervention ${action?.name}: ${who}` : `Guided failure of ${step.name} on ${run.machine_name}: ${who}`,
        },
      ];
      const skipRest = (as: TargetAction[]) => as.map((a) => (a.state === 'pending' || a.state === 'running' ? { ...a, state: 'skipped' as const } : a));
      const finish = (state: string, actions: TargetAction[]) =>
        m.query(`UPDATE target_runs SET state = $2, actions = $3::jsonb, finished_at = now() WHERE id = $1`, [run.id, state, JSON.stringify(actions)]);
      const abortStep = () => m.query(`UPDATE deployment_steps SET aborted = true WHERE deployment_id = $1 AND step_index = $2`, [dep.id, intr.step_index]);

      if (intr.kind === 'manual-intervention') {
        const actions = run.actions.map((a, i) => (i === intr.action_index ? { ...a, state: dto.result === 'proceed' ? ('success' as const) : ('failed' as const) } : a));
        if (dto.result === 'proceed') {
          run.actions = actions;
          await m.query(`UPDATE target_runs SET actions = $2::jsonb WHERE id = $1`, [run.id, JSON.stringify(actions)]);
          if (!(await openManualIntervention(m, dep.id, run, process))) await finish('success', actions);
        } else {
          await finish('failed', skipRest(actions));
          await abortStep();
        }
      } else if (dto.result === 'retry') {
        // From the failed action on, everything runs again (actions the conditions skipped stay skipped).
        const actions = run.actions.map((a, i) => (i >= intr.action_index && !a.skipReason ? { name: a.name, type: a.type, state: 'pending' as const } : a));
        await m.query(`UPDATE target_runs SET state = 'pending', actions = $2::jsonb, error = NULL WHERE id = $1`, [run.id, JSON.stringify(actions)]);
      } else if (dto.result === 'skip') {
        await finish('skipped', skipRest(run.actions));
      } else {
        await finish('failed', skipRest(run.actions));
        await abortStep();
      }
      const [{ n }] = await m.query(`SELECT count(*)::int AS n FROM interruptions WHERE deployment_id = $1 AND state = 'pending'`, [dep.id]);
      if (n === 0) await m.query(`UPDATE deployments SET state = 'executing' WHERE id = $1 AND state = 'waiting'`, [dep.id]);
      await this.log.append(m, dep.id, lines);
    });
    this.deployments.onChange(pre.deployment_id);
    return this.get(id);
  }
}

@ApiTags('interruptions')
@Controller('api/interruptions')
export class InterruptionsController {
  constructor(private readonly interruptions: InterruptionsService) {}

  @Get()
  list(@Query('deploymentId') deploymentId?: string, @Query('state') state?: string) {
    return this.interruptions.list({ deploymentId, state });
  }

  @Get(':id')
  get(@Param('id', idOf('interruption')) id: string) {
    return this.interruptions.get(id);
  }

  @Post(':id/submit')
  @HttpCode(200)
  submit(@Param('id', idOf('interruption')) id: string, @Body() dto: SubmitInterruptionDto, @Req() req: AuthedRequest) {
    return this.interruptions.submit(id, dto, req.apiKeyName ?? 'unknown');
  }
}
