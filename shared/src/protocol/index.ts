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
 *      welcome      server → agent: machine id and name, heartbeat interval and lease time-to-live, and the bound on
 *                   a package's unpacked size. A good welcome resets the agent's reconnect back-off.
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
export const packageDownloadPath = (sha256: string, prefetch = false) =>
  `/packages/${sha256}${prefetch ? '?prefetch=1' : ''}`;
/**
 * How long the server keeps an idle download connection open on the agent port. Agents close theirs a second
 * earlier, so a download never starts on a connection the server is closing.
 */
export const AGENT_PORT_KEEP_ALIVE_MS = 5_000;

/**
 * Upper bounds that keep one agent from exhausting the server's memory. The schemas below enforce them on arrival;
 * the agent cuts what it sends to them first (`fitAgentMessage`, `splitLines`), so that a message it sends is never
 * refused for its size: a refused result would leave the target to fail as "agent lost" although the agent is alive.
 */
export const LIMITS = {
  /** A longer line is cut to this length and marked with `LOG_TRUNCATED_MARK`. */
  logLineChars: 16 * 1024,
  logLinesPerMessage: 2_000,
  /**
   * Characters of log text in one message: even if JSON escaped every one of them as `\uXXXX` (6 bytes), the
   * message would stay well under `messageBytes`.
   */
  logCharsPerMessage: 512 * 1024,
  leasesPerAgent: 1_000,
  /** A lease result's error (the agent cuts longer ones and marks them). */
  errorChars: 4_000,
  /** A name: action, output variable. */
  nameChars: 200,
  /** An output variable's value. */
  outputValueChars: 100_000,
  /** The agent's version, as it reports it. */
  versionChars: 50,
  /** A path the agent reports (its work folder). */
  pathChars: 4_096,
  /** socket.io's maxHttpBufferSize on the agent port. */
  messageBytes: 4 * 1024 * 1024,
} as const;
export const LOG_TRUNCATED_MARK = ' …[truncated]';

const id = z
  .string()
  .min(1)
  .max(100)
  .regex(/^[^\0]*$/, 'must not contain NUL characters');
/** Free text from an agent: a NUL (which PostgreSQL cannot store) is taken out rather than refusing the message. */
const text = (max?: number) =>
  (max === undefined ? z.string() : z.string().max(max)).transform((t) =>
    t.includes('\0') ? t.replaceAll('\0', '') : t,
  );
const sha256 = z.string().regex(/^[a-f0-9]{64}$/, 'must be a lowercase hex sha256');
/**
 * A moment as the agent's clock read it (`toISOString()`): stored as timestamptz, so anything PostgreSQL cannot read
 * as one is refused on arrival rather than failing the write it would join.
 */
const isoTime = z.iso.datetime({ offset: true });
/** Counts and sequence numbers stored in integer columns. */
const INT32 = 2 ** 31 - 1;
const count = () => z.number().int().min(0).max(INT32);
const exitCode = z.number().int().min(-INT32).max(INT32).nullable().optional();

export const ActionStateSchema = z.enum(['pending', 'running', 'success', 'failed', 'skipped', 'cancelled']);
export type ActionState = z.infer<typeof ActionStateSchema>;
export const LeaseOutcomeSchema = z.enum(['success', 'failed', 'cancelled']);
export type LeaseOutcome = z.infer<typeof LeaseOutcomeSchema>;
export const LogLevelSchema = z.enum(['debug', 'info', 'warn', 'error']);
export type LogLevel = z.infer<typeof LogLevelSchema>;

/** One action as the agent runs it: everything already resolved on the server. */
export const PackageRefSchema = z.object({
  packageId: z.string().min(1).max(200),
  version: z.string().min(1).max(100),
  sha256,
  sizeBytes: z.number().int().min(0),
});
export type PackageRef = z.infer<typeof PackageRefSchema>;

