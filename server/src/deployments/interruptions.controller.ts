import { ApiTags } from '@nestjs/swagger';
import { Body, Controller, Get, HttpCode, Param, Post, Query, Req } from '@nestjs/common';
import type { AuthedRequest } from '../auth/api-key.guard.js';
import { idOf } from '../common/http.js';
import { SubmitInterruptionDto } from './dto/submit-interruption.dto.js';
import { InterruptionsService } from './interruptions.service.js';

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
