/**
 * The Cuttle agent protocol: the one definition of what the server and an agent ("tentacle") say to each other.
 *
 * Who implements which side
 *   - server: `server/src/agent-gateway/` (socket.io server on CUTTLE_AGENT_PORT, TLS that demands a client
 *     certificate issued by the server's CA; the certificate's SHA-256 fingerprint must belong to a known,
 *     non-revoked machine) and `server/src/leases/` (what a lease means in the database).
 *   - agent: `agent/src/connection/` (socket.io-client with the agent's key and certificate, back-off with jitter),
 *     `agent/src/leases/` (running what a lease asks), `agent/src/journal/` (results kept on disk until acked).
 *
 * Transport
 *   One socket.io connection per agent over mutual TLS. Every message travels on one event per direction:
 *   agent → server on `AGENT_EVENT` ("agent:message"), server → agent on `SERVER_EVENT` ("server:message"). The
 *   payload is a discriminated union on `type`, validated on arrival with the zod schemas below; a message that
 *   does not validate is answered with `protocol.error` naming the field and is otherwise ignored (the connection
 *   stays up: one bad message must not take a target offline). Packages are not sent over the socket: the agent
 *   downloads them with an HTTPS GET on the same mTLS port, `GET /packages/<sha256>` (see `packageDownloadPath`).
 *
 * Lifecycle
 *   1. connect      TLS handshake with the client certificate; the server's middleware refuses unknown or revoked
 *                   fingerprints before any message is read.
 *   2. hello        agent → server: protocol and agent version, and every lease the agent still knows about
 *                   (running, or finished but not acknowledged).
 *      welcome      server → agent: machine id and name, heartbeat interval and lease time-to-live. A good welcome
 *                   resets the agent's reconnect back-off.
 *   3. lease.offer  server → agent: a lease (one target run: one step's actions, in order, on this target). The
 *                   server has already taken the lease row in the database, so the window is counted before any
 *                   work is sent. An offer repeated for a lease the agent knows is answered with its current state,
 *                   never run twice.
 *      lease.accepted  agent → server. The agent journals the lease, starts its first script (when the first
 *                   action is a script), then sends the acceptance and whatever the start produced (the first
 *                   lease.action), in that order: on a loaded machine the script does not wait behind them.
 *   4. lease.log    agent → server: log lines, each with a per-lease sequence number starting at 1, in order, no
 *                   gaps. The server stores lines it has not seen (dedup by lease and sequence) and answers
 *                   log.ack with the highest sequence stored; the agent keeps unacked lines and resends them after a
 *                   reconnect.
 *      lease.action agent → server: an action's state changed (running, success, failed, skipped) with exit code.
 *      lease.output agent → server: a script ran `set_cuttle_variable NAME VALUE`; later steps can read it.
 *   5. heartbeat    agent → server every `heartbeatMs` (a third of the lease TTL), naming the leases it is running;
 *                   each heartbeat renews those leases' `expires_at`. A lease not renewed within the TTL expires and
 *                   its target run fails as "agent lost".
 *   6. lease.result agent → server: the target run's outcome, with the log lines not sent yet. The agent writes
 *                   it to its journal before sending.
 *      result.ack   server → agent once the result is committed; only then does the agent forget the lease.
 *
 * Health
 *   health.request server → agent (on the server's schedule, or when an operator asks); health.report agent →
 *   server with the agent's version, free disk in its work folder and uptime. The round trip is measured by the
 *   server.
 *
 * Packages ahead of time
 *   package.prefetch server → agent, for a target next in line (the next window's worth of a rolling step, and
 *                   the first window of the step after): the packages its actions will unpack. The agent downloads
 *                   and verifies them into its cache and unpacks one copy ahead into a staging folder, so the target
 *                   does not spend its slot in the window on the transfer when its lease comes. Best effort: nothing
 *                   is answered, and a failure here is retried by the action itself, which reports it.
 *
 * Cancel
 *   lease.cancel server → agent: the agent kills the running script's whole process group (SIGTERM, then SIGKILL
 *   after a grace period), runs no further action of that lease and reports lease.result with state `cancelled`.
 *
 * Disconnect
 *   The agent reconnects with exponential back-off and jitter and sends hello again with its leases; scripts keep
 *   running while it is away, and their log lines and results wait in memory and in the journal. On the server a
 *   disconnect only marks the machine offline: leases stay until they expire, so an agent back within the TTL
 *   carries on as if nothing happened. Results are idempotent: a result that arrives twice changes nothing the
 *   second time and is acknowledged again.
 */
import { z } from 'zod';

