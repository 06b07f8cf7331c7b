/**
 * Projects: their deployment process (versioned, optimistic concurrency), their variables (sensitive values never
 * leave the server) and their channels.
 */
import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import type { Channel, Project } from '#shared/api/types.js';
import { validateSteps } from '#shared/process/index.js';
import { MASK, validateVariables, type VariableDef } from '#shared/variables/index.js';
import { alreadyExists, invalid, notFound, staleVersion, unknownReference } from '../common/errors.js';
import { isUuid } from '../common/http.js';
import { EnvironmentsService } from '../environments/environments.service.js';
import { LifecyclesService } from '../lifecycles/lifecycles.service.js';
import { returned } from '../database/sql.js';
import { SecretBox } from '../secrets/secret-box.js';
import type {
  CreateChannelDto,
  CreateProjectDto,
  PutProcessDto,
  PutVariablesDto,
  UpdateChannelDto,
  UpdateProjectDto,
} from './dto/project.dto.js';
import { ChannelEntity, ProjectEntity } from './project.entity.js';

const slugify = (name: string) =>
  name
    .toLowerCase()
    .normalize('NFKD')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '') || 'project';

export const toProjectDto = (p: ProjectEntity): Project => ({
  id: p.id,
  name: p.name,
  slug: p.slug,
  description: p.description,
  defaultChannelId: p.defaultChannelId,
  defaultTimeoutSeconds: p.defaultTimeoutSeconds,
  allowConcurrentOnMachines: p.allowConcurrentOnMachines,
  lifecycleId: p.lifecycleId,
  retention: { keepReleases: p.keepReleases },
  autoDeployNewMachines: p.autoDeployNewMachines,
  createdAt: p.createdAt.toISOString(),
});

/** Sensitive values never leave the server through the API. */
export const maskVariables = (vars: VariableDef[]) => vars.map((v) => (v.sensitive ? { ...v, value: MASK } : v));
/** A variable's name and scope as one key: a sensitive value sent back masked keeps the value stored under it. */
const scopedKey = (v: VariableDef) => JSON.stringify([v.name, v.scope ?? {}]);
export const toChannelDto = (c: ChannelEntity): Channel => ({
  id: c.id,
  name: c.name,
  projectId: c.projectId,
  lifecycleId: c.lifecycleId,
});

@Injectable()
export class ProjectsService {
  constructor(
    @InjectRepository(ProjectEntity) private readonly repo: Repository<ProjectEntity>,
    @InjectRepository(ChannelEntity) private readonly channels: Repository<ChannelEntity>,
    private readonly envs: EnvironmentsService,
    private readonly box: SecretBox,
    private readonly lifecycles: LifecyclesService,
  ) {}

  /**
   * Environments named in a process or in variables' scopes, given by id or name, as ids (what deployments compare
   * with); an unknown one is refused naming its field. One lookup for all of them.
   */
  private async environmentIds(fields: Array<{ path: string; refs: string[] }>): Promise<string[][]> {
    const known = await this.envs.lookup(fields.flatMap((f) => f.refs));
    return fields.map((f) =>
      f.refs.map((r) => {
        const e = known.get(r);
        if (!e) throw unknownReference(`${f.path} names an unknown environment "${r}"`);
        return e.id;
      }),
    );
  }

  async create(dto: CreateProjectDto) {
    const name = dto.name.trim();
    if (await this.repo.exists({ where: { name } })) throw alreadyExists(`a project named "${name}" already exists`);
    let slug = slugify(name);
    for (let i = 2; await this.repo.exists({ where: { slug } }); i++) slug = `${slugify(name)}-${i}`;
    const lifecycleId = await this.lifecycles.resolveRef(dto.lifecycleId ?? null, 'lifecycleId');
    return this.repo.manager.transaction(async (m) => {
      const project = await m.save(
        m.create(ProjectEntity, {
          name,
          slug,
          description: dto.description ?? null,
          processSteps: [],
          processVersion: 1,
          variables: [],
          defaultTimeoutSeconds: dto.defaultTimeoutSeconds ?? null,
          allowConcurrentOnMachines: dto.allowConcurrentOnMachines ?? false,
          autoDeployNewMachines: dto.autoDeployNewMachines ?? false,
          lifecycleId,
        }),
      );
      const channel = await m.save(m.create(ChannelEntity, { projectId: project.id, name: 'Default' }));
      project.defaultChannelId = channel.id;
      return m.save(project);
    });
  }

