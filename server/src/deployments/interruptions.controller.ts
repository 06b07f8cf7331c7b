import { ApiTags } from '@nestjs/swagger';
import { Body, Controller, Get, HttpCode, Param, Post, Query, Req } from '@nestjs/common';
import type { Interruption } from '#shared/api/types.js';
import { authenticatedKey, CurrentKey, type AuthedRequest, type AuthenticatedKey } from '../auth/api-key.guard.js';
import { Returns } from '../common/openapi.js';
import { idOf } from '../common/http.js';
import { SubmitInterruptionDto } from './dto/submit-interruption.dto.js';
import { InterruptionsService } from './interruptions.service.js';

@ApiTags('interruptions')
@Controller('api/interruptions')
export class InterruptionsController {
  constructor(private readonly interruptions: InterruptionsService) {}

  @Get()
  @Returns('List interruptions (questions deployments wait on), by deployment and state', 200, ['Interruption'])
  list(
    @Query('deploymentId') deploymentId?: string,
    @Query('state') state?: string,
    @CurrentKey() key?: AuthenticatedKey,
  ): Promise<Interruption[]> {
    return this.interruptions.list({ deploymentId, state }, key);
  }

  @Get(':id')
  @Returns('Get an interruption', 200, 'Interruption', ['not_found'])
  get(@Param('id', idOf('interruption')) id: string): Promise<Interruption> {
    return this.interruptions.get(id);
  }

  @Post(':id/submit')
  @HttpCode(200)
  @Returns('Answer an interruption: proceed or abort; retry, skip or abort', 200, 'Interruption', [
    'not_found',
    'interruption_closed',
    'forbidden',
    'self_approval',
  ])
  submit(
    @Param('id', idOf('interruption')) id: string,
    @Body() dto: SubmitInterruptionDto,
    @Req() req: AuthedRequest,
  ): Promise<Interruption> {
    return this.interruptions.submit(id, dto, authenticatedKey(req));
  }
}
