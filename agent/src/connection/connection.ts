/**
 * The agent's side of the socket: one socket.io connection over mutual TLS, reconnected with exponential back-off
 * and jitter. The back-off resets only after a good handshake (welcome), so an agent that connects and is refused
 * at once keeps backing off instead of hammering the server.
 */
import { io, type Socket } from 'socket.io-client';
import {
  AGENT_EVENT,
  fitAgentMessage,
  parseServerMessage,
  SERVER_EVENT,
  type AgentMessage,
  type ServerMessage,
  type ServerMessageOf,
} from '#shared/protocol/index.js';
import { backoffDelay, classify, FatalAgentError } from '../errors.js';
import type { Identity } from '../identity.js';
import type { AgentLogger } from '../logger.js';

export interface ConnectionHandlers {
  hello: () => AgentMessage;
  onWelcome: (w: ServerMessageOf<'welcome'>) => void;
  onMessage: (m: Exclude<ServerMessage, { type: 'welcome' }>) => void;
  onDisconnected: () => void;
  onFatal: (e: Error) => void;
}

export class AgentConnection {
  private socket?: Socket;
  private attempt = 0;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private welcomed = false;

  constructor(
    private readonly id: Identity,
    private readonly h: ConnectionHandlers,
    private readonly log: AgentLogger,
  ) {}

  get connected() {
    return this.welcomed && !!this.socket?.connected;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket?.removeAllListeners();
    this.socket?.disconnect();
    this.socket = undefined;
  }

  /**
   * Sends when connected and welcomed (hello excepted); false means "not sent, keep it for the reconnect". Texts are
   * cut to the protocol's limits on the way: a message the server refused for a length would be lost for good.
   */
  send(m: AgentMessage): boolean {
    if (!this.socket?.connected || (!this.welcomed && m.type !== 'hello')) return false;
    this.socket.emit(AGENT_EVENT, fitAgentMessage(m));
    return true;
  }

  private connect() {
    if (this.stopped) return;
    const s = io(this.id.agentUrl, {
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      timeout: 15_000,
      ca: this.id.caCertificate,
      cert: this.id.certificate,
      key: this.id.key,
      rejectUnauthorized: true,
    });
    this.socket = s;
    s.on('connect', () => {
      this.log.debug('connected, sending hello', { url: this.id.agentUrl });
      s.emit(AGENT_EVENT, fitAgentMessage(this.h.hello()));
    });
    s.on(SERVER_EVENT, (raw: unknown) => {
      const p = parseServerMessage(raw);
      if (!p.ok) {
        this.log.warn('invalid message from server, ignored', { error: p.error });
        return;
      }
      const m = p.message;
      if (m.type === 'welcome') {
        this.welcomed = true;
        this.attempt = 0;
        this.log.info('connected to server', {
          url: this.id.agentUrl,
          machineId: m.machineId,
          serverVersion: m.serverVersion,
        });
        this.h.onWelcome(m);
        return;
      }
      if (m.type === 'protocol.error') {
        this.log.warn('server reported a protocol error', { code: m.code, message: m.message });
        if (m.fatal) this.fatal(new FatalAgentError(m.message));
        return;
      }
      this.h.onMessage(m);
    });
    s.on('connect_error', (err) => this.retry(err));
    s.on('disconnect', (reason) => {
      const was = this.welcomed;
      this.welcomed = false;
      if (was) this.h.onDisconnected();
      this.log.warn('disconnected from server', { reason });
      if (reason === 'io client disconnect') return;
      this.retry(new Error(reason));
    });
  }

  private retry(err: Error) {
    if (this.stopped) return;
    this.socket?.removeAllListeners();
    this.socket?.disconnect();
    const { cls, hint } = classify(err);
    if (cls === 'fatal') return this.fatal(new FatalAgentError(`${err.message}: ${hint}`));
    const delay = backoffDelay(this.attempt++);
    this.log.warn(`cannot reach server (${err.message}); retrying in ${(delay / 1000).toFixed(1)} s`, {
      hint,
      attempt: this.attempt,
    });
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  private fatal(e: Error) {
    this.stop();
    this.h.onFatal(e);
  }
}
