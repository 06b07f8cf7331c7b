/**
 * Lifecycles: the phases of environments a release is promoted through (Octopus semantics). A release follows its
 * channel's lifecycle, else its project's, else none (every environment allowed). This service keeps lifecycles,
 * answers a release's progression, and refuses a deployment to an environment the release has not reached. A
 * release's deployments are read by the deployment repository (the one home of the deployment tables' SQL) and
 * handed in.
 */
import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository, type EntityManager } from 'typeorm';
import type { Lifecycle, Progression as ProgressionDto } from '#shared/api/types.js';
import type { DeploymentState } from '#shared/api/types.js';
import { alreadyExists, DomainError, invalid, notFound, unknownReference } from '../common/errors.js';
import { isUuid } from '../common/http.js';
import { iso } from '../database/sql.js';
import { EnvironmentsService } from '../environments/environments.service.js';
import type { EnvironmentEntity } from '../environments/environment.entity.js';
import { ChannelEntity, ProjectEntity } from '../projects/project.entity.js';
import type { ReleaseEntity } from '../releases/release.entity.js';
import type { CreateLifecycleDto, UpdateLifecycleDto } from './dto/lifecycle.dto.js';
import { LifecycleEntity } from './lifecycle.entity.js';
import { progression, refusalOf, type Phase } from './progression.js';

/** Far beyond any real promotion path; bounds what one request may make the server check. */
const MAX_PHASES = 50;
const MAX_PHASE_ENVIRONMENTS = 500;
const MAX_NAME = 100;

export const toLifecycleDto = (l: LifecycleEntity): Lifecycle => ({
  id: l.id,
  name: l.name,
  phases: l.phases,
  createdAt: l.createdAt.toISOString(),
  updatedAt: l.updatedAt.toISOString(),
});

/** A release's newest deployment in one environment (the deployment repository's ReleaseLastDeployment). */
interface LastDeployment {
  id: string;
  environment_id: string;
  state: DeploymentState;
  created_at: Date | string;
  finished_at: Date | string | null;
}

@Injectable()
export class LifecyclesService {
  constructor(
    @InjectRepository(LifecycleEntity) private readonly repo: Repository<LifecycleEntity>,
    @InjectRepository(ProjectEntity) private readonly projects: Repository<ProjectEntity>,
    @InjectRepository(ChannelEntity) private readonly channels: Repository<ChannelEntity>,
    private readonly envs: EnvironmentsService,
  ) {}

  async create(dto: CreateLifecycleDto) {
    const name = nameOf(dto.name);
    if (await this.repo.exists({ where: { name } })) throw alreadyExists(`a lifecycle named "${name}" already exists`);
    const phases = await this.phasesOf(dto.phases);
    return this.repo.save(this.repo.create({ name, phases }));
  }

  list() {
    return this.repo.find({ order: { name: 'ASC' } });
  }

  /** By id or name: the CLI and scripts may use either. */
  async get(ref: string) {
    const l = await this.repo.findOne({ where: isUuid(ref) ? { id: ref.toLowerCase() } : { name: ref } });
    if (!l) throw notFound(`lifecycle ${ref} not found`);
    return l;
  }

  async update(ref: string, dto: UpdateLifecycleDto) {
    const l = await this.get(ref);
    // `null` passes @IsOptional: only a string renames.
    if (typeof dto.name === 'string') {
      const name = nameOf(dto.name);
      if (name !== l.name && (await this.repo.exists({ where: { name } })))
        throw alreadyExists(`a lifecycle named "${name}" already exists`);
      l.name = name;
    }
    if (dto.phases !== undefined) l.phases = await this.phasesOf(dto.phases);
    return this.repo.save(l);
  }

  /** Refused while a project or channel follows it (the foreign keys would refuse it too, less clearly). */
  async remove(ref: string) {
    const l = await this.get(ref);
    const project = await this.projects.findOne({ where: { lifecycleId: l.id }, order: { name: 'ASC' } });
    if (project) throw new DomainError('lifecycle_in_use', `lifecycle "${l.name}" is used by project ${project.name}`);
    const channel = await this.channels.findOne({ where: { lifecycleId: l.id }, order: { name: 'ASC' } });
    if (channel) {
      const p = await this.projects.findOne({ where: { id: channel.projectId } });
      throw new DomainError(
        'lifecycle_in_use',
        `lifecycle "${l.name}" is used by channel ${channel.name} of project ${p?.name ?? channel.projectId}`,
      );
    }
    await this.repo.delete({ id: l.id });
  }