export const LeaseActionSchema = z.object({
  index: z.number().int().min(0),
  name: z.string().min(1).max(200),
  type: z.enum(['script', 'package']),
  script: z.string().max(1_000_000).optional(),
  package: PackageRefSchema.optional(),
  /** Package action: globs (relative to the package root) of files whose `#{Name}` are replaced after unpacking. */
  substituteInFiles: z.array(z.string().max(500)).max(100).optional(),
  timeoutSeconds: z.number().int().positive().optional(),
  /** Reruns of this action after a failure (not after a timeout's kill by cancel), `retryDelaySeconds` apart. */
  retries: z.number().int().min(0).max(100).default(0),
  retryDelaySeconds: z.number().int().min(0).max(86_400).default(0),
});
export type LeaseAction = z.infer<typeof LeaseActionSchema>;

// ---------------------------------------------------------------- agent → server
export const HelloSchema = z.object({
  type: z.literal('hello'),
  protocolVersion: z.number().int().max(INT32),
  agentVersion: text(LIMITS.versionChars),
  /** Leases the agent still holds: running, or finished with a result not yet acknowledged. */
  leases: z.array(z.object({ leaseId: id, state: z.enum(['running', 'finished']) })).max(LIMITS.leasesPerAgent),
});
export const LeaseAcceptedSchema = z.object({ type: z.literal('lease.accepted'), leaseId: id });
export const LogLineSchema = z.object({
  seq: count().positive(),
  at: isoTime,
  level: LogLevelSchema,
  actionIndex: count().optional(),
  text: text(),
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
  actionIndex: count(),
  state: ActionStateSchema,
  exitCode,
  at: isoTime,
});
export const LeaseOutputSchema = z.object({
  type: z.literal('lease.output'),
  leaseId: id,
  actionIndex: count(),
  name: text(LIMITS.nameChars).pipe(z.string().min(1)),
  value: text(LIMITS.outputValueChars),
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
  exitCode,
  error: text(LIMITS.errorChars).optional(),
  /**
   * Why a failed run failed, as the agent knows it: its script (or deploy.sh, or the package's download or unpacking)
   * failed, an action timed out, or the agent restarted while it ran. An older agent sends none: `script`.
   */
  failureKind: z.enum(['script', 'timeout', 'unknown-result']).optional(),
  /** Every action's final state, so a result alone is enough to settle the target run. */
  actions: z.array(z.object({ index: count(), state: ActionStateSchema, exitCode })).max(1_000),
  /** Highest log sequence the agent produced for this lease: lets the server tell a complete log from a short one. */
  lastLogSeq: count(),
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
  agentVersion: text(LIMITS.versionChars),
  workDir: text(LIMITS.pathChars),
  freeDiskBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  uptimeSeconds: z.number().min(0).max(Number.MAX_SAFE_INTEGER),
  runningLeases: count(),
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
  /** The server's bound on a package's unpacked size (CUTTLE_MAX_UNPACKED_MB): the agent stops unpacking past it. */
  maxUnpackedBytes: z.number().int().positive().optional(),
});
export const LeaseOfferSchema = z.object({
  type: z.literal('lease.offer'),
  leaseId: id,
  deploymentId: id,
  targetRunId: id,
  stepName: z.string(),
  /** Actions run in order: those still pending on the target (a retry resumes from the failed one). */
  actions: z.array(LeaseActionSchema).min(1),
  machineName: z.string().default(''),
  /** Extra environment for every script of this lease (names are CUTTLE_*). */
  env: z.record(z.string(), z.string()).default({}),
  /**
   * Variables for `#{Name}` substitution, resolved for this target (scopes, system variables, output variables of
   * earlier steps). Sensitive values are masked in every log line; the agent keeps them in memory only.
   */
  variables: z
    .array(z.object({ name: z.string(), value: z.string(), sensitive: z.boolean() }))
    .max(20_000)
    .default([]),
  /**
   * The project's retention at offer time: after a package action succeeds, the agent keeps this many newest
   * installation folders of the package (the one just installed among them). An older server sends none: 3.
   */
  keepReleases: z.number().int().min(1).max(1_000).optional(),
});
export type LeaseOffer = z.infer<typeof LeaseOfferSchema>;
export const LeaseCancelSchema = z.object({
  type: z.literal('lease.cancel'),
  leaseId: id,
  reason: z.string().max(500).optional(),
});
export const LogAckSchema = z.object({ type: z.literal('log.ack'), leaseId: id, seq: z.number().int().min(0) });
export const ResultAckSchema = z.object({ type: z.literal('result.ack'), leaseId: id });
/**
 * Why the server refused something an agent said or did, for the agent's retry table (agent/src/errors.ts); the
 * message is for people. `machine_unknown` also comes as the `data.code` of a refused connection.
 */
