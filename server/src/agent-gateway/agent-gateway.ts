/**
 * The agent port: HTTPS with mutual TLS. TLS itself refuses a client without a certificate from our CA; on top of
 * that every connection's certificate fingerprint must belong to a known, non-revoked machine (never trust the CN
 * alone: another CA can issue the same name). It carries socket.io (the protocol in shared/src/protocol) and
 * `GET /packages/<sha256>` for package downloads.
 */
import { createServer, type Server as HttpsServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { Server, type Socket } from 'socket.io';
import { normalizeFingerprint } from '#shared/pki/index.js';
import {
  AGENT_EVENT,
  AGENT_PORT_KEEP_ALIVE_MS,
  LIMITS,
  parseAgentMessage,
  PROTOCOL_VERSION,
  SERVER_EVENT,
  type AgentMessage,
  type ProtocolErrorCode,
  type ServerMessage,
} from '#shared/protocol/index.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { PKI } from '../core.module.js';
import { DeploymentLogService } from '../deployments/deployment-log.service.js';
import { LeasesService } from '../leases/leases.service.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { HealthChecks } from '../machines/health-checks.js';
import { MachineEvents, MachinesService } from '../machines/machines.service.js';
import { Dispatcher } from '../orchestration/dispatcher.js';
import { OffersService } from '../orchestration/offers.service.js';
import { PackageDownloads } from '../packages/package-downloads.js';
import { serverChain, type PkiMaterial } from '../pki/pki.js';
import { AgentConnections } from './agent-connections.js';

const MAX_QUEUED_MESSAGES = 2_000;

interface AgentSocketData {
  machineId: string;
  machineName: string;
}

@Injectable()
export class AgentGateway implements OnApplicationBootstrap, OnApplicationShutdown {
  private https?: HttpsServer;
  private io?: Server;

  /** This service's log lines carry `context: 'agents'`. */
  private readonly log: Logger;

  constructor(
    private readonly agents: AgentConnections,
    private readonly machines: MachinesService,
    private readonly leases: LeasesService,
    private readonly deploymentLog: DeploymentLogService,
    private readonly offers: OffersService,
    private readonly dispatcher: Dispatcher,
    private readonly downloads: PackageDownloads,
    events: MachineEvents,
    private readonly health: HealthChecks,
    @Inject(PKI) private readonly pki: PkiMaterial,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.log = logger.child({ context: 'agents' });
    events.on('revoked', (id) => this.agents.disconnect(id));
  }

  async onApplicationBootstrap() {
    this.https = createServer(
      {
        key: this.pki.serverKey,
        cert: serverChain(this.pki),
        ca: this.pki.caCert,
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => void this.handleHttp(req, res),
    );
    this.https.keepAliveTimeout = AGENT_PORT_KEEP_ALIVE_MS;
    this.io = new Server(this.https, {
      transports: ['websocket'],
      serveClient: false,
      maxHttpBufferSize: LIMITS.messageBytes,
      // Transport keep-alive only; liveness of work is the lease heartbeat.
      pingInterval: 25_000,
      pingTimeout: 20_000,
    });
    this.io.use((socket, next) => {
      this.authenticate(socket.request.socket as TLSSocket)
        .then((m) => {
          if (!m)
            return next(
              Object.assign(new Error('certificate is not that of a known machine'), {
                data: { code: 'machine_unknown' satisfies ProtocolErrorCode },
              }),
            );
          (socket.data as AgentSocketData).machineId = m.id;
          (socket.data as AgentSocketData).machineName = m.name;
          next();
        })
        .catch((e) => next(e as Error));
    });
    this.io.on('connection', (socket) => this.onConnection(socket));
    await new Promise<void>((resolve, reject) => {
      this.https!.once('error', reject);
      this.https!.listen(this.config.agentPort, this.config.host, () => resolve());
    });
    this.log.info(`agent port listening on ${this.config.host}:${this.config.agentPort} (mutual TLS)`);
  }

  async onApplicationShutdown() {
    this.agents.disconnectAll();
    await new Promise<void>((r) => (this.io ? this.io.close(() => r()) : r()));
    this.https?.closeAllConnections?.();
  }

  /** The machine behind a TLS connection, or null: CA-verified, and a fingerprint we issued and did not revoke. */
  private async authenticate(tls: TLSSocket) {
    if (!tls.authorized) return null;
    const cert = tls.getPeerCertificate();
    if (!cert?.fingerprint256) return null;
    return this.machines.findByFingerprint(normalizeFingerprint(cert.fingerprint256));
  }

  /** `GET /packages/<sha256>`: only for a machine we know by its certificate (403 otherwise). */
  private async handleHttp(req: IncomingMessage, res: ServerResponse) {
    const machine = await this.authenticate(req.socket as TLSSocket).catch(() => null);
    if (!machine) {
      res.writeHead(403, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          statusCode: 403,
          error: 'Forbidden',
          code: 'machine_unknown',
          message: 'unknown or revoked machine',
        }),
      );
      return;
    }
    await this.downloads.serve(req, res, machine.name);
  }

  private onConnection(socket: Socket) {
    const { machineId, machineName } = socket.data as AgentSocketData;
    let greeted = false;
    // Messages of one agent are handled one at a time, in order: a result must not overtake the log lines before it.
    let queue = Promise.resolve();
    let queued = 0;
    socket.on(AGENT_EVENT, (raw: unknown) => {
      // An agent that sends faster than the database takes it (a flood, or a hostile client) is cut off instead of
      // growing this queue without bound; a well-behaved agent waits for acknowledgements and never gets near it.
      if (++queued > MAX_QUEUED_MESSAGES) {
        this.log.warn('agent flooded the server with messages; disconnecting it', { machine: machineName, queued });
        socket.emit(SERVER_EVENT, {
          type: 'protocol.error',
          code: 'too_many_messages',
          message: `more than ${MAX_QUEUED_MESSAGES} messages waiting: slow down`,
          fatal: false,
        });
        socket.disconnect(true);
        return;
      }
      queue = queue.then(async () => {
        queued--;
        const parsed = parseAgentMessage(raw);
        if (!parsed.ok) {
          this.log.warn('invalid message from agent', { machine: machineName, error: parsed.error });
          socket.emit(SERVER_EVENT, {
            type: 'protocol.error',
            code: 'invalid_message',
            message: `invalid message: ${parsed.error}`,
            fatal: false,
          });
          return;
        }
        if (!greeted && parsed.message.type !== 'hello') {
          socket.emit(SERVER_EVENT, {
            type: 'protocol.error',
            code: 'hello_first',
            message: 'send hello first',
            fatal: false,
          });
          return;
        }
        try {
          if (parsed.message.type === 'hello') greeted = true;
          await this.handle(socket, machineId, parsed.message);
        } catch (e) {
          this.log.error('agent message failed', {
            machine: machineName,
            type: parsed.message.type,
            error: (e as Error).message,
            stack: (e as Error).stack,
          });
        }
      });
    });
    socket.on('disconnect', (reason) => {
      this.agents.remove(machineId, socket);
      void this.machines.markDisconnected(machineId, this.config.nodeId).catch(() => {});
      this.log.info('agent disconnected', { machine: machineName, reason });
    });
  }

  private async handle(socket: Socket, machineId: string, msg: AgentMessage) {
    const send = (m: ServerMessage) => socket.emit(SERVER_EVENT, m);
    // Messages about a lease speak only for the agent's own leases; another machine's (or an unknown) lease is ignored.
    const own = (leaseId: string) => this.leases.own(machineId, leaseId);
    switch (msg.type) {
      case 'hello': {
        if (msg.protocolVersion !== PROTOCOL_VERSION) {
          send({
            type: 'protocol.error',
            code: 'protocol_unsupported',
            message: `protocol version ${msg.protocolVersion} is not supported (server speaks ${PROTOCOL_VERSION})`,
            fatal: true,
          });
          socket.disconnect(true);
          return;
        }
        this.agents.add(machineId, socket);
        await this.machines.markConnected(machineId, this.config.nodeId, msg.agentVersion);
        const { machineName: name } = socket.data as AgentSocketData;
        send({
          type: 'welcome',
          machineId,
          name,
          heartbeatMs: this.config.heartbeatMs,
          leaseTtlMs: this.config.leaseTtlMs,
          serverVersion: this.config.version,
          maxUnpackedBytes: this.config.maxUnpackedBytes,
        });
        this.log.info('agent connected', { machine: name, agentVersion: msg.agentVersion, leases: msg.leases.length });
        // Leases the agent runs that the server has given up on (expired while it was away) must stop.
        const running = msg.leases.filter((l) => l.state === 'running').map((l) => l.leaseId);
        for (const gone of await this.leases.renew(machineId, running))
          send({ type: 'lease.cancel', leaseId: gone, reason: 'the lease expired while the agent was away' });
        await this.dispatcher.deliverPending([machineId]);
        // Its health is known within seconds of connecting, not at the next scheduled round.
        this.health.onArrival(machineId);
        return;
      }
      case 'lease.accepted': {
        if (!(await this.leases.accept(machineId, msg.leaseId)))
          send({ type: 'lease.cancel', leaseId: msg.leaseId, reason: 'the lease is no longer active' });
        return;
      }
      case 'lease.log': {
        const ctx = await own(msg.leaseId);
        if (ctx)
          send({
            type: 'log.ack',
            leaseId: msg.leaseId,
            seq: await this.deploymentLog.appendAgentLines(ctx, msg.lines),
          });
        return;
      }
      case 'lease.action': {
        const ctx = await own(msg.leaseId);
        if (ctx) await this.leases.actionUpdate(ctx, msg);
        return;
      }
      case 'health.report':
        this.health.onReport(machineId, msg);
        return;
      case 'lease.output': {
        const ctx = await own(msg.leaseId);
        if (ctx) await this.offers.storeOutput(ctx, msg);
        return;
      }
      case 'heartbeat': {
        this.machines.markSeen(machineId);
        for (const gone of await this.leases.renew(machineId, msg.leaseIds))
          send({ type: 'lease.cancel', leaseId: gone, reason: 'the lease is no longer active' });
        return;
      }
      case 'lease.result': {
        const ctx = await own(msg.leaseId);
        if (ctx) await this.leases.complete(ctx, msg);
        // Acknowledge even a duplicate, so the agent can forget it; an unknown lease is acknowledged too (nothing
        // here will ever accept it, and the agent must not resend it forever).
        send({ type: 'result.ack', leaseId: msg.leaseId });
        return;
      }
    }
  }
}