  /** A `lifecycleId` field of a project or channel, by id or name: its id; null removes it. */
  async resolveRef(ref: string | null, field: string): Promise<string | null> {
    if (ref === null) return null;
    const l = await this.repo.findOne({ where: isUuid(ref) ? { id: ref.toLowerCase() } : { name: ref } });
    if (!l) throw unknownReference(`${field} names an unknown lifecycle "${ref}"`);
    return l.id;
  }

  /** The lifecycle a release follows: its channel's, else its project's, else none. */
  async of(release: ReleaseEntity, tx?: EntityManager): Promise<LifecycleEntity | null> {
    const m = tx ?? this.repo.manager;
    const channel = await m.findOne(ChannelEntity, { where: { id: release.channelId } });
    const id =
      channel?.lifecycleId ?? (await m.findOne(ProjectEntity, { where: { id: release.projectId } }))?.lifecycleId;
    return id ? m.findOne(LifecycleEntity, { where: { id } }) : null;
  }

  /**
   * Refuses (409 lifecycle_blocked) a deployment of the release to an environment its lifecycle does not allow yet,
   * naming the phase that must succeed first. `succeeded`: the environments where the release has a succeeded
   * deployment (the deployment repository's, read by the caller).
   */
  assertAllowed(
    lifecycle: LifecycleEntity,
    release: ReleaseEntity,
    env: EnvironmentEntity,
    succeeded: ReadonlySet<string>,
  ): void {
    const prog = progression(lifecycle.phases, succeeded);
    const why = refusalOf(lifecycle.phases, prog, env.id, {
      release: release.version,
      environment: env.name,
      lifecycle: lifecycle.name,
    });
    if (why) throw new DomainError('lifecycle_blocked', why);
  }

  /**
   * A release's progression: its lifecycle's phases with each environment's newest deployment of the release and
   * whether the release may go there now. Without a lifecycle, one phase holds every environment, all allowed.
   * `history`: the release's deployments as the deployment repository reads them.
   */
  async progressionOf(
    release: ReleaseEntity,
    history: { succeeded: ReadonlySet<string>; last: LastDeployment[] },
  ): Promise<ProgressionDto> {
    const lifecycle = await this.of(release);
    const envs = await this.envs.list();
    const names = new Map(envs.map((e) => [e.id, e.name]));
    const lastBy = new Map(history.last.map((d) => [d.environment_id, d]));
    const phases: Phase[] = lifecycle?.phases ?? [
      {
        name: 'All environments',
        environmentIds: envs.map((e) => e.id),
        minimumEnvironmentsBeforePromotion: 0,
        optional: false,
      },
    ];
    const prog = progression(phases, history.succeeded);
    const allowed = lifecycle ? prog.allowed : new Set(envs.map((e) => e.id));
    return {
      releaseId: release.id,
      lifecycle: lifecycle ? { id: lifecycle.id, name: lifecycle.name } : null,
      phases: phases.map((p, i) => ({
        name: p.name,
        optional: p.optional,
        minimumEnvironmentsBeforePromotion: p.minimumEnvironmentsBeforePromotion,
        complete: prog.phases[i].complete,
        reachable: lifecycle ? prog.phases[i].reachable : true,
        environments: p.environmentIds.map((environmentId) => {
          const d = lastBy.get(environmentId);
          const environmentName = names.get(environmentId) ?? environmentId;
          const reason = lifecycle
            ? refusalOf(phases, prog, environmentId, {
                release: release.version,
                environment: environmentName,
                lifecycle: lifecycle.name,
              })
            : null;
          return {
            environmentId,
            environmentName,
            lastDeployment: d
              ? { id: d.id, status: d.state, createdAt: iso(d.created_at)!, finishedAt: iso(d.finished_at) }
              : null,
            allowed: allowed.has(environmentId),
            ...(reason ? { reason } : {}),
          };
        }),
      })),
      allowedEnvironmentIds: phases.flatMap((p) => p.environmentIds).filter((e) => allowed.has(e)),
    };
  }