  list() {
    return this.repo.find({ order: { name: 'ASC' } });
  }

  /** The projects whose target trigger is on (autoDeployNewMachines). */
  withAutoDeploy() {
    return this.repo.find({ where: { autoDeployNewMachines: true }, order: { name: 'ASC' } });
  }

  /** By id, slug or name: the CLI and scripts may use any. */
  async get(ref: string) {
    const p = await this.repo.findOne({
      where: isUuid(ref) ? { id: ref.toLowerCase() } : [{ slug: ref }, { name: ref }],
    });
    if (!p) throw notFound(`project ${ref} not found`);
    return p;
  }

  async update(id: string, dto: UpdateProjectDto) {
    const p = await this.get(id);
    // `null` passes @IsOptional: only a string renames (a name cannot be removed).
    if (typeof dto.name === 'string' && dto.name.trim() !== p.name) {
      if (await this.repo.exists({ where: { name: dto.name.trim() } }))
        throw alreadyExists(`a project named "${dto.name.trim()}" already exists`);
      p.name = dto.name.trim();
    }
    if (dto.description !== undefined) p.description = dto.description;
    if (dto.defaultTimeoutSeconds !== undefined) p.defaultTimeoutSeconds = dto.defaultTimeoutSeconds;
    if (typeof dto.allowConcurrentOnMachines === 'boolean') p.allowConcurrentOnMachines = dto.allowConcurrentOnMachines;
    if (typeof dto.autoDeployNewMachines === 'boolean') p.autoDeployNewMachines = dto.autoDeployNewMachines;
    if (dto.lifecycleId !== undefined) p.lifecycleId = await this.lifecycles.resolveRef(dto.lifecycleId, 'lifecycleId');
    if (typeof dto.retention?.keepReleases === 'number') p.keepReleases = dto.retention.keepReleases;
    return this.repo.save(p);
  }

  async getVariables(id: string) {
    const p = await this.get(id);
    return { projectId: p.id, version: p.variablesVersion, variables: maskVariables(p.variables) };
  }

  /**
   * Replaces the project's variables. A sensitive variable sent back with the mask as its value keeps its stored
   * value, so that a client can GET, edit other variables and PUT without ever knowing the secret. Sensitive values
   * are stored encrypted (secrets/secret-box.ts); a kept one keeps its ciphertext as it is.
   */
  async putVariables(id: string, dto: PutVariablesDto) {
    const v = validateVariables(dto.variables);
    if (!v.ok) throw invalid(v.messages);
    const p = await this.get(id);
    const scoped = v.value
      .map((x, i) => ({ i, refs: x.scope?.environmentIds }))
      .filter((x): x is { i: number; refs: string[] } => !!x.refs?.length);
    const resolved = await this.environmentIds(
      scoped.map((x) => ({ path: `variables[${x.i}].scope.environmentIds`, refs: x.refs })),
    );
    scoped.forEach(
      (x, k) => (v.value[x.i] = { ...v.value[x.i], scope: { ...v.value[x.i].scope, environmentIds: resolved[k] } }),
    );
    // Stored secrets by name and scope, looked up once per variable: linear in the number of variables.
    const secrets = new Map<string, string>();
    for (const o of p.variables) if (o.sensitive && !secrets.has(scopedKey(o))) secrets.set(scopedKey(o), o.value);
    const vars = v.value.map((nv) => {
      if (!nv.sensitive) return nv;
      const old = nv.value === MASK ? secrets.get(scopedKey(nv)) : undefined;
      return { ...nv, value: old ?? this.box.encrypt(nv.value) };
    });
    const [row] = returned<{ variables_version: number }>(
      await this.repo.query(
        `UPDATE projects SET variables = $1::jsonb, variables_version = variables_version + 1 WHERE id = $2 ${typeof dto.version === 'number' ? 'AND variables_version = $3' : ''} RETURNING variables_version`,
        typeof dto.version === 'number' ? [JSON.stringify(vars), p.id, dto.version] : [JSON.stringify(vars), p.id],
      ),
    );
    if (!row)
      throw staleVersion(
        `the variables were changed by someone else: version ${dto.version} is stale (current is ${p.variablesVersion})`,
      );
    return { projectId: p.id, version: row.variables_version, variables: maskVariables(vars) };
  }

