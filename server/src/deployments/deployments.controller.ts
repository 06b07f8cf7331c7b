import { ApiTags } from '@nestjs/swagger';
import { Body, Controller, Get, HttpCode, Param, Post, Query } from '@nestjs/common';
import type {
  CancelAccepted,
  Deployment,
  DeploymentSummary,
  LogPage,
  Preview,
  SteerAccepted,
} from '#shared/api/types.js';
import { invalid } from '../common/errors.js';
import { Returns } from '../common/openapi.js';
import { idOf, intQuery, isUuid } from '../common/http.js';
import { CurrentKey, type AuthenticatedKey } from '../auth/api-key.guard.js';
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
  @Returns(
    'Deploy a release to an environment (queued; one at a time per project and environment)',
    201,
    'Deployment',
    ['unknown_reference', 'lifecycle_blocked'],
  )
  async create(@Body() dto: CreateDeploymentDto, @CurrentKey() key: AuthenticatedKey): Promise<Deployment> {
    return this.deployments.create(dto, key);
  }

  @Get()
  @Returns('List deployments, newest first', 200, ['DeploymentSummary'], ['not_found'])
  list(
    @Query('projectId') projectId?: string,
    @Query('environmentId') environmentId?: string,
    @Query('state') state?: string,
    @Query('limit') limit?: string,
    @CurrentKey() key?: AuthenticatedKey,
  ): Promise<DeploymentSummary[]> {
    return this.deployments.list({
      projectId,
      environmentId,
      state,
      limit: intQuery('limit', limit, { min: 1, max: 1000, dflt: 100 }),
      scope: key,
    });
  }

  @Get('preview')
  @Returns(
    'What a deployment of a release to an environment would run where, without running anything',
    200,
    'Preview',
    ['unknown_reference'],
  )
  preview(
    @Query('releaseId') releaseId?: string,
    @Query('environmentId') environmentId?: string,
    @Query('specificMachineIds') specificMachineIds?: string,
    @Query('excludedMachineIds') excludedMachineIds?: string,
  ): Promise<Preview> {
    return this.deployments.preview({ releaseId, environmentId, specificMachineIds, excludedMachineIds });
  }

  @Get(':id')
  @Returns('Get a deployment: its steps, targets and actions as they run', 200, 'Deployment', ['not_found'])
  get(@Param('id', idOf('deployment')) id: string): Promise<Deployment> {
    return this.deployments.get(id);
  }

  @Get(':id/log')
  @Returns("Read a deployment's log by cursor (seq order, no gaps)", 200, 'LogPage', ['not_found'])
  async readLog(
    @Param('id', idOf('deployment')) id: string,
    @Query('afterSeq') afterSeq?: string,
    @Query('limit') limit?: string,
    @Query('machineId') machineId?: string,
  ): Promise<LogPage> {
    const after = intQuery('afterSeq', afterSeq, { min: 0, max: Number.MAX_SAFE_INTEGER, dflt: 0 });
    const lim = intQuery('limit', limit, { min: 1, max: 10_000, dflt: 1000 });
    if (machineId !== undefined && !isUuid(machineId)) throw invalid('machineId must be a machine id');
    await this.deployments.getRow(id);
    return this.log.read(id, after, lim, machineId);
  }

  @Post(':id/pause')
  @HttpCode(202)
  @Returns('Pause a deployment: nothing new starts, running targets finish', 202, 'SteerAccepted', [
    'not_found',
    'deployment_finished',
  ])
  async pause(@Param('id', idOf('deployment')) id: string): Promise<SteerAccepted> {
    return { id, state: await this.deployments.pause(id) };
  }

  @Post(':id/resume')
  @HttpCode(202)
  @Returns('Resume a paused deployment where it stopped', 202, 'SteerAccepted', ['not_found', 'deployment_finished'])
  async resume(@Param('id', idOf('deployment')) id: string): Promise<SteerAccepted> {
    return { id, state: await this.deployments.resume(id) };
  }

  @Post(':id/cancel')
  @HttpCode(202)
  @Returns('Cancel a deployment: nothing new starts, running scripts are stopped', 202, 'CancelAccepted', [
    'not_found',
    'deployment_finished',
  ])
  async cancel(@Param('id', idOf('deployment')) id: string): Promise<CancelAccepted> {
    await this.deployments.cancel(id);
    return { id, state: 'cancelling' };
  }

  @Post(':id/retry-failed')
  @HttpCode(201)
  @Returns(
    'Retry a failed deployment: a new deployment of the targets that did not succeed, from the first step that failed',
    201,
    'Deployment',
    ['not_found', 'deployment_not_failed'],
  )
  retryFailed(@Param('id', idOf('deployment')) id: string, @CurrentKey() key: AuthenticatedKey): Promise<Deployment> {
    return this.deployments.retryFailed(id, key);
  }

  @Post(':id/rollback')
  @HttpCode(201)
  @Returns(
    "Roll a finished deployment back: the environment's previous successful release, to the machines that got this one, newest first",
    201,
    'Deployment',
    ['not_found', 'validation_failed', 'deployment_active', 'no_previous_release'],
  )
  rollback(@Param('id', idOf('deployment')) id: string, @CurrentKey() key: AuthenticatedKey): Promise<Deployment> {
    return this.deployments.rollback(id, key);
  }
}
