/**
 * The live channel: one socket.io connection to `/live` per signed-in session. Views subscribe to events with `on`
 * (handlers are dropped on every route change by `resetHandlers`) and to one deployment at a time with `watch`.
 */
import type { LiveServerEvents, LIVE_NAMESPACE as LIVE_NAMESPACE_OF_SERVER } from '#api-live';
import { auth } from './api.js';

/** The live events and their payloads: the server's own definition (shared/src/api/live.ts). */
type Events = LiveServerEvents;
type EventName = Exclude<keyof Events, 'error-message'>;
type Handler = (payload: never) => void;
interface Socket {
  on(ev: string, fn: (payload: unknown) => void): void;
  emit(ev: string, payload?: unknown): void;
  disconnect(): void;
  connected: boolean;
}

const CLIENT_URL = '/socket.io/socket.io.esm.min.js';
/**
 * The browser loads no shared module, so the name is repeated here; the type pins it to the server's constant, and
 * a rename there fails this build.
 */
// eslint-disable-next-line no-restricted-syntax
const LIVE_NAMESPACE: typeof LIVE_NAMESPACE_OF_SERVER = '/live';
let socket: Socket | null = null;
let handlers = new Map<EventName, Set<Handler>>();
let watched: { deploymentId: string; afterSeq: () => number } | null = null;
let statusListener: (s: { connected: boolean; error?: string; unauthorized?: boolean }) => void = () => {};

const EVENTS: EventName[] = ['deployment', 'log', 'interruptions', 'deployments', 'machines'];

export function onStatus(fn: typeof statusListener) {
  statusListener = fn;
}

export async function connect() {
  if (socket || !auth.key) return;
  // Served by the server; loaded at run time so no bundler or npm frontend dependency is involved.
  const mod: { io: (path: string, opts: unknown) => Socket } = await import(CLIENT_URL);
  if (socket || !auth.key) return;
  const s = mod.io(LIVE_NAMESPACE, { auth: { apiKey: auth.key }, transports: ['websocket'] });
  socket = s;
  s.on('connect', () => {
    statusListener({ connected: true });
    if (watched) s.emit('subscribe', { deploymentId: watched.deploymentId, afterSeq: watched.afterSeq() });
  });
  s.on('disconnect', () => statusListener({ connected: false }));
  s.on('connect_error', (e) => {
    const err = e as Error & { data?: { code?: string } };
    // The server's code says it (a refused or revoked key), not the words of its message.
    const unauthorized = err?.data?.code === 'unauthorized';
    statusListener({ connected: false, error: err?.message, unauthorized });
    if (unauthorized) disconnect();
  });
  for (const ev of EVENTS) s.on(ev, (p) => handlers.get(ev)?.forEach((fn) => fn(p as never)));
}

export function disconnect() {
  socket?.disconnect();
  socket = null;
  watched = null;
}

export function on<E extends EventName>(ev: E, fn: Events[E]) {
  if (!handlers.has(ev)) handlers.set(ev, new Set());
  handlers.get(ev)!.add(fn as Handler);
}

export function resetHandlers() {
  handlers = new Map();
}

/** Subscribes to a deployment (again after each reconnect, from `afterSeq()`); returns the unsubscribe. */
export function watch(deploymentId: string, afterSeq: () => number) {
  watched = { deploymentId, afterSeq };
  if (socket?.connected) socket.emit('subscribe', { deploymentId, afterSeq: afterSeq() });
  return () => {
    if (watched?.deploymentId === deploymentId) watched = null;
    socket?.emit('unsubscribe', { deploymentId });
  };
}
