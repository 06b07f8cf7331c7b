/**
 * The REST API's responses: one definition, as zod schemas, for the server's controllers (their return types and
 * the OpenAPI document's response schemas, through server/src/common/openapi.ts), the dashboard and the CLI. Times are
 * ISO-8601 strings. Objects are open: a client must accept fields it does not know (the API grows by adding them).
 * Requests are described by the server's DTOs and, for a process and variables, by shared/src/process and
 * shared/src/variables.
 */
import { z } from 'zod';
import { ProcessStepsSchema } from '../process/index.js';
import { VariableSchema } from '../variables/index.js';
import { ERROR_CODES, type ErrorCode } from './errors.js';

const time = z.string().describe('ISO-8601 time');
const maybeTime = time.nullable();
const id = z.string().describe('uuid');
/** A response object; the OpenAPI document marks them open (new fields may appear: clients must accept them). */
const open = <T extends z.ZodRawShape>(shape: T) => z.object(shape);

export const RunStateSchema = z.enum(['pending', 'running', 'success', 'failed', 'skipped', 'cancelled']);
export const DeploymentStateSchema = z.enum([
  'scheduled',
  'queued',
  'executing',
  'waiting',
  'paused',
  'cancelling',
  'success',
  'failed',
  'cancelled',
]);

export const ErrorBodySchema = open({
  statusCode: z.number().int(),
  error: z.string(),
  code: z
    .enum(ERROR_CODES as [ErrorCode, ...ErrorCode[]])
    .describe('what went wrong, for programs (see the error codes table)'),
  message: z.union([z.string(), z.array(z.string())]).describe('for people: names the field or thing'),
});

export const EnvironmentSchema = open({
  id,
  name: z.string(),
  guidedFailure: z.boolean(),
  rollbackOnFailure: z
    .boolean()
    .describe('deployments here roll back when they fail, unless created with rollbackOnFailure: false'),
  createdAt: time,
});

export const MachineSchema = open({
  id,
  name: z.string(),
  roles: z.array(z.string()),
  environmentIds: z.array(id),
  labels: z
    .record(z.string(), z.string())
    .describe('topology labels, like {"zone": "a"} (a step spreads its batches by one)'),
  status: z.enum(['online', 'offline']),
  disabled: z.boolean(),
  health: z.enum(['healthy', 'unhealthy', 'unknown']),
  healthReason: z.string().optional(),
  healthCheckedAt: maybeTime,
  roundTripMs: z.number().nullable(),
  freeDiskBytes: z.number().nullable(),
  lastSeenAt: maybeTime,
  agentVersion: z.string().nullable(),
  fingerprint: z.string(),
  lastTriggerError: z
    .string()
    .optional()
    .describe('why the last target trigger (autoDeployNewMachines) could not deploy to it; absent once one did'),
  lastTriggerAt: time.optional().describe('when a target trigger last acted for it'),
  createdAt: time,
});

export const RegistrationTokenSchema = open({
  token: z.string().describe('give it to the agent: --token'),
  expiresAt: time,
});
export const RegistrationSchema = open({
  machineId: id,
  certificate: z.string(),
  caCertificate: z.string(),
  agentUrl: z.string(),
});
export const HealthCheckSchema = open({
  machineId: id,
  health: z.enum(['healthy', 'unhealthy', 'unknown']),
  reason: z.string().optional(),
  checkedAt: maybeTime,
  roundTripMs: z.number().nullable().optional(),
  freeDiskBytes: z.number().nullable().optional(),
  agentVersion: z.string().nullable().optional(),
  checkedBy: z.string().optional(),
});

export const ProjectSchema = open({
  id,
  name: z.string(),
  slug: z.string(),
  description: z.string().nullable(),
  defaultChannelId: id.nullable(),
  defaultTimeoutSeconds: z.number().int().nullable(),
  allowConcurrentOnMachines: z.boolean(),
  lifecycleId: id.nullable().describe("the lifecycle its releases are promoted through (a channel's own wins)"),
  /** What agents keep: the newest `keepReleases` installation folders of each package, after a success. */
  retention: open({ keepReleases: z.number().int() }),
  autoDeployNewMachines: z
    .boolean()
    .describe("a machine that arrives in an environment gets that environment's last successful release"),
  createdAt: time,
});
export const ChannelSchema = open({
  id,
  name: z.string(),
  projectId: id,
  lifecycleId: id.nullable().describe("its own lifecycle; null follows the project's"),
});
export const DeploymentProcessSchema = open({ projectId: id, version: z.number().int(), steps: ProcessStepsSchema });
export const VariablesSchema = open({ projectId: id, version: z.number().int(), variables: z.array(VariableSchema) });

