import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post, Query, Req } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { Request } from 'express';
import type { HealthCheck, Machine, Registration, RegistrationToken } from '#shared/api/types.js';
import { idOf, Public } from '../common/http.js';
import { CurrentKey, type AuthenticatedKey } from '../auth/api-key.guard.js';
import { machineInScope } from '../auth/scope.js';
import { Returns } from '../common/openapi.js';
import { CreateTokenDto, RegisterDto, UpdateMachineDto } from './dto/machine.dto.js';
import { HealthChecks } from './health-checks.js';
import { MachinesService } from './machines.service.js';

@ApiTags('machines')
@Controller('api')
export class MachinesController {
  constructor(
    private readonly machines: MachinesService,
    private readonly checks: HealthChecks,
  ) {}

  @Post('registration-tokens')
  @HttpCode(201)
  @Returns('Create a registration token for agents', 201, 'RegistrationToken', [
    'validation_failed',
    'unknown_reference',
  ])
  createToken(@Body() dto: CreateTokenDto): Promise<RegistrationToken> {
    return this.machines.createToken(dto);
  }

  @Public()
  @Post('agents/register')
  @HttpCode(201)
  @Returns(
    "Register an agent: sign its CSR with the server's CA (no API key; a registration token)",
    201,
    'Registration',
    ['validation_failed', 'unknown_reference', 'csr_invalid', 'token_invalid', 'already_exists'],
  )
  register(@Body() dto: RegisterDto, @Req() req: Request): Promise<Registration> {
    return this.machines.register(dto, req.headers.host);
  }

  @Get('machines')
  @Returns(
    'List machines (deployment targets), by environment, role or label (label=zone=a)',
    200,
    ['Machine'],
    ['validation_failed', 'unknown_reference'],
  )
  async list(
    @Query('environmentId') environmentId?: string,
    @Query('role') role?: string,
    @Query('label') label?: string,
    @CurrentKey() key?: AuthenticatedKey,
  ): Promise<Machine[]> {
    return (await this.machines.list({ environmentId, role, label }))
      .filter((m) => !key || machineInScope(key, m.environmentIds))
      .map((m) => this.machines.toDto(m));
  }

  @Get('machines/:id')
  @Returns('Get a machine', 200, 'Machine', ['not_found'])
  async get(@Param('id', idOf('machine')) id: string): Promise<Machine> {
    return this.machines.toDto(await this.machines.get(id));
  }

  @Patch('machines/:id')
  @Returns("Change a machine's roles, environments, disabled flag or labels (replaced whole)", 200, 'Machine', [
    'validation_failed',
    'not_found',
    'unknown_reference',
  ])
  async update(@Param('id', idOf('machine')) id: string, @Body() dto: UpdateMachineDto): Promise<Machine> {
    return this.machines.toDto(await this.machines.update(id, dto));
  }

  @Delete('machines/:id')
  @HttpCode(204)
  @Returns('Revoke a machine: its connection is dropped and its certificate refused from now on', 204, null, [
    'not_found',
  ])
  async revoke(@Param('id', idOf('machine')) id: string) {
    await this.machines.revoke(id);
  }

  /** Asks the machine's agent for a health report now. */
  @Post('machines/:id/health-check')
  @HttpCode(200)
  @Returns("Check a machine's health now (round trip, free disk)", 200, 'HealthCheck', ['not_found'])
  checkHealth(@Param('id', idOf('machine')) id: string): Promise<HealthCheck> {
    return this.checks.check(id);
  }
}