export const PROTOCOL_VERSION = 1;
export const AGENT_EVENT = 'agent:message';
export const SERVER_EVENT = 'server:message';
/** `prefetch`: a download ahead of the lease (see package.prefetch); the server lets lease downloads go first. */
export const packageDownloadPath = (sha256: string, prefetch = false) => `/packages/${sha256}${prefetch ? '?prefetch=1' : ''}`;
/**
 * How long the server keeps an idle download connection open on the agent port. Agents close theirs a second
 * earlier, so a download never starts on a connection the server is closing.
 */
export const AGENT_PORT_KEEP_ALIVE_MS = 5_000;

/** Upper bounds that keep one agent from exhausting the server's memory. */
export const LIMITS = {
  /** A longer line is cut to this length and marked with `LOG_TRUNCATED_MARK`. */
  logLineChars: 16 * 1024,
  logLinesPerMessage: 2_000,
  leasesPerAgent: 1_000,
  /** socket.io's maxHttpBufferSize on the agent port. */
  messageBytes: 4 * 1024 * 1024,
} as const;
export const LOG_TRUNCATED_MARK = ' …[truncated]';

const id = z.string().min(1).max(100);
const sha256 = z.string().regex(/^[a-f0-9]{64}$/, 'must be a lowercase hex sha256');
const isoTime = z.string().max(40);

export const ActionStateSchema = z.enum(['pending', 'running', 'success', 'failed', 'skipped', 'cancelled']);
export type ActionState = z.infer<typeof ActionStateSchema>;
export const LeaseOutcomeSchema = z.enum(['success', 'failed', 'cancelled']);
export type LeaseOutcome = z.infer<typeof LeaseOutcomeSchema>;
export const LogLevelSchema = z.enum(['debug', 'info', 'warn', 'error']);
export type LogLevel = z.infer<typeof LogLevelSchema>;

/** One action as the agent runs it: everything already resolved on the server. */
export const PackageRefSchema = z.object({ packageId: z.string().min(1).max(200), version: z.string().min(1).max(100), sha256, sizeBytes: z.number().int().min(0) });
export type PackageRef = z.infer<typeof PackageRefSchema>;

export const LeaseActionSchema = z.object({
  index: z.number().int().min(0),
  name: z.string().min(1).max(200),
  type: z.enum(['script', 'package']),
  script: z.string().max(1_000_000).optional(),
  package: PackageRefSchema.optional(),
  timeoutSeconds: z.number().int().positive().optional(),
  /** Reruns of this action after a failure (not after a timeout's kill by cancel), `retryDelaySeconds` apart. */
  retries: z.number().int().min(0).max(100).default(0),
  retryDelaySeconds: z.number().int().min(0).max(86_400).default(0),
});
export type LeaseAction = z.infer<typeof LeaseActionSchema>;

// ---------------------------------------------------------------- agent → server
export const HelloSchema = z.object({
  type: z.literal('hello'),
  protocolVersion: z.number().int(),
  agentVersion: z.string().max(50),
  /** Leases the agent still holds: running, or finished with a result not yet acknowledged. */
  leases: z.array(z.object({ leaseId: id, state: z.enum(['running', 'finished']) })).max(LIMITS.leasesPerAgent),
});
export const LeaseAcceptedSchema = z.object({ type: z.literal('lease.accepted'), leaseId: id });
export const LogLineSchema = z.object({
  seq: z.number().int().positive(),
  at: isoTime,
  level: LogLevelSchema,
  actionIndex: z.number().int().min(0).optional(),
  text: z.string(),
});
export type LogLine = z.infer<typeof LogLineSchema>;
export const LeaseLogSchema = z.object({
  type: z.literal('lease.log'),
  leaseId: id,
  lines: z.array(LogLineSchema).min(1).max(LIMITS.logLinesPerMessage),
});
export const LeaseActionUpdateSchema = z.object({
  type: z.literal('lease.action'),
  leaseId: id,
  actionIndex: z.number().int().min(0),
  state: ActionStateSchema,
  exitCode: z.number().int().nullable().optional(),
  at: isoTime,
});
export const LeaseOutputSchema = z.object({
  type: z.literal('lease.output'),
  leaseId: id,
  actionIndex: z.number().int().min(0),
  name: z.string().min(1).max(200),
  value: z.string().max(100_000),
  sensitive: z.boolean(),
});
export const HeartbeatSchema = z.object({
  type: z.literal('heartbeat'),
  leaseIds: z.array(id).max(LIMITS.leasesPerAgent),
});
export const LeaseResultSchema = z.object({
  type: z.literal('lease.result'),
  leaseId: id,
  state: LeaseOutcomeSchema,
  exitCode: z.number().int().nullable().optional(),
  error: z.string().max(4_000).optional(),
  /** Every action's final state, so a result alone is enough to settle the target run. */
  actions: z.array(z.object({ index: z.number().int().min(0), state: ActionStateSchema, exitCode: z.number().int().nullable().optional() })).max(1_000),
  /** Highest log sequence the agent produced for this lease: lets the server tell a complete log from a short one. */
  lastLogSeq: z.number().int().min(0),
  /**
   * The lease's last log lines, not sent before: stored with the result in one transaction (one message and one
   * write less per target). Deduplicated like lease.log lines; the result's acknowledgement covers them.
   */
  lines: z.array(LogLineSchema).max(LIMITS.logLinesPerMessage).optional(),
  at: isoTime,
});

