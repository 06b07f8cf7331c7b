/**
 * Machines (deployment targets): registration tokens, registration (a CSR signed by the server's CA, the token's use
 * spent once), the machines' state as the API shows it, changes, revocation, and the marks the agent gateway and the
 * health checks record (connected, last seen).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Inject, Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { In, IsNull, Repository, type EntityManager } from 'typeorm';
import type { Machine, Registration, RegistrationToken } from '#shared/api/types.js';
import { parseLabelSelector } from '#shared/labels/index.js';
import { formatRegistrationToken, parseRegistrationToken } from '#shared/pki/index.js';
import { alreadyExists, DomainError, invalid, notFound, unknownReference } from '../common/errors.js';
import { isUuid } from '../common/http.js';
import { iso, returned } from '../database/sql.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { EnvironmentsService } from '../environments/environments.service.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { PKI } from '../core.module.js';
import { CsrError, signAgentCsr, type PkiMaterial } from '../pki/pki.js';
import { LiveEvents } from '../live/live-events.js';
import type { CreateTokenDto, RegisterDto, UpdateMachineDto } from './dto/machine.dto.js';
import { MachineEntity } from './machine.entity.js';
import { RegistrationTokenEntity } from './registration-token.entity.js';

/**
 * In-process events about machines: the agent gateway listens for revocations to drop connections at once; target
 * triggers listen for arrivals (registered, enabled, or given environments: `environmentIds` are those it arrived in).
 */
@Injectable()
export class MachineEvents extends EventEmitter<{
  revoked: [machineId: string];
  arrived: [machineId: string, environmentIds: string[], how: string];
}> {}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
/** A machine not heard from for this many heartbeats is offline. */
const ONLINE_HEARTBEATS = 3;

@Injectable()
export class MachinesService {
  /** Machines heard from since the last write of `last_seen_at` (see markSeen). */
  private seen = new Set<string>();
  private seenTimer?: NodeJS.Timeout;

  /** This service's log lines carry `context: 'machines'`. */
  private readonly log: Logger;