export const PackageSchema = open({
  packageId: z.string(),
  version: z.string(),
  sha256: z.string(),
  sizeBytes: z.number().int(),
  createdAt: time,
});
export const ReleasePackageSchema = open({
  packageId: z.string(),
  version: z.string(),
  sha256: z.string(),
  sizeBytes: z.number().int(),
});
export const ReleaseSchema = open({
  id,
  projectId: id,
  channelId: id,
  version: z.string(),
  processVersion: z.number().int(),
  steps: ProcessStepsSchema,
  packages: z.array(ReleasePackageSchema),
  variables: z.array(VariableSchema).describe('sensitive values are masked'),
  defaultTimeoutSeconds: z.number().int().nullable(),
  createdAt: time,
});

/**
 * Why a target failed: its agent went silent past the lease's TTL, the agent restarted while it ran, an action timed
 * out, its script failed (or its package could not be fetched or unpacked), or a person aborted it (a manual
 * intervention).
 */
export const FailureKindSchema = z.enum([
  'agent-lost',
  'unknown-result',
  'timeout',
  'script',
  'aborted',
  'health-check',
]);
export const TargetRunSchema = open({
  machineId: id.nullable().describe('null for a step that runs on the server'),
  machineName: z.string(),
  state: RunStateSchema,
  batch: z.number().int().describe("the step's batch it belongs to, from 0"),
  waitingFor: z
    .enum(['machine', 'person'])
    .optional()
    .describe(
      'machine: pending while its machine is busy with another deployment; person: running, at a manual intervention',
    ),
  skipReason: z
    .string()
    .optional()
    .describe('why a skipped target was skipped (skipUnavailable: offline, disabled, unhealthy)'),
  bakeCheck: z
    .enum(['pending', 'running', 'success', 'failed'])
    .optional()
    .describe("its health check at the end of its batch's bake"),
  attempt: z.number().int(),
  error: z.string().optional(),
  failureKind: FailureKindSchema.optional(),
  startedAt: maybeTime,
  finishedAt: maybeTime,
  actions: z.array(
    open({
      name: z.string(),
      state: RunStateSchema,
      exitCode: z.number().int().nullable(),
      skipReason: z.string().optional(),
    }),
  ),
});
export const StepRunSchema = open({
  name: z.string(),
  state: RunStateSchema,
  windowSize: z.number().int(),
  maxFailures: z.number().int(),
  condition: z.enum(['success', 'failure', 'always']),
  startTrigger: z.enum(['afterPrevious', 'withPrevious']),
  skipReason: z.string().optional(),
  batchCount: z.number().int(),
  currentBatch: z
    .number()
    .int()
    .nullable()
    .describe('the batch in progress or waited on, from 0; null before and after'),
  gate: z
    .enum(['bake', 'health-check', 'approval'])
    .optional()
    .describe('what the step waits for before its next batch'),
  bakeUntil: time.optional().describe('while baking: when the bake ends'),
  startedAt: maybeTime,
  finishedAt: maybeTime,
  targets: z.array(TargetRunSchema),
});
export const DeploymentSchema = open({
  id,
  releaseId: id,
  releaseVersion: z.string(),
  projectId: id,
  environmentId: id,
  state: DeploymentStateSchema,
  queuedBehind: id
    .optional()
    .describe('while queued: the deployment of the same project and environment directly ahead'),
  guidedFailure: z.boolean(),
  rollbackOnFailure: z.boolean(),
  retryOf: id.optional().describe('the failed deployment this one retries'),
  rollbackOf: id.optional().describe('the deployment this one rolls back'),
  rolledBackBy: id.optional().describe('the deployment that rolls this one back'),
  createdBy: open({ id, name: z.string() })
    .optional()
    .describe('the API key that asked for it (absent on deployments made before keys had roles)'),
  pausedAt: time.optional().describe('while paused: since when'),
  queueAt: time.optional().describe('a scheduled deployment: when it is queued'),
  queueExpiresAt: time.optional().describe('not started by then, it ends cancelled'),
  trigger: z
    .literal('new-machine')
    .optional()
    .describe('made by a target trigger (autoDeployNewMachines), not a person'),
  triggerMachineId: id.optional().describe('the machine a target trigger made it for'),
  specificMachineIds: z.array(id),
  excludedMachineIds: z.array(id),
  error: z.string().optional(),
  ownerNode: z.string().optional(),
  createdAt: time,
  startedAt: maybeTime,
  finishedAt: maybeTime,
  steps: z.array(StepRunSchema),
});
export const DeploymentSummarySchema = open({
  id,
  releaseId: id,
  projectId: id,
  environmentId: id,
  state: DeploymentStateSchema,
  queuedBehind: id.optional(),
  retryOf: id.optional(),
  rollbackOf: id.optional(),
  createdBy: open({ id, name: z.string() })
    .optional()
    .describe('the API key that asked for it (absent on deployments made before keys had roles)'),
  queueAt: time.optional().describe('a scheduled deployment: when it is queued'),
  queueExpiresAt: time.optional().describe('not started by then, it ends cancelled'),
  trigger: z
    .literal('new-machine')
    .optional()
    .describe('made by a target trigger (autoDeployNewMachines), not a person'),
  triggerMachineId: id.optional().describe('the machine a target trigger made it for'),
  error: z.string().optional().describe('why it ended without running (a scheduled one past its expiry)'),
  createdAt: time,
  startedAt: maybeTime,
  finishedAt: maybeTime,
});
export const CancelAcceptedSchema = open({ id, state: z.literal('cancelling') });
export const SteerAcceptedSchema = open({ id, state: DeploymentStateSchema });
export const PreviewSchema = open({
  releaseId: id,
  environmentId: id,
  estimatedSeconds: z
    .number()
    .nullable()
    .describe('the whole deployment, from earlier deployments of the project; null without any'),
  steps: z.array(
    open({
      name: z.string(),
      runsOn: z.enum(['targets', 'server']),
      condition: z.enum(['success', 'failure', 'always']),
      startTrigger: z.enum(['afterPrevious', 'withPrevious']),
      windowSize: z.number().int(),
      maxFailures: z.number().int(),
      willRun: z.boolean(),
      skipReason: z.string().optional(),
      targets: z.array(open({ machineId: id, machineName: z.string() })),
      batches: z.array(z.array(z.string())).describe('machine names by batch, in the order they will go'),
      estimatedSeconds: z.number().nullable(),
      actions: z.array(
        open({ name: z.string(), type: z.string(), willRun: z.boolean(), skipReason: z.string().optional() }),
      ),
    }),
  ),
});
export const LogEntrySchema = open({
  seq: z.number().int(),
  at: time,
  level: z.enum(['debug', 'info', 'warn', 'error']),
  machineId: id.optional(),
  stepName: z.string().optional(),
  actionName: z.string().optional(),
  text: z.string(),
});
export const LogPageSchema = open({ entries: z.array(LogEntrySchema), nextSeq: z.number().int() });

