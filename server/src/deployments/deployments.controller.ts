import { ApiTags } from '@nestjs/swagger';
import { BadRequestException, Body, Controller, Get, HttpCode, Param, Post, Query } from '@nestjs/common';
import { idOf, intQuery, isUuid } from '../common/http.js';
import { DeploymentLogService } from './deployment-log.service.js';
import { DeploymentsService } from './deployments.service.js';
import { CreateDeploymentDto } from './dto/create-deployment.dto.js';

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
