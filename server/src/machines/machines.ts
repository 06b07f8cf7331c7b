import { ApiProperty, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  BadRequestException,
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  Inject,
  Injectable,
  NotFoundException,
  Param,
  Patch,
  Post,
  Query,
  Req,
  UnauthorizedException,
} from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { ArrayMaxSize, IsArray, IsBoolean, IsInt, IsNotEmpty, IsOptional, IsString, Matches, Max, MaxLength, Min } from 'class-validator';
import type { Request } from 'express';
import { In, IsNull, Repository, type EntityManager } from 'typeorm';
import { formatRegistrationToken, parseRegistrationToken } from '#shared/pki/index.js';
import { conflict, idOf, isUuid, Public } from '../common/http.js';
import { returned } from '../database/sql.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { EnvironmentsService } from '../environments/environments.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { PKI } from '../core.module.js';
import { CsrError, signAgentCsr, type PkiMaterial } from '../pki/pki.js';
import { MachineEntity } from './machine.entity.js';
import { LiveEvents } from '../live/live-events.js';
import { RegistrationTokenEntity } from './registration-token.entity.js';


const ROLE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export class CreateTokenDto {
  @ApiProperty({ type: [String] })
  @IsArray() @ArrayMaxSize(100) @IsString({ each: true }) environmentIds: string[];
  @ApiPropertyOptional({ type: [String] })
  @IsOptional() @IsArray() @ArrayMaxSize(100) @Matches(ROLE_RE, { each: true, message: 'roles must be names of letters, digits, ".", "_" or "-"' }) roles?: string[];
  @ApiPropertyOptional({ type: Number })
  @IsOptional() @IsInt() @Min(1) @Max(30 * 86400) expiresInSeconds?: number;
  @ApiPropertyOptional({ type: Number })
  @IsOptional() @IsInt() @Min(1) @Max(100_000) maxUses?: number;
}

export class RegisterDto {
  @ApiProperty({ type: String })
  @IsString() @IsNotEmpty() @MaxLength(400) token: string;
  @ApiProperty({ type: String })
  @IsString() @Matches(NAME_RE, { message: 'name must be letters, digits, ".", "_" or "-" (at most 100)' }) name: string;
  @ApiPropertyOptional({ type: [String] })
  @IsOptional() @IsArray() @ArrayMaxSize(100) @Matches(ROLE_RE, { each: true, message: 'roles must be names of letters, digits, ".", "_" or "-"' }) roles?: string[];
  @ApiPropertyOptional({ type: [String] })
  @IsOptional() @IsArray() @ArrayMaxSize(100) @IsString({ each: true }) environmentIds?: string[];
  @ApiProperty({ type: String })
  @IsString() @IsNotEmpty() @MaxLength(20_000) csr: string;
  @ApiPropertyOptional({ type: String })
  @IsOptional() @IsString() @MaxLength(50) agentVersion?: string;
}

export class UpdateMachineDto {
  @ApiPropertyOptional({ type: [String] })
  @IsOptional() @IsArray() @ArrayMaxSize(100) @Matches(ROLE_RE, { each: true, message: 'roles must be names of letters, digits, ".", "_" or "-"' }) roles?: string[];
  @ApiPropertyOptional({ type: [String] })
  @IsOptional() @IsArray() @ArrayMaxSize(100) @IsString({ each: true }) environmentIds?: string[];
  @ApiPropertyOptional({ type: Boolean })
  @IsOptional() @IsBoolean() disabled?: boolean;
}

/** In-process events about machines; the agent gateway listens for revocations to drop connections at once. */
@Injectable()
export class MachineEvents extends EventEmitter<{ revoked: [machineId: string] }> {}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

@Injectable()
export class MachinesService {
  /** Machines heard from since the last write of `last_seen_at` (see markSeen). */
  private seen = new Set<string>();
  private seenTimer?: NodeJS.Timeout;