export const HealthReportSchema = z.object({
  type: z.literal('health.report'),
  requestId: id,
  agentVersion: z.string().max(50),
  workDir: z.string().max(4096),
  freeDiskBytes: z.number().min(0),
  uptimeSeconds: z.number().min(0),
  runningLeases: z.number().int().min(0),
});

export const AgentMessageSchema = z.discriminatedUnion('type', [
  HealthReportSchema,
  HelloSchema,
  LeaseAcceptedSchema,
  LeaseLogSchema,
  LeaseActionUpdateSchema,
  LeaseOutputSchema,
  HeartbeatSchema,
  LeaseResultSchema,
]);
export type AgentMessage = z.infer<typeof AgentMessageSchema>;
export type AgentMessageOf<T extends AgentMessage['type']> = Extract<AgentMessage, { type: T }>;

// ---------------------------------------------------------------- server → agent
export const WelcomeSchema = z.object({
  type: z.literal('welcome'),
  machineId: id,
  name: z.string(),
  heartbeatMs: z.number().int().positive(),
  leaseTtlMs: z.number().int().positive(),
  serverVersion: z.string(),
});
export const LeaseOfferSchema = z.object({
  type: z.literal('lease.offer'),
  leaseId: id,
  deploymentId: id,
  targetRunId: id,
  stepName: z.string(),
  /** Actions run in order; `startAt` > 0 resumes a target run from a failed action (retry). */
  actions: z.array(LeaseActionSchema).min(1),
  startAt: z.number().int().min(0).default(0),
  machineName: z.string().default(''),
  /** Extra environment for every script of this lease (names are CUTTLE_*). */
  env: z.record(z.string(), z.string()).default({}),
  /**
   * Variables for `#{Name}` substitution, resolved for this target (scopes, system variables, output variables of
   * earlier steps). Sensitive values are masked in every log line; the agent keeps them in memory only.
   */
  variables: z.array(z.object({ name: z.string(), value: z.string(), sensitive: z.boolean() })).max(20_000).default([]),
});
export type LeaseOffer = z.infer<typeof LeaseOfferSchema>;
export const LeaseCancelSchema = z.object({ type: z.literal('lease.cancel'), leaseId: id, reason: z.string().max(500).optional() });
export const LogAckSchema = z.object({ type: z.literal('log.ack'), leaseId: id, seq: z.number().int().min(0) });
export const ResultAckSchema = z.object({ type: z.literal('result.ack'), leaseId: id });
export const ProtocolErrorSchema = z.object({ type: z.literal('protocol.error'), message: z.string(), fatal: z.boolean().default(false) });

export const HealthRequestSchema = z.object({ type: z.literal('health.request'), requestId: id });
export const PackagePrefetchSchema = z.object({ type: z.literal('package.prefetch'), deploymentId: id, packages: z.array(PackageRefSchema).min(1).max(100) });

export const ServerMessageSchema = z.discriminatedUnion('type', [
  HealthRequestSchema,
  PackagePrefetchSchema,
  WelcomeSchema,
  LeaseOfferSchema,
  LeaseCancelSchema,
  LogAckSchema,
  ResultAckSchema,
  ProtocolErrorSchema,
]);
export type ServerMessage = z.infer<typeof ServerMessageSchema>;
export type ServerMessageOf<T extends ServerMessage['type']> = Extract<ServerMessage, { type: T }>;

/** Validation on arrival: either the typed message or a one-line reason naming the offending field. */
export type Parsed<T> = { ok: true; message: T } | { ok: false; error: string };

function describe(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(message)'}: ${i.message}`)
    .join('; ');
}

export function parseAgentMessage(raw: unknown): Parsed<AgentMessage> {
  const r = AgentMessageSchema.safeParse(raw);
  return r.success ? { ok: true, message: r.data } : { ok: false, error: describe(r.error) };
}

export function parseServerMessage(raw: unknown): Parsed<ServerMessage> {
  const r = ServerMessageSchema.safeParse(raw);
  return r.success ? { ok: true, message: r.data } : { ok: false, error: describe(r.error) };
}

/** Cuts an oversized log line and marks it, so a runaway script cannot blow up a message or a row. */
export function clampLogText(text: string): string {
  return text.length > LIMITS.logLineChars ? text.slice(0, LIMITS.logLineChars) + LOG_TRUNCATED_MARK : text;
}