  async getProcess(id: string) {
    const p = await this.get(id);
    return { projectId: p.id, version: p.processVersion, steps: p.processSteps };
  }

  /** Replaces the process if `version` is the current one (optimistic concurrency); answers with version + 1. */
  async putProcess(id: string, dto: PutProcessDto) {
    const v = validateSteps(dto.steps);
    if (!v.ok) throw invalid(v.messages);
    const project = await this.get(id);
    // Environments and channels may be named: stored as ids, which is what a deployment compares them with.
    const channels = await this.channels.find({ where: { projectId: project.id } });
    const channelId = (ref: string, path: string) => {
      const c = channels.find((ch) => ch.id === ref.toLowerCase() || ch.name === ref);
      if (!c) throw unknownReference(`${path} names an unknown channel "${ref}"`);
      return c.id;
    };
    const envFields = v.value.flatMap((s, si) =>
      s.actions.flatMap((a, ai) =>
        (['environmentIds', 'excludedEnvironmentIds'] as const)
          .filter((f) => a[f]?.length)
          .map((f) => ({ si, ai, f, path: `steps[${si}].actions[${ai}].${f}`, refs: a[f]! })),
      ),
    );
    const envIds = await this.environmentIds(envFields);
    envFields.forEach((x, k) => (v.value[x.si].actions[x.ai] = { ...v.value[x.si].actions[x.ai], [x.f]: envIds[k] }));
    v.value.forEach((s, si) =>
      s.actions.forEach((a, ai) => {
        if (a.channelIds?.length)
          s.actions[ai] = {
            ...a,
            channelIds: a.channelIds.map((c) => channelId(c, `steps[${si}].actions[${ai}].channelIds`)),
          };
      }),
    );
    const [row] = returned<{ process_version: number }>(
      await this.repo.query(
        `UPDATE projects SET process_steps = $1::jsonb, process_version = process_version + 1 WHERE id = $2 AND process_version = $3 RETURNING process_version`,
        [JSON.stringify(v.value), project.id, dto.version],
      ),
    );
    if (!row)
      throw staleVersion(
        `the deployment process was changed by someone else: version ${dto.version} is stale (current is ${project.processVersion}); reload and apply your change again`,
      );
    return { projectId: project.id, version: row.process_version, steps: v.value };
  }

  async createChannel(projectId: string, dto: CreateChannelDto) {
    const project = await this.get(projectId);
    const name = dto.name.trim();
    if (await this.channels.exists({ where: { projectId: project.id, name } }))
      throw alreadyExists(`project ${project.name} already has a channel named "${name}"`);
    const lifecycleId = await this.lifecycles.resolveRef(dto.lifecycleId ?? null, 'lifecycleId');
    return this.channels.save(this.channels.create({ projectId: project.id, name, lifecycleId }));
  }

  /** Renames a channel or sets its own lifecycle (null: it follows the project's again). */
  async updateChannel(projectId: string, ref: string, dto: UpdateChannelDto) {
    const project = await this.get(projectId);
    const c = await this.channels.findOne({
      where: isUuid(ref) ? { projectId: project.id, id: ref.toLowerCase() } : { projectId: project.id, name: ref },
    });
    if (!c) throw notFound(`project ${project.name} has no channel ${ref}`);
    if (typeof dto.name === 'string' && dto.name.trim() !== c.name) {
      const name = dto.name.trim();
      if (!name) throw invalid('name must not be empty');
      if (await this.channels.exists({ where: { projectId: project.id, name } }))
        throw alreadyExists(`project ${project.name} already has a channel named "${name}"`);
      c.name = name;
    }
    if (dto.lifecycleId !== undefined) c.lifecycleId = await this.lifecycles.resolveRef(dto.lifecycleId, 'lifecycleId');
    return this.channels.save(c);
  }

  async listChannels(projectId: string) {
    const project = await this.get(projectId);
    return this.channels.find({ where: { projectId: project.id }, order: { createdAt: 'ASC' } });
  }

  async getChannel(projectId: string, ref: string) {
    const c = await this.channels.findOne({
      where: isUuid(ref) ? { projectId, id: ref.toLowerCase() } : { projectId, name: ref },
    });
    if (!c) throw unknownReference(`channelId: project has no channel "${ref}"`);
    return c;
  }
}
