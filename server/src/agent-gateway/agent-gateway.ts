/**
 * The agent port: HTTPS with mutual TLS. TLS itself refuses a client without a certificate from our CA; on top of
 * that every connection's certificate fingerprint must belong to a known, non-revoked machine (never trust the CN
 * alone: another CA can issue the same name). It carries socket.io (the protocol in shared/src/protocol) and
 * `GET /packages/<sha256>` for package downloads.
 */
import { createServer, type Server as HttpsServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { stat } from 'node:fs/promises';
import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { Server, type Socket } from 'socket.io';
import { normalizeFingerprint } from '#shared/pki/index.js';
import { AGENT_EVENT, AGENT_PORT_KEEP_ALIVE_MS, LIMITS, parseAgentMessage, PROTOCOL_VERSION, type AgentMessage } from '#shared/protocol/index.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { PKI } from '../core.module.js';
import { LeasesService } from '../leases/leases.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { MachineEvents, MachinesService } from '../machines/machines.js';
import { Dispatcher } from '../orchestration/dispatcher.js';
import { PackageFiles } from '../packages/packages.js';
import { serverChain, type PkiMaterial } from '../pki/pki.js';
import { AgentConnections } from './agent-connections.js';
import { DownloadPriority } from './download-priority.js';
import { HealthChecks } from '../machines/health-checks.js';
import { LiveEvents } from '../live/live-events.js';

const MAX_QUEUED_MESSAGES = 2_000;

interface AgentSocketData {
  machineId: string;
  machineName: string;
}

@Injectable()
export class AgentGateway implements OnApplicationBootstrap, OnApplicationShutdown {
  private https?: HttpsServer;
  private io?: Server;
  /** Bytes of package data sent by this node (the benchmark reads it from the health endpoint). */
  packageBytesSent = 0;
  private readonly downloads = new DownloadPriority();

  constructor(
    private readonly agents: AgentConnections,
    private readonly machines: MachinesService,
    private readonly leases: LeasesService,
    private readonly dispatcher: Dispatcher,
    private readonly packages: PackageFiles,
    events: MachineEvents,
    private readonly live: LiveEvents,
    private readonly health: HealthChecks,
    @Inject(PKI) private readonly pki: PkiMaterial,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) private readonly log: Logger,
  ) {
    events.on('revoked', (id) => this.agents.disconnect(id));
  }

  async onApplicationBootstrap() {
    this.https = createServer(
      { key: this.pki.serverKey, cert: serverChain(this.pki), ca: this.pki.caCert, requestCert: true, rejectUnauthorized: true },
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
          if (!m) return next(new Error('certificate is not that of a known machine'));
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
    this.log.info(`agent port listening on ${this.config.host}:${this.config.agentPort} (mutual TLS)`, { context: 'agents' });
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

  private async handleHttp(req: IncomingMessage, res: ServerResponse) {
    const m = /^\/packages\/([a-f0-9]{64})(\?prefetch=1)?$/.exec(req.url ?? '');
    try {
      const machine = await this.authenticate(req.socket as TLSSocket);
      if (!machine) {
        res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ statusCode: 403, message: 'unknown or revoked machine' }));
        return;
      }
      if (req.method !== 'GET' || !m) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ statusCode: 404, message: 'not found' }));
        return;
      }
      if (!this.packages.has(m[1])) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ statusCode: 404, message: `no package with sha256 ${m[1]}` }));
        return;
      }
      const { size } = await stat(this.packages.pathOf(m[1]));
      const transfer = async () => {
        res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': size });
        await this.packages.send(m[1], res);
      };
      await (m[2] ? this.downloads.prefetch(transfer) : this.downloads.lease(transfer));
      this.packageBytesSent += size;
      this.log.debug('package sent', { context: 'agents', machine: machine.name, sha256: m[1], bytes: size });
    } catch (e) {
      this.log.warn('package download failed', { context: 'agents', error: (e as Error).message });
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    }
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
        this.log.warn('agent flooded the server with messages; disconnecting it', { context: 'agents', machine: machineName, queued });
        socket.emit('server:message', { type: 'protocol.error', message: `more than ${MAX_QUEUED_MESSAGES} messages waiting: slow down`, fatal: false });
        socket.disconnect(true);
        return;
      }
      queue = queue.then(async () => {
        queued--;
        const parsed = parseAgentMessage(raw);
        if (!parsed.ok) {
          this.log.warn('invalid message from agent', { context: 'agents', machine: machineName, error: parsed.error });
          socket.emit('server:message', { type: 'protocol.error', message: `invalid message: ${parsed.error}`, fatal: false });
          return;
        }
        if (!greeted && parsed.message.type !== 'hello') {
          socket.emit('server:message', { type: 'protocol.error', message: 'send hello first', fatal: false });
          return;
        }
        try {
          if (parsed.message.type === 'hello') greeted = true;
          await this.handle(socket, machineId, parsed.message);
        } catch (e) {
          this.log.error('agent message failed', { context: 'agents', machine: machineName, type: parsed.message.type, error: (e as Error).message, stack: (e as Error).stack });
        }
      });
    });
    socket.on('disconnect', (reason) => {
      this.agents.remove(machineId, socket);
      void this.machines.repo
        .createQueryBuilder()
        .update()
        .set({ connectedNode: null })
        .where('id = :id AND connected_node = :node', { id: machineId, node: this.config.nodeId })
        .execute()
        .catch(() => {});
      this.log.info('agent disconnected', { context: 'agents', machine: machineName, reason });
      this.live.emit('machines');
    });
  }

  private async handle(socket: Socket, machineId: string, msg: AgentMessage) {
    const send = (m: Parameters<AgentConnections['send']>[1]) => socket.emit('server:message', m);
    switch (msg.type) {
      case 'hello': {
        if (msg.protocolVersion !== PROTOCOL_VERSION) {
          send({ type: 'protocol.error', message: `protocol version ${msg.protocolVersion} is not supported (server speaks ${PROTOCOL_VERSION})`, fatal: true });
          socket.disconnect(true);
          return;
        }
        this.agents.add(machineId, socket);
        await this.machines.repo.update({ id: machineId }, { connectedNode: this.config.nodeId, connectedAt: new Date(), lastSeenAt: new Date(), agentVersion: msg.agentVersion });
        const { machineName: name } = socket.data as AgentSocketData;
        send({ type: 'welcome', machineId, name, heartbeatMs: this.config.heartbeatMs, leaseTtlMs: this.config.leaseTtlMs, serverVersion: this.config.version, maxUnpackedBytes: this.config.maxUnpackedBytes });
        this.live.emit('machines');
        this.log.info('agent connected', { context: 'agents', machine: name, agentVersion: msg.agentVersion, leases: msg.leases.length });
        // Leases the agent runs that the server has given up on (expired while it was away) must stop.
        const running = msg.leases.filter((l) => l.state === 'running').map((l) => l.leaseId);
        for (const gone of await this.leases.renew(machineId, running)) send({ type: 'lease.cancel', leaseId: gone, reason: 'the lease expired while the agent was away' });
        await this.dispatcher.deliverPending([machineId]);
        return;
      }
      case 'lease.accepted': {
        if (!(await this.leases.accept(machineId, msg.leaseId))) send({ type: 'lease.cancel', leaseId: msg.leaseId, reason: 'the lease is no longer active' });
        return;
      }
      case 'lease.log': {
        const seq = await this.leases.appendAgentLog(machineId, msg.leaseId, msg.lines);
        if (seq !== null) send({ type: 'log.ack', leaseId: msg.leaseId, seq });
        return;
      }
      case 'lease.action':
        await this.leases.actionUpdate(machineId, msg);
        return;
      case 'health.report':
        this.health.onReport(machineId, msg);
        return;
      case 'lease.output':
        await this.leases.storeOutput(machineId, msg);
        return;
      case 'heartbeat': {
        for (const gone of await this.leases.renew(machineId, msg.leaseIds)) send({ type: 'lease.cancel', leaseId: gone, reason: 'the lease is no longer active' });
        return;
      }
      case 'lease.result': {
        const r = await this.leases.complete(machineId, msg);
        // Acknowledge even a duplicate, so the agent can forget it; an unknown lease is acknowledged too (nothing
        // here will ever accept it, and the agent must not resend it forever).
        send({ type: 'result.ack', leaseId: msg.leaseId });
        if (r && !r.duplicate) this.dispatcher.kick(r.deploymentId);
        return;
      }
    }
  }
}
