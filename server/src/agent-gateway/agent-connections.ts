import { Injectable } from '@nestjs/common';
import type { Socket } from 'socket.io';
import { SERVER_EVENT, type ServerMessage } from '#shared/protocol/index.js';

/**
 * The agents connected to this server process. The only way the rest of the server talks to an agent, so that the
 * orchestrator can be tested and reasoned about without a socket. An agent connected to another node is not here:
 * that node delivers its work (it polls the lease table for its own agents).
 */
@Injectable()
export class AgentConnections {
  private sockets = new Map<string, Socket>();

  add(machineId: string, socket: Socket) {
    const old = this.sockets.get(machineId);
    // A reconnect can arrive before the old connection's close: the newest connection is the agent.
    if (old && old.id !== socket.id) old.disconnect(true);
    this.sockets.set(machineId, socket);
  }

  remove(machineId: string, socket: Socket) {
    if (this.sockets.get(machineId)?.id === socket.id) this.sockets.delete(machineId);
  }

  isConnected(machineId: string) {
    return this.sockets.has(machineId);
  }

  machineIds() {
    return [...this.sockets.keys()];
  }

  get count() {
    return this.sockets.size;
  }

  send(machineId: string, message: ServerMessage): boolean {
    const s = this.sockets.get(machineId);
    if (!s) return false;
    s.emit(SERVER_EVENT, message);
    return true;
  }

  disconnect(machineId: string) {
    const s = this.sockets.get(machineId);
    if (!s) return;
    this.sockets.delete(machineId);
    s.disconnect(true);
    // Drop the TLS connection too, so a revoked agent cannot keep talking on an open transport.
    (s.request.socket as { destroy?: () => void }).destroy?.();
  }

  disconnectAll() {
    for (const s of this.sockets.values()) s.disconnect(true);
    this.sockets.clear();
  }
}
