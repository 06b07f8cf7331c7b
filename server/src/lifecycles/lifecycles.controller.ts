import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { Lifecycle } from '#shared/api/types.js';
import { Returns } from '../common/openapi.js';
import { CreateLifecycleDto, UpdateLifecycleDto } from './dto/lifecycle.dto.js';
import { LifecyclesService, toLifecycleDto } from './lifecycles.service.js';

@ApiTags('lifecycles')
@Controller('api/lifecycles')
export class LifecyclesController {
  constructor(private readonly lifecycles: LifecyclesService) {}

  @Post()
  @HttpCode(201)
  @Returns('Create a lifecycle: the phases of environments releases are promoted through', 201, 'Lifecycle', [
    'validation_failed',
    'unknown_reference',
    'already_exists',
  ])
  async create(@Body() dto: CreateLifecycleDto): Promise<Lifecycle> {
    return toLifecycleDto(await this.lifecycles.create(dto));
  }

  @Get()
  @Returns('List lifecycles', 200, ['Lifecycle'])
  async list(): Promise<Lifecycle[]> {
    return (await this.lifecycles.list()).map(toLifecycleDto);
  }

  @Get(':id')
  @Returns('Get a lifecycle by id or name', 200, 'Lifecycle', ['not_found'])
  async get(@Param('id') id: string): Promise<Lifecycle> {
    return toLifecycleDto(await this.lifecycles.get(id));
  }

  @Patch(':id')
  @Returns("Rename a lifecycle or replace its phases (releases' progression follows at once)", 200, 'Lifecycle', [
    'validation_failed',
    'unknown_reference',
    'not_found',
    'already_exists',
  ])
  async update(@Param('id') id: string, @Body() dto: UpdateLifecycleDto): Promise<Lifecycle> {
    return toLifecycleDto(await this.lifecycles.update(id, dto));
  }

  @Delete(':id')
  @HttpCode(204)
  @Returns('Delete a lifecycle that no project or channel follows', 204, null, ['not_found', 'lifecycle_in_use'])
  async remove(@Param('id') id: string): Promise<void> {
    await this.lifecycles.remove(id);
  }
}