  constructor(
    @InjectRepository(MachineEntity) readonly repo: Repository<MachineEntity>,
    @InjectRepository(RegistrationTokenEntity) private readonly tokens: Repository<RegistrationTokenEntity>,
    private readonly envs: EnvironmentsService,
    private readonly events: MachineEvents,
    private readonly live: LiveEvents,
    @Inject(PKI) private readonly pki: PkiMaterial,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  isOnline(m: MachineEntity): boolean {
    // A node that died cannot clear its `connected_node` marks: a machine not seen for 3 heartbeats is offline.
    return !!m.connectedNode && !!m.lastSeenAt && m.lastSeenAt.getTime() > Date.now() - 3 * this.config.heartbeatMs;
  }

  toDto(m: MachineEntity) {
    return {
      id: m.id,
      name: m.name,
      roles: m.roles,
      environmentIds: m.environmentIds,
      status: this.isOnline(m) ? 'online' : 'offline',
      disabled: m.disabled,
      health: m.health,
      healthReason: m.healthReason ?? undefined,
      healthCheckedAt: m.healthCheckedAt,
      roundTripMs: m.healthRttMs,
      freeDiskBytes: m.freeDiskBytes,
      lastSeenAt: m.lastSeenAt,
      agentVersion: m.agentVersion,
      fingerprint: m.fingerprint,
      createdAt: m.createdAt,
    };
  }

  async createToken(dto: CreateTokenDto) {
    if (!dto.environmentIds.length) throw new BadRequestException('environmentIds must name at least one environment');
    const envs = await this.envs.resolve(dto.environmentIds, 'environmentIds');
    const secret = randomBytes(24).toString('base64url');
    const expiresAt = new Date(Date.now() + (dto.expiresInSeconds ?? 3600) * 1000);
    await this.tokens.insert({ secretHash: sha256(secret), environmentIds: envs.map((e) => e.id), roles: dto.roles ?? [], maxUses: dto.maxUses ?? 1, expiresAt });
    return { token: formatRegistrationToken(this.pki.caFingerprint, secret), expiresAt };
  }

  /**
   * Registers an agent: checks the token (one use spent atomically), signs the agent's CSR and records the
   * certificate's fingerprint, which is from then on the agent's only credential.
   */
  async register(dto: RegisterDto, host: string | undefined) {
    const parsed = parseRegistrationToken(dto.token);
    if (!parsed || !timingSafeEqual(Buffer.from(parsed.caFingerprint), Buffer.from(this.pki.caFingerprint)))
      throw new UnauthorizedException('token is not a registration token of this server');
    const secretHash = sha256(parsed.secret);
    const token = await this.tokens.findOne({ where: { secretHash } });
    if (!token) throw new UnauthorizedException('token is unknown');
    if (token.expiresAt.getTime() < Date.now()) throw new UnauthorizedException('token has expired');
    if (token.uses >= token.maxUses) throw new UnauthorizedException('token has been used up');

    let environmentIds = token.environmentIds;
    if (dto.environmentIds?.length) {
      const envs = await this.envs.resolve(dto.environmentIds, 'environmentIds');
      const outside = envs.find((e) => !token.environmentIds.includes(e.id));
      if (outside) throw new BadRequestException(`environmentIds: the token does not allow environment "${outside.name}"`);
      environmentIds = envs.map((e) => e.id);
    }
    let roles = dto.roles?.length ? dto.roles : token.roles;
    if (token.roles.length && dto.roles?.length) {
      const extra = dto.roles.find((r) => !token.roles.includes(r));
      if (extra) throw new BadRequestException(`roles: the token does not allow role "${extra}"`);
    }
    roles = [...new Set(roles)];
    if (await this.repo.exists({ where: { name: dto.name } })) conflict(`a machine named "${dto.name}" is already registered (delete it first to register again)`);

    let signed: { certificate: string; fingerprint: string };
    try {
      signed = signAgentCsr(this.pki, dto.csr, dto.name);
    } catch (e) {
      if (e instanceof CsrError) throw new BadRequestException(e.message);
      throw e;
    }
    const machine = await this.repo.manager.transaction(async (m) => {
      // Spend one use only if one is left: two agents racing for the last use cannot both win.
      const spent = await m.query(`UPDATE registration_tokens SET uses = uses + 1 WHERE id = $1 AND uses < max_uses AND expires_at > now() RETURNING id`, [token.id]);
      if (!returned(spent).length) throw new UnauthorizedException('token has been used up');
      const row = m.create(MachineEntity, { name: dto.name, roles, environmentIds, fingerprint: signed.fingerprint, certificate: signed.certificate, agentVersion: dto.agentVersion ?? null });
      return m.save(row);
    });
    this.log.info(`machine registered`, { context: 'machines', machine: machine.name, machineId: machine.id, roles, environmentIds });
    return {
      machineId: machine.id,
      certificate: signed.certificate,
      caCertificate: this.pki.caCert,
      agentUrl: this.config.agentUrl ?? `https://${hostForUrl(host ?? this.config.host)}:${this.config.agentPort}`,
    };
  }

  async list(filter: { environmentId?: string; role?: string }) {
    const qb = this.repo.createQueryBuilder('m').where('m.revoked_at IS NULL').orderBy('m.name', 'ASC');
    if (filter.environmentId) qb.andWhere('m.environment_ids ? :env', { env: filter.environmentId });
    if (filter.role) qb.andWhere('m.roles ? :role', { role: filter.role });
    return qb.getMany();
  }

  /**
   * The machines a deployment may use: in the environment, not revoked, not disabled, narrowed by the operator's
   * lists (refused with a 400 naming the list when they name an unknown machine, or one outside the environment).
   * `db`: the caller's transaction, when in one.
   */
  async deployable(environmentId: string, specific: string[], excluded: string[], db: EntityManager = this.repo.manager): Promise<MachineEntity[]> {
    for (const [field, ids] of [['specificMachineIds', specific], ['excludedMachineIds', excluded]] as const) {
      const bad = ids.find((i) => !isUuid(i));
      if (bad) throw new BadRequestException(`${field} names an unknown machine "${bad}"`);
      if (ids.length) {
        const found = await db.find(MachineEntity, { where: { id: In(ids) } });
        const known = new Set(found.map((f) => f.id));
        const missing = ids.find((i) => !known.has(i));
        if (missing) throw new BadRequestException(`${field} names an unknown machine "${missing}"`);
        const outside = found.find((f) => !f.environmentIds.includes(environmentId));
        if (outside && field === 'specificMachineIds') throw new BadRequestException(`${field}: machine ${outside.name} is not in the deployment's environment`);
      }
    }
    const all = await db.createQueryBuilder(MachineEntity, 'm').where('m.revoked_at IS NULL AND m.disabled = false AND m.environment_ids ? :env', { env: environmentId }).getMany();
    // Sets, not lists: ten thousand ids against ten thousand machines stays linear.
    const only = new Set(specific);
    const not = new Set(excluded);
    return all.filter((x) => (!only.size || only.has(x.id)) && !not.has(x.id));
  }

  /** The machine's agent said hello on this node. */
  async markConnected(machineId: string, node: string, agentVersion: string): Promise<void> {
    await this.repo.update({ id: machineId }, { connectedNode: node, connectedAt: new Date(), lastSeenAt: new Date(), agentVersion });
    this.live.emit('machines');
  }

  /** The machine's connection to this node closed (another node may hold a newer one: its mark stays). */
  async markDisconnected(machineId: string, node: string): Promise<void> {
    await this.repo.createQueryBuilder().update().set({ connectedNode: null }).where('id = :id AND connected_node = :node', { id: machineId, node }).execute();
    this.live.emit('machines');
  }

  /** Which of these machines are not revoked. */
  async notRevoked(ids: string[]): Promise<Set<string>> {
    const rows = await this.repo.find({ where: { id: In(ids), revokedAt: IsNull() }, select: { id: true } });
    return new Set(rows.map((r) => r.id));
  }

  /** Records that a machine was heard from; written within a second, for all machines heard in one statement. */
  markSeen(machineId: string) {
    this.seen.add(machineId);
    this.seenTimer ??= setTimeout(() => {
      this.seenTimer = undefined;
      const ids = [...this.seen];
      this.seen.clear();
      this.repo.update({ id: In(ids) }, { lastSeenAt: () => 'now()' }).catch((e) => this.log.warn('last-seen update failed', { context: 'machines', error: (e as Error).message }));
    }, 1_000);
    this.seenTimer.unref?.();
  }

  /** Machines' names by id, revoked ones included (history names them). */
  async namesOf(ids: string[]): Promise<Map<string, string>> {
    if (!ids.length) return new Map();
    const rows = await this.repo.find({ where: { id: In(ids) }, select: { id: true, name: true } });
    return new Map(rows.map((r) => [r.id, r.name]));
  }

  async get(id: string) {
    const m = await this.repo.findOne({ where: { id, revokedAt: IsNull() } });
    if (!m) throw new NotFoundException(`machine ${id} not found`);
    return m;
  }

  async update(id: string, dto: UpdateMachineDto) {
    const m = await this.get(id);
    if (dto.roles) m.roles = [...new Set(dto.roles)];
    if (dto.environmentIds) m.environmentIds = (await this.envs.resolve(dto.environmentIds, 'environmentIds')).map((e) => e.id);
    if (typeof dto.disabled === 'boolean') m.disabled = dto.disabled; // null passes @IsOptional; the column is NOT NULL
    const saved = await this.repo.save(m);
    this.live.emit('machines');
    return saved;
  }

  /** Revokes a machine: its certificate is refused from now on and its connection is dropped. */
  async revoke(id: string) {
    const m = await this.get(id);
    await this.repo.update({ id }, { revokedAt: new Date(), connectedNode: null });
    this.events.emit('revoked', id);
    this.live.emit('machines');
    this.log.warn(`machine revoked`, { context: 'machines', machine: m.name, machineId: id });
  }

  /** The machine a client certificate belongs to, if it is known and not revoked. */
  findByFingerprint(fingerprint: string) {
    return this.repo.findOne({ where: { fingerprint, revokedAt: IsNull() } });
  }
}

function hostForUrl(hostHeader: string): string {
  // "example.com:8443" → "example.com"; "[::1]:8443" → "[::1]".
  const h = hostHeader.startsWith('[') ? hostHeader.slice(0, hostHeader.indexOf(']') + 1) : hostHeader.split(':')[0];
  return h === '0.0.0.0' ? '127.0.0.1' : h;
}

@ApiTags('machines')
@Controller('api')
export class MachinesController {
  constructor(private readonly machines: MachinesService) {}

  @Post('registration-tokens')
  @HttpCode(201)
  createToken(@Body() dto: CreateTokenDto) {
    return this.machines.createToken(dto);
  }

  @Public()
  @Post('agents/register')
  @HttpCode(201)
  register(@Body() dto: RegisterDto, @Req() req: Request) {
    return this.machines.register(dto, req.headers.host);
  }

  @Get('machines')
  async list(@Query('environmentId') environmentId?: string, @Query('role') role?: string) {
    return (await this.machines.list({ environmentId, role })).map((m) => this.machines.toDto(m));
  }

  @Get('machines/:id')
  async get(@Param('id', idOf('machine')) id: string) {
    return this.machines.toDto(await this.machines.get(id));
  }

  @Patch('machines/:id')
  async update(@Param('id', idOf('machine')) id: string, @Body() dto: UpdateMachineDto) {
    return this.machines.toDto(await this.machines.update(id, dto));
  }

  @Delete('machines/:id')
  @HttpCode(204)
  async revoke(@Param('id', idOf('machine')) id: string) {
    await this.machines.revoke(id);
  }
}
