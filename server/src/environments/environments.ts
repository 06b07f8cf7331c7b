import { ApiProperty, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import { BadRequestException, Body, Controller, Get, HttpCode, Injectable, Module, NotFoundException, Param, Post } from '@nestjs/common';
import { InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import { IsBoolean, IsNotEmpty, IsOptional, IsString, MaxLength } from 'class-validator';
import { In, Repository } from 'typeorm';
import { conflict, idOf, isUuid } from '../common/http.js';
import { EnvironmentEntity } from './environment.entity.js';

export class CreateEnvironmentDto {
  @ApiProperty({ type: String })
  @IsString() @IsNotEmpty() @MaxLength(100) name: string;
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional() @IsBoolean() guidedFailure?: boolean;
}

export const toEnvironmentDto = (e: EnvironmentEntity) => ({ id: e.id, name: e.name, guidedFailure: e.guidedFailure, createdAt: e.createdAt });

@Injectable()
export class EnvironmentsService {
  constructor(@InjectRepository(EnvironmentEntity) private readonly repo: Repository<EnvironmentEntity>) {}

  async create(dto: CreateEnvironmentDto) {
    const name = dto.name.trim();
    if (await this.repo.exists({ where: { name } })) conflict(`an environment named "${name}" already exists`);
    return this.repo.save(this.repo.create({ name, guidedFailure: dto.guidedFailure ?? false }));
  }

  list() {
    return this.repo.find({ order: { name: 'ASC' } });
  }

  async get(id: string) {
    const e = await this.repo.findOne({ where: { id } });
    if (!e) throw new NotFoundException(`environment ${id} not found`);
    return e;
  }

  /**
   * Resolves environments given by id or by name (agents and the CLI may use names). Throws with the field name
   * and the first unknown value.
   */
  async resolve(refs: string[], field: string): Promise<EnvironmentEntity[]> {
    const ids = refs.filter(isUuid);
    const names = refs.filter((r) => !isUuid(r));
    const found = await this.repo.find({ where: [...(ids.length ? [{ id: In(ids) }] : []), ...(names.length ? [{ name: In(names) }] : [])] });
    for (const r of refs)
      if (!found.some((e) => e.id === r.toLowerCase() || e.name === r))
        throw new BadRequestException(`${field} names an unknown environment "${r}"`);
    return refs.map((r) => found.find((e) => e.id === r.toLowerCase() || e.name === r)!);
  }
}

@ApiTags('environments')
@Controller('api/environments')
export class EnvironmentsController {
  constructor(private readonly envs: EnvironmentsService) {}

  @Post()
  @HttpCode(201)
  async create(@Body() dto: CreateEnvironmentDto) {
    return toEnvironmentDto(await this.envs.create(dto));
  }

  @Get()
  async list() {
    return (await this.envs.list()).map(toEnvironmentDto);
  }

  @Get(':id')
  async get(@Param('id', idOf('environment')) id: string) {
    return toEnvironmentDto(await this.envs.get(id));
  }
}

@Module({
  imports: [TypeOrmModule.forFeature([EnvironmentEntity])],
  providers: [EnvironmentsService],
  controllers: [EnvironmentsController],
  exports: [EnvironmentsService],
})
export class EnvironmentsModule {}