export const InterruptionSchema = open({
  id,
  deploymentId: id,
  kind: z.enum(['manual-intervention', 'guided-failure', 'batch-approval']),
  stepName: z.string(),
  actionName: z.string().optional(),
  machineId: id.optional(),
  machineName: z.string().optional(),
  instructions: z.string().nullable(),
  batch: z.number().int().optional().describe('batch-approval: the batch it lets go, from 0'),
  targets: z
    .array(open({ machineId: id, machineName: z.string() }))
    .optional()
    .describe("batch-approval: that batch's targets"),
  expiresAt: time.optional().describe('batch-approval with a timeout: when the default answer is applied'),
  defaultResult: z.enum(['proceed', 'abort']).optional(),
  preventSelfApproval: z
    .boolean()
    .optional()
    .describe('true: the key that created the deployment may not answer it (403 self_approval)'),
  state: z.enum(['pending', 'submitted', 'cancelled']),
  allowedResults: z.array(z.string()),
  result: z.string().optional(),
  notes: z.string().optional(),
  submittedBy: z.string().optional(),
  submittedAt: maybeTime.optional(),
  createdAt: time,
});

/** What an API key may do: each role can do what the one before it can, and more (docs/api.md, "Roles"). */
export const API_KEY_ROLES = ['viewer', 'deployer', 'approver', 'admin'] as const;
export const ApiKeyRoleSchema = z.enum(API_KEY_ROLES);
/**
 * The permissions roles are made of, as the server checks them per route and GET /api/me lists them (the dashboard
 * shows only what the key may use).
 */
export const PERMISSIONS = [
  'read',
  'create-release',
  'deploy',
  'pause',
  'resume',
  'cancel',
  'retry',
  'rollback',
  'upload-packages',
  'approve',
  'manage-projects',
  'edit-process',
  'edit-variables',
  'manage-environments',
  'manage-machines',
  'manage-keys',
  'manage-lifecycles',
  'read-events',
  'manage-webhooks',
] as const;
export const PermissionSchema = z.enum(PERMISSIONS);
const scopeOf = (what: string) =>
  z.array(id).nullable().describe(`the ${what} the key is limited to; null: all of them`);