export const PROTOCOL_ERROR_CODES = [
  'invalid_message',
  'hello_first',
  'protocol_unsupported',
  'too_many_messages',
  'machine_unknown',
] as const;
export type ProtocolErrorCode = (typeof PROTOCOL_ERROR_CODES)[number];
export const ProtocolErrorSchema = z.object({
  type: z.literal('protocol.error'),
  code: z.enum(PROTOCOL_ERROR_CODES).optional(),
  message: z.string(),
  fatal: z.boolean().default(false),
});

export const HealthRequestSchema = z.object({ type: z.literal('health.request'), requestId: id });
export const PackagePrefetchSchema = z.object({
  type: z.literal('package.prefetch'),
  deploymentId: id,
  packages: z.array(PackageRefSchema).min(1).max(100),
});

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
  return cutText(text, LIMITS.logLineChars);
}

/** `text` cut to `max` characters (plus the mark) when longer; never splits a surrogate pair. */
export function cutText(text: string, max: number): string {
  if (text.length <= max) return text;
  const end = /[\uD800-\uDBFF]/.test(text[max - 1]) ? max - 1 : max;
  return text.slice(0, end) + LOG_TRUNCATED_MARK;
}

/**
 * The message as the protocol's limits allow it: every text cut to its bound (and marked), every line clamped. The
 * agent passes everything it sends through this, so no message of its own is refused on arrival for a length.
 * Lists are not cut here: their senders split them (`splitLines`).
 */
export function fitAgentMessage(m: AgentMessage): AgentMessage {
  const cut = (t: string, max: number) => (t.length <= max ? t : cutText(t, max - LOG_TRUNCATED_MARK.length));
  const lines = (ls: LogLine[]) =>
    ls.some((l) => l.text.length > LIMITS.logLineChars) ? ls.map((l) => ({ ...l, text: clampLogText(l.text) })) : ls;
  switch (m.type) {
    case 'hello':
      return { ...m, agentVersion: cut(m.agentVersion, LIMITS.versionChars) };
    case 'health.report':
      return {
        ...m,
        agentVersion: cut(m.agentVersion, LIMITS.versionChars),
        workDir: cut(m.workDir, LIMITS.pathChars),
      };
    case 'lease.log':
      return { ...m, lines: lines(m.lines) };
    case 'lease.output':
      return { ...m, name: cut(m.name, LIMITS.nameChars), value: cut(m.value, LIMITS.outputValueChars) };
    case 'lease.result':
      return {
        ...m,
        ...(m.error !== undefined ? { error: cut(m.error, LIMITS.errorChars) } : {}),
        ...(m.lines ? { lines: lines(m.lines) } : {}),
      };
    default:
      return m;
  }
}

/**
 * Log lines in pieces that fit one message each: at most `maxLines` lines (and `LIMITS.logLinesPerMessage`), and at
 * most `LIMITS.logCharsPerMessage` characters of text.
 */
export function splitLines(lines: LogLine[], maxLines: number = LIMITS.logLinesPerMessage): LogLine[][] {
  const out: LogLine[][] = [];
  let piece: LogLine[] = [];
  let chars = 0;
  const most = Math.min(maxLines, LIMITS.logLinesPerMessage);
  for (const l of lines) {
    if (piece.length && (piece.length >= most || chars + l.text.length > LIMITS.logCharsPerMessage)) {
      out.push(piece);
      piece = [];
      chars = 0;
    }
    piece.push(l);
    chars += l.text.length;
  }
  if (piece.length) out.push(piece);
  return out;
}
