import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { In, Repository } from 'typeorm';
import type { Environment } from '#shared/api/types.js';
import { alreadyExists, invalid, notFound, unknownReference } from '../common/errors.js';
import { isUuid } from '../common/http.js';
import type { CreateEnvironmentDto, UpdateEnvironmentDto } from './dto/create-environment.dto.js';
import { EnvironmentEntity } from './environment.entity.js';

export const toEnvironmentDto = (e: EnvironmentEntity): Environment => ({
  id: e.id,
  name: e.name,
  guidedFailure: e.guidedFailure,
  rollbackOnFailure: e.rollbackOnFailure,
  createdAt: e.createdAt.toISOString(),
});

/** Names are stored trimmed; one that is only spaces is no name. */
function nameOf(raw: string): string {
  const name = raw.trim();
  if (!name) throw invalid('name must not be empty');
  return name;
}

@Injectable()
export class EnvironmentsService {
  constructor(@InjectRepository(EnvironmentEntity) private readonly repo: Repository<EnvironmentEntity>) {}

  async create(dto: CreateEnvironmentDto) {
    const name = nameOf(dto.name);
    if (await this.repo.exists({ where: { name } }))
      throw alreadyExists(`an environment named "${name}" already exists`);
    return this.repo.save(
      this.repo.create({
        name,
        guidedFailure: dto.guidedFailure ?? false,
        rollbackOnFailure: dto.rollbackOnFailure ?? false,
      }),
    );
  }

  /**
   * Renames an environment or changes its deployments' defaults. A rename changes no reference: tokens, machines,
   * processes and variables hold the id, so only lookups by the old name stop finding it.
   */
  async update(id: string, dto: UpdateEnvironmentDto) {
    const e = await this.get(id);
    // `null` passes @IsOptional: only a string renames, only a boolean changes a default (the columns are NOT NULL).
    if (typeof dto.name === 'string') {
      const name = nameOf(dto.name);
      if (name !== e.name && (await this.repo.exists({ where: { name } })))
        throw alreadyExists(`an environment named "${name}" already exists`);
      e.name = name;
    }
    if (typeof dto.guidedFailure === 'boolean') e.guidedFailure = dto.guidedFailure;
    if (typeof dto.rollbackOnFailure === 'boolean') e.rollbackOnFailure = dto.rollbackOnFailure;
    return this.repo.save(e);
  }

  list() {
    return this.repo.find({ order: { name: 'ASC' } });
  }

  async get(id: string) {
    const e = await this.repo.findOne({ where: { id } });
    if (!e) throw notFound(`environment ${id} not found`);
    return e;
  }

  /** Environments by every ref (id or name) among `refs` that names one; unknown refs are absent. */
  async lookup(refs: string[]): Promise<Map<string, EnvironmentEntity>> {
    const unique = [...new Set(refs)];
    if (!unique.length) return new Map();
    const ids = unique.filter(isUuid).map((r) => r.toLowerCase());
    const names = unique.filter((r) => !isUuid(r));
    const found = await this.repo.find({
      where: [...(ids.length ? [{ id: In(ids) }] : []), ...(names.length ? [{ name: In(names) }] : [])],
    });
    const out = new Map<string, EnvironmentEntity>();
    for (const r of unique) {
      const e = found.find((x) => x.id === r.toLowerCase() || x.name === r);
      if (e) out.set(r, e);
    }
    return out;
  }

  /**
   * Resolves environments given by id or by name (agents and the CLI may use names). Throws with the field name
   * and the first unknown value.
   */
  async resolve(refs: string[], field: string): Promise<EnvironmentEntity[]> {
    const ids = refs.filter(isUuid);
    const names = refs.filter((r) => !isUuid(r));
    const found = await this.repo.find({
      where: [...(ids.length ? [{ id: In(ids) }] : []), ...(names.length ? [{ name: In(names) }] : [])],
    });
    const byRef = (r: string) => found.find((e) => e.id === r.toLowerCase() || e.name === r);
    for (const r of refs) if (!byRef(r)) throw unknownReference(`${field} names an unknown environment "${r}"`);
    return refs.map((r) => byRef(r)!);
  }
}