  /**
   * Judges phases as a client sent them, naming the offending field: a non-empty list of named phases (names unique),
   * each with at least one known environment (by id or name, stored as ids), no environment in two phases, and a
   * minimum between 0 (all) and the phase's environment count.
   */
  private async phasesOf(raw: unknown): Promise<Phase[]> {
    if (!Array.isArray(raw) || raw.length === 0) throw invalid('phases must be a non-empty list of phases');
    if (raw.length > MAX_PHASES) throw invalid(`phases has ${raw.length} phases (at most ${MAX_PHASES})`);
    const problems: string[] = [];
    const seen = new Map<string, number>();
    const refs: Array<{ at: string; ref: string }> = [];
    raw.forEach((p: unknown, i) => {
      const at = `phases[${i}]`;
      if (!p || typeof p !== 'object' || Array.isArray(p)) return problems.push(`${at} must be an object`);
      const o = p as Record<string, unknown>;
      for (const k of Object.keys(o))
        if (!['name', 'environmentIds', 'minimumEnvironmentsBeforePromotion', 'optional'].includes(k))
          problems.push(`${at}.${k} is not a field of a phase`);
      if (typeof o.name !== 'string' || !o.name.trim()) problems.push(`${at}.name must be a non-empty string`);
      else if (o.name.trim().length > MAX_NAME) problems.push(`${at}.name must be at most ${MAX_NAME} characters`);
      else if (seen.has(o.name.trim()))
        problems.push(`${at}.name "${o.name.trim()}" is already the name of phases[${seen.get(o.name.trim())}]`);
      else seen.set(o.name.trim(), i);
      const envs = o.environmentIds;
      if (!Array.isArray(envs) || envs.length === 0)
        problems.push(`${at}.environmentIds must be a non-empty list of environment ids or names`);
      else if (envs.length > MAX_PHASE_ENVIRONMENTS)
        problems.push(`${at}.environmentIds has ${envs.length} environments (at most ${MAX_PHASE_ENVIRONMENTS})`);
      else if (envs.some((e) => typeof e !== 'string' || !e || e.length > 200))
        problems.push(`${at}.environmentIds must hold environment ids or names`);
      else for (const ref of envs as string[]) refs.push({ at: `${at}.environmentIds`, ref });
      const min = o.minimumEnvironmentsBeforePromotion;
      if (min !== undefined && min !== null) {
        const count = Array.isArray(envs) ? envs.length : 0;
        if (typeof min !== 'number' || !Number.isInteger(min) || min < 0 || min > count)
          problems.push(
            `${at}.minimumEnvironmentsBeforePromotion must be an integer from 0 (all) to ${count} (the phase's environment count)`,
          );
      }
      if (o.optional !== undefined && o.optional !== null && typeof o.optional !== 'boolean')
        problems.push(`${at}.optional must be true or false`);
    });
    if (problems.length) throw invalid(problems);
    const known = await this.envs.lookup(refs.map((r) => r.ref));
    const unknown = refs.find((r) => !known.has(r.ref));
    if (unknown) throw unknownReference(`${unknown.at} names an unknown environment "${unknown.ref}"`);
    const phaseOf = new Map<string, number>();
    const phases = (raw as Array<Record<string, unknown>>).map((o, i): Phase => {
      const ids = (o.environmentIds as string[]).map((r) => known.get(r)!.id);
      for (const id of ids) {
        const other = phaseOf.get(id);
        if (other !== undefined)
          problems.push(
            other === i
              ? `phases[${i}].environmentIds names environment ${envName(known, id)} twice`
              : `phases[${i}].environmentIds: environment ${envName(known, id)} is already in phases[${other}]; an environment belongs to at most one phase`,
          );
        phaseOf.set(id, i);
      }
      return {
        name: (o.name as string).trim(),
        environmentIds: [...new Set(ids)],
        minimumEnvironmentsBeforePromotion: (o.minimumEnvironmentsBeforePromotion as number | undefined) ?? 0,
        optional: (o.optional as boolean | undefined) ?? false,
      };
    });
    if (problems.length) throw invalid(problems);
    return phases;
  }
}

const envName = (known: Map<string, EnvironmentEntity>, id: string) =>
  [...known.values()].find((e) => e.id === id)?.name ?? id;

function nameOf(raw: string): string {
  const name = raw.trim();
  if (!name) throw invalid('name must not be empty');
  return name;
}
