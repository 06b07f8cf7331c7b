/**
 * The dashboard's live channel: socket.io on the REST port, namespace `/live`, authenticated by `auth: {apiKey}` in
 * the handshake. Nothing is pushed per log line: a change marks a deployment dirty, and within 150 ms each
 * subscriber of it gets one snapshot and the log lines it has not seen. Both sides use these types.
 */
import { z } from 'zod';
import type { Deployment, LogEntry } from './types.js';

export const LIVE_NAMESPACE = '/live';

/** Client → server. */
export const LiveSubscribeSchema = z.object({
  deploymentId: z.string().uuid(),
  afterSeq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
});
export const LiveUnsubscribeSchema = z.object({ deploymentId: z.string().uuid() });
export interface LiveClientEvents {
  /** Follow a deployment: its snapshot now and on every change, and its log lines after `afterSeq`. */
  subscribe: (p: z.input<typeof LiveSubscribeSchema>) => void;
  unsubscribe: (p: z.input<typeof LiveUnsubscribeSchema>) => void;
}

/** Server → client. */
export interface LiveServerEvents {
  /** The `GET /api/deployments/:id` body, whenever it changes. */
  deployment: (d: Deployment) => void;
  /** Log lines in seq order, from the subscriber's cursor on. */
  log: (p: { deploymentId: string; entries: LogEntry[] }) => void;
  /** The deployment's interruptions may have changed: fetch the pending ones. */
  interruptions: (p: { deploymentId: string }) => void;
  /** The list of deployments changed: fetch it again. */
  deployments: () => void;
  /** Machines' states changed: fetch them again. */
  machines: () => void;
  /** A subscribe that could not be served (an unknown deployment, a malformed request). */
  'error-message': (p: { message: string }) => void;
}