export const ApiKeySchema = open({
  id,
  name: z.string(),
  role: ApiKeyRoleSchema,
  environmentIds: scopeOf('environments'),
  projectIds: scopeOf('projects'),
  createdAt: time,
  revokedAt: maybeTime,
});
/** The key a request is made with (GET /api/me). */
export const MeSchema = open({
  id,
  name: z.string(),
  role: ApiKeyRoleSchema,
  environmentIds: scopeOf('environments'),
  projectIds: scopeOf('projects'),
  permissions: z.array(PermissionSchema).describe('what this key may do, within its environments and projects'),
});
export const ApiKeyCreatedSchema = ApiKeySchema.extend({
  key: z.string().describe('shown this once; only its hash is stored'),
});

export const AuditEventSchema = open({
  id: z.string().describe('increasing: a later event has a larger id (page with ?before=)'),
  at: time,
  actor: z
    .string()
    .describe('the API key\'s name; "registration:NAME" for an agent registering; "anonymous" or "invalid key"'),
  actorKeyId: id.nullable().describe("the API key's id, when the request carried a valid key"),
  action: z.string().describe('like deployment.create, project.variables.update, machine.revoke'),
  resourceType: z.string().describe('project, deployment, machine, environment, release, package, …'),
  resourceId: z.string().nullable(),
  outcome: z.enum(['ok', 'denied', 'failed']).describe('denied: refused (401, 403); failed: any other error'),
  status: z.number().int().describe('the HTTP status it was answered with'),
  summary: z.string().describe('short, from names, versions and codes only: never a secret value'),
});

export const HealthSchema = open({
  status: z.literal('ok'),
  database: z.literal('up'),
  version: z.string(),
  node: z.string(),
  agents: open({ online: z.number().int(), total: z.number().int() }),
  packageBytesSent: z.number(),
});
export const ReadySchema = open({
  status: z.literal('ready'),
  database: z.literal('up'),
  migrations: z.literal('applied'),
  node: z.string(),
});

export const LifecyclePhaseSchema = open({
  name: z.string(),
  environmentIds: z.array(id),
  minimumEnvironmentsBeforePromotion: z
    .number()
    .int()
    .describe("how many of the phase's environments must succeed before the next phase opens; 0 = all"),
  optional: z.boolean().describe('never blocks the phases after it: a release may skip it'),
});
export const LifecycleSchema = open({
  id,
  name: z.string(),
  phases: z.array(LifecyclePhaseSchema),
  createdAt: time,
  updatedAt: time,
});
export const ProgressionSchema = open({
  releaseId: id,
  lifecycle: open({ id, name: z.string() })
    .nullable()
    .describe("the channel's lifecycle, else the project's; null: every environment is allowed"),
  phases: z.array(
    open({
      name: z.string(),
      optional: z.boolean(),
      minimumEnvironmentsBeforePromotion: z.number().int(),
      complete: z.boolean().describe('at least the required number of its environments succeeded'),
      reachable: z.boolean().describe('every non-optional phase before it is complete'),
      environments: z.array(
        open({
          environmentId: id,
          environmentName: z.string(),
          lastDeployment: open({ id, status: DeploymentStateSchema, createdAt: time, finishedAt: maybeTime })
            .nullable()
            .describe("this release's newest deployment there"),
          allowed: z.boolean().describe('the release may be deployed there now'),
          reason: z.string().optional().describe('when not allowed: the phase that must succeed first'),
        }),
      ),
    }),
  ),
  allowedEnvironmentIds: z.array(id),
});

/** The events a webhook may subscribe to. */
export const WEBHOOK_EVENTS = [
  'deployment.started',
  'deployment.succeeded',
  'deployment.failed',
  'deployment.cancelled',
  'interruption.opened',
] as const;
export const WebhookEventSchema = z.enum(WEBHOOK_EVENTS);
export const WebhookSchema = open({
  id,
  url: z.string().describe('http(s) URL each delivery is POSTed to'),
  events: z.array(WebhookEventSchema),
  disabled: z.boolean().describe('a disabled webhook gets no new deliveries'),
  createdAt: time,
});
export const WEBHOOK_DELIVERY_STATES = ['pending', 'delivered', 'expired'] as const;
export const WebhookDeliverySchema = open({
  id: id.describe('also the X-Cuttle-Delivery header and the body\'s "id"'),
  webhookId: id,
  event: WebhookEventSchema,
  payload: z.record(z.string(), z.unknown()).describe('the JSON body sent: {"id","event","at","data"}'),
  status: z
    .enum(WEBHOOK_DELIVERY_STATES)
    .describe('pending: not accepted yet (retried with back-off); expired: no 2xx within 24 h'),
  attempts: z.number().int(),
  nextAttemptAt: maybeTime.describe('when pending: the next try'),
  lastStatusCode: z.number().int().nullable(),
  lastError: z.string().nullable(),
  createdAt: time,
  deliveredAt: maybeTime,
});