  constructor(
    @InjectRepository(MachineEntity) private readonly repo: Repository<MachineEntity>,
    @InjectRepository(RegistrationTokenEntity) private readonly tokens: Repository<RegistrationTokenEntity>,
    private readonly envs: EnvironmentsService,
    private readonly events: MachineEvents,
    private readonly live: LiveEvents,
    @Inject(PKI) private readonly pki: PkiMaterial,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'machines' });
  }

  /** The one online rule: connected to a node, and seen within 3 heartbeats (a node that died cannot clear its marks). */
  private get onlineWithinSeconds() {
    return (ONLINE_HEARTBEATS * this.config.heartbeatMs) / 1000;
  }

  isOnline(m: MachineEntity): boolean {
    return !!m.connectedNode && !!m.lastSeenAt && m.lastSeenAt.getTime() > Date.now() - this.onlineWithinSeconds * 1000;
  }

  /** Machines online and in all (revoked ones left out), by the same rule as isOnline. */
  async counts(): Promise<{ online: number; total: number }> {
    const [row] = await this.repo.query(
      `SELECT count(*) FILTER (WHERE connected_node IS NOT NULL AND last_seen_at > now() - make_interval(secs => $1))::int AS online, count(*)::int AS total
       FROM machines WHERE revoked_at IS NULL`,
      [this.onlineWithinSeconds],
    );
    return { online: row.online, total: row.total };
  }

  /** Machines that are offline by the online rule and not yet marked unhealthy for it (the health checks mark them). */
  offlineUnmarked(): Promise<MachineEntity[]> {
    return this.repo
      .createQueryBuilder('m')
      .where(
        `m.revoked_at IS NULL AND NOT (m.health = 'unhealthy' AND coalesce(m.health_reason, '') LIKE 'not connected%')`,
      )
      .andWhere(
        `(m.connected_node IS NULL OR m.last_seen_at IS NULL OR m.last_seen_at < now() - make_interval(secs => :s))`,
        { s: this.onlineWithinSeconds },
      )
      .getMany();
  }

  /** A health check's outcome. */
  async recordHealth(
    id: string,
    h: Partial<
      Pick<
        MachineEntity,
        'health' | 'healthReason' | 'healthCheckedAt' | 'healthRttMs' | 'freeDiskBytes' | 'agentVersion'
      >
    >,
  ): Promise<void> {
    await this.repo.update({ id }, h);
    this.live.emit('machines');
  }

  toDto(m: MachineEntity): Machine {
    return {
      id: m.id,
      name: m.name,
      roles: m.roles,
      environmentIds: m.environmentIds,
      labels: m.labels ?? {},
      status: this.isOnline(m) ? 'online' : 'offline',
      disabled: m.disabled,
      health: m.health,
      healthReason: m.healthReason ?? undefined,
      healthCheckedAt: iso(m.healthCheckedAt),
      roundTripMs: m.healthRttMs,
      freeDiskBytes: m.freeDiskBytes,
      lastSeenAt: iso(m.lastSeenAt),
      agentVersion: m.agentVersion,
      fingerprint: m.fingerprint,
      ...(m.lastTriggerError ? { lastTriggerError: m.lastTriggerError } : {}),
      ...(m.lastTriggerAt ? { lastTriggerAt: m.lastTriggerAt.toISOString() } : {}),
      createdAt: m.createdAt.toISOString(),
    };
  }

  async createToken(dto: CreateTokenDto): Promise<RegistrationToken> {
    if (!dto.environmentIds.length) throw invalid('environmentIds must name at least one environment');
    const envs = await this.envs.resolve(dto.environmentIds, 'environmentIds');
    const secret = randomBytes(24).toString('base64url');
    const expiresAt = new Date(Date.now() + (dto.expiresInSeconds ?? 3600) * 1000);
    await this.tokens.insert({
      secretHash: sha256(secret),
      environmentIds: envs.map((e) => e.id),
      roles: dto.roles ?? [],
      maxUses: dto.maxUses ?? 1,
      expiresAt,
    });
    return { token: formatRegistrationToken(this.pki.caFingerprint, secret), expiresAt: expiresAt.toISOString() };
  }

  /**
   * Registers an agent: checks the token (one use spent atomically), signs the agent's CSR and records the
   * certificate's fingerprint, which is from then on the agent's only credential.
   */
  async register(dto: RegisterDto, host: string | undefined): Promise<Registration> {
    const parsed = parseRegistrationToken(dto.token);
    if (!parsed || !timingSafeEqual(Buffer.from(parsed.caFingerprint), Buffer.from(this.pki.caFingerprint)))
      throw new DomainError('token_invalid', 'token is not a registration token of this server');
    const secretHash = sha256(parsed.secret);
    const token = await this.tokens.findOne({ where: { secretHash } });
    if (!token) throw new DomainError('token_invalid', 'token is unknown');
    if (token.expiresAt.getTime() < Date.now()) throw new DomainError('token_invalid', 'token has expired');
    if (token.uses >= token.maxUses) throw new DomainError('token_invalid', 'token has been used up');

    let environmentIds = token.environmentIds;
    if (dto.environmentIds?.length) {
      const envs = await this.envs.resolve(dto.environmentIds, 'environmentIds');
      const outside = envs.find((e) => !token.environmentIds.includes(e.id));
      if (outside) throw invalid(`environmentIds: the token does not allow environment "${outside.name}"`);
      environmentIds = envs.map((e) => e.id);
    }
    let roles = dto.roles?.length ? dto.roles : token.roles;
    if (token.roles.length && dto.roles?.length) {
      const extra = dto.roles.find((r) => !token.roles.includes(r));
      if (extra) throw invalid(`roles: the token does not allow role "${extra}"`);
    }
    roles = [...new Set(roles)];
    if (await this.repo.exists({ where: { name: dto.name, revokedAt: IsNull() } }))
      throw alreadyExists(
        `a machine named "${dto.name}" is already registered (revoke it first, DELETE /api/machines/:id, to register again)`,
      );

    let signed: { certificate: string; fingerprint: string };
    try {
      signed = signAgentCsr(this.pki, dto.csr, dto.name);
    } catch (e) {
      if (e instanceof CsrError) throw new DomainError('csr_invalid', e.message);
      throw e;
    }
    const machine = await this.repo.manager.transaction(async (m) => {
      // Spend one use only if one is left: two agents racing for the last use cannot both win.
      const spent = await m.query(
        `UPDATE registration_tokens SET uses = uses + 1 WHERE id = $1 AND uses < max_uses AND expires_at > now() RETURNING id`,
        [token.id],
      );
      if (!returned(spent).length) throw new DomainError('token_invalid', 'token has been used up');
      const row = m.create(MachineEntity, {
        name: dto.name,
        roles,
        environmentIds,
        labels: labelMap(dto.labels),
        fingerprint: signed.fingerprint,
        certificate: signed.certificate,
        agentVersion: dto.agentVersion ?? null,
      });
      return m.save(row);
    });
    this.log.info(`machine registered`, {
      machine: machine.name,
      machineId: machine.id,
      roles,
      environmentIds,
      labels: machine.labels,
    });

    return {
      machineId: machine.id,
      certificate: signed.certificate,
      caCertificate: this.pki.caCert,
      agentUrl: this.config.agentUrl ?? `https://${hostForUrl(host ?? this.config.host)}:${this.config.agentPort}`,
    };
  }

  /**
   * `environmentId`: an id or a name (an unknown name is refused). `label`: `NAME=VALUE`, machines whose label NAME
   * has that value (a malformed one is refused, naming `label`).
   */
  async list(filter: { environmentId?: string; role?: string; label?: string }) {
    const qb = this.repo.createQueryBuilder('m').where('m.revoked_at IS NULL').orderBy('m.name', 'ASC');
    if (filter.environmentId) {
      const env = isUuid(filter.environmentId)
        ? filter.environmentId.toLowerCase()
        : (await this.envs.resolve([filter.environmentId], 'environmentId'))[0].id;
      qb.andWhere('m.environment_ids ? :env', { env });
    }
    if (filter.role) qb.andWhere('m.roles ? :role', { role: filter.role });
    if (filter.label !== undefined) {
      const sel = parseLabelSelector(filter.label);
      if (!sel.ok) throw invalid(sel.message);
      qb.andWhere('m.labels ->> :labelName = :labelValue', { labelName: sel.value.name, labelValue: sel.value.value });
    }
    return qb.getMany();
  }

  /**
   * The machines a deployment may use: in the environment, not revoked, not disabled, narrowed by the operator's
   * lists (refused with a 400 naming the list when they name an unknown machine, or one outside the environment).
   * Each comes with its labels, which a step's `spreadBy` spreads its batches over (layout.ts). `db`: the caller's
   * transaction, when in one.
   */
  async deployable(
    environmentId: string,
    specific: string[],
    excluded: string[],
    db: EntityManager = this.repo.manager,
  ): Promise<MachineEntity[]> {
    for (const [field, ids] of [
      ['specificMachineIds', specific],
      ['excludedMachineIds', excluded],
    ] as const) {
      const bad = ids.find((i) => !isUuid(i));
      if (bad) throw unknownReference(`${field} names an unknown machine "${bad}"`);
      if (ids.length) {
        const found = await db.find(MachineEntity, { where: { id: In(ids) } });
        const known = new Set(found.map((f) => f.id));
        const missing = ids.find((i) => !known.has(i));
        if (missing) throw unknownReference(`${field} names an unknown machine "${missing}"`);
        const outside = found.find((f) => !f.environmentIds.includes(environmentId));
        if (outside && field === 'specificMachineIds')
          throw invalid(`${field}: machine ${outside.name} is not in the deployment's environment`);
      }
    }
    const all = await db
      .createQueryBuilder(MachineEntity, 'm')
      .where('m.revoked_at IS NULL AND m.disabled = false AND m.environment_ids ? :env', { env: environmentId })
      .getMany();
    // Sets, not lists: ten thousand ids against ten thousand machines stays linear.
    const only = new Set(specific);
    const not = new Set(excluded);
    return all
      .filter((x) => (!only.size || only.has(x.id)) && !not.has(x.id))
      .map((x) => Object.assign(x, { labels: lookupOnly(x.labels) }));
  }

  /**
   * The machine's agent said hello on this node. Its first hello ever is its arrival in its environments (see
   * MachineEvents): a machine registers before its agent can take work, so target triggers wait for this.
   */
  async markConnected(machineId: string, node: string, agentVersion: string): Promise<void> {
    // The joined row is the one before the update: its connected_at tells a first connection.
    const rows = returned<{ first: boolean; environment_ids: string[] }>(
      await this.repo.query(
        `UPDATE machines m SET connected_node = $2, connected_at = now(), last_seen_at = now(), agent_version = $3
         FROM machines old WHERE m.id = $1 AND old.id = m.id
         RETURNING old.connected_at IS NULL AS first, m.environment_ids`,
        [machineId, node, agentVersion],
      ),
    );
    this.live.emit('machines');
    if (rows[0]?.first) this.events.emit('arrived', machineId, rows[0].environment_ids, 'registered');
  }

  /** The machine's connection to this node closed (another node may hold a newer one: its mark stays). */
  async markDisconnected(machineId: string, node: string): Promise<void> {
    await this.repo
      .createQueryBuilder()
      .update()
      .set({ connectedNode: null })
      .where('id = :id AND connected_node = :node', { id: machineId, node })
      .execute();
    this.live.emit('machines');
  }

  /**
   * Why each of these machines cannot take work now (revoked, disabled, offline by the online rule, or unhealthy at
   * its last check); machines that can are left out.
   */
  async unavailable(ids: string[], db: EntityManager = this.repo.manager): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const rows = await db.getRepository(MachineEntity).find({ where: { id: In(ids) } });
    for (const m of rows) {
      const why = m.revokedAt
        ? 'revoked'
        : m.disabled
          ? 'disabled'
          : !this.isOnline(m)
            ? `offline (last seen ${m.lastSeenAt ? m.lastSeenAt.toISOString() : 'never'})`
            : m.health === 'unhealthy'
              ? `unhealthy (${m.healthReason ?? 'its last health check failed'})`
              : undefined;
      if (why) out.set(m.id, why);
    }
    return out;
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
      this.repo
        .update({ id: In(ids) }, { lastSeenAt: () => 'now()' })
        .catch((e) => this.log.warn('last-seen update failed', { error: (e as Error).message }));
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
    if (!m) throw notFound(`machine ${id} not found`);
    return m;
  }

  async update(id: string, dto: UpdateMachineDto) {
    const m = await this.get(id);
    const wasDisabled = m.disabled;
    const hadEnvironments = new Set(m.environmentIds);
    if (dto.roles) m.roles = [...new Set(dto.roles)];
    if (dto.environmentIds)
      m.environmentIds = (await this.envs.resolve(dto.environmentIds, 'environmentIds')).map((e) => e.id);
    if (typeof dto.disabled === 'boolean') m.disabled = dto.disabled; // null passes @IsOptional; the column is NOT NULL
    if (dto.labels !== undefined) m.labels = labelMap(dto.labels); // replaced whole: {} clears them
    const saved = await this.repo.save(m);
    this.live.emit('machines');
    // It arrives where it can now be deployed to and could not before: everywhere when enabled, else in the
    // environments added.
    if (!saved.disabled) {
      const arrivedIn = wasDisabled
        ? saved.environmentIds
        : saved.environmentIds.filter((e) => !hadEnvironments.has(e));
      if (arrivedIn.length)
        this.events.emit('arrived', saved.id, arrivedIn, wasDisabled ? 'was enabled' : 'joined the environment');
    }
    return saved;
  }

  /** What a target trigger did for a machine: `error` null when it deployed (or found nothing to do). */
  async recordTrigger(id: string, error: string | null): Promise<void> {
    await this.repo.update({ id }, { lastTriggerError: error, lastTriggerAt: new Date() });
    this.live.emit('machines');
  }

  /** Revokes a machine: its certificate is refused from now on and its connection is dropped. */
  async revoke(id: string) {
    const m = await this.get(id);
    await this.repo.update({ id }, { revokedAt: new Date(), connectedNode: null });
    this.events.emit('revoked', id);
    this.live.emit('machines');
    this.log.warn(`machine revoked`, { machine: m.name, machineId: id });
  }

  /** The machine a client certificate belongs to, if it is known and not revoked. */
  findByFingerprint(fingerprint: string) {
    return this.repo.findOne({ where: { fingerprint, revokedAt: IsNull() } });
  }
}

/** Exactly the labels sent (validated by the DTO), as a plain object of their own. */
function labelMap(labels: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(labels ?? {}));
}

/**
 * Labels for looking up by name: without a prototype, so that a step spreading by a label named like one of
 * Object.prototype's members (`toString`) finds no value on a machine that lacks the label, not the member.
 */
function lookupOnly(labels: Record<string, string> | null | undefined): Record<string, string> {
  return Object.assign(Object.create(null) as Record<string, string>, labels ?? {});
}

function hostForUrl(hostHeader: string): string {
  // "example.com:8443" → "example.com"; "[::1]:8443" → "[::1]".
  const h = hostHeader.startsWith('[') ? hostHeader.slice(0, hostHeader.indexOf(']') + 1) : hostHeader.split(':')[0];
  return h === '0.0.0.0' ? '127.0.0.1' : h;
}