/** Every response schema by the name the OpenAPI document gives it (`#/components/schemas/<name>`). */
export const API_SCHEMAS = {
  ErrorBody: ErrorBodySchema,
  Environment: EnvironmentSchema,
  Machine: MachineSchema,
  RegistrationToken: RegistrationTokenSchema,
  Registration: RegistrationSchema,
  HealthCheck: HealthCheckSchema,
  Project: ProjectSchema,
  Channel: ChannelSchema,
  DeploymentProcess: DeploymentProcessSchema,
  Variables: VariablesSchema,
  Package: PackageSchema,
  Release: ReleaseSchema,
  Deployment: DeploymentSchema,
  DeploymentSummary: DeploymentSummarySchema,
  CancelAccepted: CancelAcceptedSchema,
  SteerAccepted: SteerAcceptedSchema,
  Preview: PreviewSchema,
  LogPage: LogPageSchema,
  Interruption: InterruptionSchema,
  ApiKey: ApiKeySchema,
  ApiKeyCreated: ApiKeyCreatedSchema,
  AuditEvent: AuditEventSchema,
  Me: MeSchema,
  Health: HealthSchema,
  Ready: ReadySchema,
  Lifecycle: LifecycleSchema,
  Progression: ProgressionSchema,
  Webhook: WebhookSchema,
  WebhookDelivery: WebhookDeliverySchema,
} as const;
export type ApiSchemaName = keyof typeof API_SCHEMAS;

export type ErrorBodyJson = z.infer<typeof ErrorBodySchema>;
export type RunState = z.infer<typeof RunStateSchema>;
export type DeploymentState = z.infer<typeof DeploymentStateSchema>;
export type Environment = z.infer<typeof EnvironmentSchema>;
export type Machine = z.infer<typeof MachineSchema>;
export type RegistrationToken = z.infer<typeof RegistrationTokenSchema>;
export type Registration = z.infer<typeof RegistrationSchema>;
export type HealthCheck = z.infer<typeof HealthCheckSchema>;
export type Project = z.infer<typeof ProjectSchema>;
export type Channel = z.infer<typeof ChannelSchema>;
export type DeploymentProcess = z.infer<typeof DeploymentProcessSchema>;
export type Variables = z.infer<typeof VariablesSchema>;
export type Package = z.infer<typeof PackageSchema>;
export type Release = z.infer<typeof ReleaseSchema>;
export type FailureKind = z.infer<typeof FailureKindSchema>;
export type TargetRun = z.infer<typeof TargetRunSchema>;
export type StepRun = z.infer<typeof StepRunSchema>;
export type Deployment = z.infer<typeof DeploymentSchema>;
export type DeploymentSummary = z.infer<typeof DeploymentSummarySchema>;
export type CancelAccepted = z.infer<typeof CancelAcceptedSchema>;
export type SteerAccepted = z.infer<typeof SteerAcceptedSchema>;
export type Preview = z.infer<typeof PreviewSchema>;
export type LogEntry = z.infer<typeof LogEntrySchema>;
export type LogPage = z.infer<typeof LogPageSchema>;
export type Interruption = z.infer<typeof InterruptionSchema>;
export type ApiKey = z.infer<typeof ApiKeySchema>;
export type ApiKeyCreated = z.infer<typeof ApiKeyCreatedSchema>;
export type AuditEvent = z.infer<typeof AuditEventSchema>;
export type ApiKeyRole = z.infer<typeof ApiKeyRoleSchema>;
export type Permission = z.infer<typeof PermissionSchema>;
export type Me = z.infer<typeof MeSchema>;
export type Health = z.infer<typeof HealthSchema>;
export type Ready = z.infer<typeof ReadySchema>;
export type LifecyclePhase = z.infer<typeof LifecyclePhaseSchema>;
export type Lifecycle = z.infer<typeof LifecycleSchema>;
export type Progression = z.infer<typeof ProgressionSchema>;
export type WebhookEvent = z.infer<typeof WebhookEventSchema>;
export type Webhook = z.infer<typeof WebhookSchema>;
export type WebhookDelivery = z.infer<typeof WebhookDeliverySchema>;
