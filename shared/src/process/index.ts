/**
 * The deployment process model (steps and their actions) and its validation: one definition for the server's REST
 * API, the CLI and the dashboard. Vocabulary and execution rules: ../../../README.md and docs/architecture.md.
 */
import { z } from 'zod';
import { patternProblem, SUBSTITUTE_LIMITS } from '../packages/substitute-files.js';

export const STEP_CONDITIONS = ['success', 'failure', 'always'] as const;
export const START_TRIGGERS = ['afterPrevious', 'withPrevious'] as const;
export const ACTION_TYPES = ['script', 'package', 'manual-intervention', 'email'] as const;
/** Action types the server itself runs (in a step without target roles); the others run on agents. */
export const SERVER_ACTION_TYPES: readonly string[] = ['manual-intervention', 'email'];
/** An email address, or a `#{Variable}` reference that the deployment resolves to one. */
const EMAIL_RE = /^(?:[^\s@<>()",;:]+@[^\s@<>()",;:]+\.[^\s@<>()",;:]+|[^\s,;]*#\{[^}]+\}[^\s,;]*)$/;

/**
 * The largest count a window or failure budget may be: far past any real step (the product is built for ten
 * thousand targets), and well inside the database's integer columns, so a count is refused when the process is saved
 * rather than when a deployment is planned.
 */
export const MAX_STEP_COUNT = 100_000;
const COUNT_OR_PERCENT = `must be a positive integer or a percentage like "25%" (a count of at most ${MAX_STEP_COUNT})`;
const COUNT_OR_PERCENT_ZERO = `must be a non-negative integer or a percentage like "10%" (a count of at most ${MAX_STEP_COUNT})`;
const PERCENT_RE = /^(\d{1,3})%$/;

/** A window size or failure budget: a count, or a percentage of the step's targets. */
const countOrPercent = (min: 0 | 1, msg: string) =>
  z.union([z.number(), z.string()], { error: msg }).superRefine((v, ctx) => {
    if (typeof v === 'number') {
      if (!Number.isInteger(v) || v < min || v > MAX_STEP_COUNT) ctx.addIssue({ code: 'custom', message: msg });
      return;
    }
    const m = PERCENT_RE.exec(v);
    if (!m || Number(m[1]) > 100 || Number(m[1]) < min) ctx.addIssue({ code: 'custom', message: msg });
  });

const name = (what: string) =>
  z
    .string({ error: `must be a ${what} name (text)` })
    .trim()
    .min(1, `must not be empty`)
    .max(200, `must be at most 200 characters`);
const idList = z.array(z.string().min(1).max(100), { error: 'must be a list of ids' }).max(1000);

/** A machine label's name (`zone`, `rack`): what `spreadBy` names and `--labels zone=a` sets. */
export const LABEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** A machine label's value. */
export const LABEL_VALUE_RE = /^[A-Za-z0-9._-]{1,200}$/;
/** The most labels a machine may carry. */
export const MAX_LABELS = 50;

const seconds = (max: number, what: string) =>
  z
    .number({ error: 'must be a whole number of seconds' })
    .int('must be a whole number of seconds')
    .max(max, `must be at most ${max} (${what})`);

/**
 * A step's health check: a script run on each target after its actions succeed, and again at the end of a batch's
 * bake; the target succeeds only when it passes. `retries` more tries, `intervalSeconds` apart, before it fails.
 */
export const HealthCheckSchema = z
  .object({
    script: z
      .string({ error: 'must be bash text' })
      .max(1_000_000, 'must be at most 1,000,000 characters')
      .refine((v) => v.trim().length > 0, 'must not be empty'),
    timeoutSeconds: seconds(86_400, 'a day').positive('must be positive').optional(),
    retries: z
      .number({ error: 'must be a whole number' })
      .int('must be a whole number')
      .min(0, 'must not be negative')
      .max(100, 'must be at most 100')
      .optional(),
    intervalSeconds: seconds(3_600, 'an hour').min(0, 'must not be negative').optional(),
  })
  .strict();
export type HealthCheck = z.infer<typeof HealthCheckSchema>;
/** Defaults of a health check's optional fields. */
export const HEALTH_CHECK_DEFAULTS = { timeoutSeconds: 60, retries: 0, intervalSeconds: 5 } as const;
/** The name a step's health check has among a target's actions (in the deployment's view and its log). */
export const HEALTH_CHECK_ACTION = '(health check)';

/** The rollout policy's fields: they need targets, so a step that runs on the server refuses them. */
const ROLLOUT_FIELDS = [
  'batches',
  'bakeSeconds',
  'healthCheck',
  'approveEachBatch',
  'approvalTimeoutSeconds',
  'approvalDefault',
  'preventSelfApproval',
  'spreadBy',
  'skipUnavailable',
] as const;
export const APPROVAL_DEFAULTS = ['abort', 'proceed'] as const;

export const ActionSchema = z
  .object({
    name: name('action'),
    type: z.enum(ACTION_TYPES, { error: `must be one of ${ACTION_TYPES.join(', ')}` }),
    environmentIds: idList.optional(),
    excludedEnvironmentIds: idList.optional(),
    channelIds: idList.optional(),
    disabled: z.boolean({ error: 'must be true or false' }).optional(),
    timeoutSeconds: z
      .number()
      .int('must be a whole number of seconds')
      .positive('must be positive')
      .max(7 * 86400, 'must be at most 604800 (7 days)')
      .optional(),
    retries: z
      .number()
      .int('must be a whole number')
      .min(0, 'must not be negative')
      .max(100, 'must be at most 100')
      .optional(),
    retryDelaySeconds: z
      .number()
      .int('must be a whole number of seconds')
      .min(0, 'must not be negative')
      .max(86400, 'must be at most 86400 (a day)')
      .optional(),
    script: z.string({ error: 'must be bash text' }).max(1_000_000, 'must be at most 1,000,000 characters').optional(),
    packageId: z
      .string({ error: 'must be a package id' })
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/, 'must be letters, digits, ".", "_" or "-"')
      .optional(),
    instructions: z.string().max(20_000).optional(),
    /** A manual intervention the key that created the deployment may not answer (four eyes). */
    preventSelfApproval: z.boolean({ error: 'must be true or false' }).optional(),
    /** Package action: globs relative to the package root whose files get `#{Name}` replaced after unpacking. */
    substituteInFiles: z
      .array(
        z.string({ error: 'must be a glob like "config/*.conf"' }).superRefine((p, ctx) => {
          const problem = patternProblem(p);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        }),
        { error: 'must be a list of globs like ["config/*.conf"]' },
      )
      .max(SUBSTITUTE_LIMITS.patterns, `must have at most ${SUBSTITUTE_LIMITS.patterns} globs`)
      .optional(),
    /** An email action's recipients, subject and body; `#{Name}` references are substituted when it is sent. */
    to: z
      .array(z.string({ error: 'must be email addresses' }).trim().regex(EMAIL_RE, 'must be email addresses'), {
        error: 'must be a list of email addresses',
      })
      .min(1, 'must name at least one address')
      .max(100, 'must name at most 100 addresses')
      .optional(),
    subject: z.string({ error: 'must be text' }).max(1000, 'must be at most 1000 characters').optional(),
    body: z.string({ error: 'must be text' }).max(100_000, 'must be at most 100,000 characters').optional(),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (a.preventSelfApproval !== undefined && a.type !== 'manual-intervention')
      ctx.addIssue({ code: 'custom', path: ['preventSelfApproval'], message: 'applies to manual-intervention only' });
    if (a.substituteInFiles?.length && a.type !== 'package')
      ctx.addIssue({ code: 'custom', path: ['substituteInFiles'], message: 'applies to package actions only' });
    if (a.type === 'script' && !a.script?.trim())
      ctx.addIssue({ code: 'custom', path: ['script'], message: 'is required for a script action' });
    if (a.type === 'package' && !a.packageId)
      ctx.addIssue({ code: 'custom', path: ['packageId'], message: 'is required for a package action' });
    if (a.type === 'email') {
      if (!a.to) ctx.addIssue({ code: 'custom', path: ['to'], message: 'is required for an email action' });
      if (!a.subject?.trim())
        ctx.addIssue({ code: 'custom', path: ['subject'], message: 'is required for an email action' });
      if (a.body === undefined)
        ctx.addIssue({ code: 'custom', path: ['body'], message: 'is required for an email action' });
    } else
      for (const f of ['to', 'subject', 'body'] as const)
        if (a[f] !== undefined) ctx.addIssue({ code: 'custom', path: [f], message: 'applies to email actions only' });
  });
export type Action = z.infer<typeof ActionSchema>;

export const StepSchema = z
  .object({
    name: name('step'),
    targetRoles: z
      .array(z.string().trim().min(1, 'must not contain empty roles').max(100), { error: 'must be a list of roles' })
      .max(100)
      .optional(),
    windowSize: countOrPercent(1, COUNT_OR_PERCENT).optional(),
    maxFailures: countOrPercent(0, COUNT_OR_PERCENT_ZERO).optional(),
    batches: z
      .array(countOrPercent(1, COUNT_OR_PERCENT), { error: 'must be a list of batch sizes like [1, "10%", "100%"]' })
      .min(1, 'must have at least one batch size')
      .max(100, 'must have at most 100 batch sizes')
      .optional(),
    bakeSeconds: seconds(604_800, '7 days').min(0, 'must not be negative').optional(),
    healthCheck: HealthCheckSchema.optional(),
    approveEachBatch: z.boolean({ error: 'must be true or false' }).optional(),
    approvalTimeoutSeconds: seconds(604_800, '7 days').positive('must be positive').optional(),
    approvalDefault: z.enum(APPROVAL_DEFAULTS, { error: `must be one of ${APPROVAL_DEFAULTS.join(', ')}` }).optional(),
    /** The step's batch approvals: the key that created the deployment may not answer them. */
    preventSelfApproval: z.boolean({ error: 'must be true or false' }).optional(),
    spreadBy: z
      .string({ error: 'must be a label name' })
      .regex(LABEL_NAME_RE, 'must be a label name: letters, digits, ".", "_" or "-" (at most 63)')
      .optional(),
    skipUnavailable: z.boolean({ error: 'must be true or false' }).optional(),
    condition: z.enum(STEP_CONDITIONS, { error: `must be one of ${STEP_CONDITIONS.join(', ')}` }).optional(),
    startTrigger: z.enum(START_TRIGGERS, { error: `must be one of ${START_TRIGGERS.join(', ')}` }).optional(),
    actions: z
      .array(ActionSchema, { error: (i) => (i.code === 'invalid_type' ? 'must be a list of actions' : undefined) })
      .min(1, 'must have at least one action')
      .max(100, 'must have at most 100 actions'),
  })
  .strict()
  .superRefine((s, ctx) => {
    const seen = new Set<string>();
    s.actions.forEach((a, i) => {
      if (seen.has(a.name))
        ctx.addIssue({
          code: 'custom',
          path: ['actions', i, 'name'],
          message: `"${a.name}" is already used in this step`,
        });
      seen.add(a.name);
    });
    const onServer = !s.targetRoles?.length;
    s.actions.forEach((a, i) => {
      if (onServer && !SERVER_ACTION_TYPES.includes(a.type))
        ctx.addIssue({
          code: 'custom',
          path: ['actions', i, 'type'],
          message: 'needs the step to have targetRoles (only manual-intervention and email run on the server)',
        });
      // The server sends email once, for the step: a step with target roles runs its actions on each machine.
      if (!onServer && a.type === 'email')
        ctx.addIssue({
          code: 'custom',
          path: ['actions', i, 'type'],
          message: 'email is sent by the server: put it in a step without targetRoles',
        });
    });
    if (onServer)
      for (const f of ROLLOUT_FIELDS)
        if (s[f] !== undefined)
          ctx.addIssue({
            code: 'custom',
            path: [f],
            message: 'needs the step to have targetRoles (it rolls over targets)',
          });
    for (const f of ['approvalTimeoutSeconds', 'approvalDefault', 'preventSelfApproval'] as const)
      if (s[f] !== undefined && !s.approveEachBatch)
        ctx.addIssue({ code: 'custom', path: [f], message: 'needs approveEachBatch: true' });
  });
export type Step = z.infer<typeof StepSchema>;

export const ProcessStepsSchema = z
  .array(StepSchema, { error: (i) => (i.code === 'invalid_type' ? 'must be a list of steps' : undefined) })
  .max(200, 'must have at most 200 steps')
  .superRefine((steps, ctx) => {
    const seen = new Set<string>();
    steps.forEach((s, i) => {
      if (seen.has(s.name))
        ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `"${s.name}" is already used by another step` });
      seen.add(s.name);
    });
  });

/** `["steps", 1, "windowSize"]` → `steps[1].windowSize`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

export function zodMessages(error: z.ZodError, prefix: PropertyKey[] = []): string[] {
  return error.issues.map((i) => {
    const path = formatPath([...prefix, ...i.path]);
    if (i.code === 'unrecognized_keys')
      return `${path ? path + ': ' : ''}unknown field(s) ${i.keys.map((k) => `"${k}"`).join(', ')}`;
    return `${path || '(body)'} ${i.message}`;
  });
}

export type ValidationResult<T> = { ok: true; value: T } | { ok: false; messages: string[] };

/** Validates the `steps` of a deployment process; messages name the field, like `steps[1].windowSize must ...`. */
export function validateSteps(steps: unknown): ValidationResult<Step[]> {
  const r = ProcessStepsSchema.safeParse(steps);
  return r.success ? { ok: true, value: r.data } : { ok: false, messages: zodMessages(r.error, ['steps']) };
}

/** How many targets may be in flight: a count, a percentage of the step's targets (rounded down, at least 1), or all. */
export function resolveWindow(windowSize: number | string | undefined, targetCount: number): number {
  if (targetCount <= 0) return 0;
  if (windowSize === undefined) return targetCount;
  if (typeof windowSize === 'number') return Math.min(windowSize, targetCount);
  const pct = Number(PERCENT_RE.exec(windowSize)?.[1] ?? 100);
  return Math.min(targetCount, Math.max(1, Math.floor((targetCount * pct) / 100)));
}

/**
 * The sizes of a step's batches over `targetCount` targets: each entry a count or a percentage (rounded up, at least
 * 1); the last entry repeats until every target is in a batch, and the last batch takes what is left (Ansible's
 * `serial` list). Without `batches`, one batch of every target.
 */
export function resolveBatches(batches: Array<number | string> | undefined, targetCount: number): number[] {
  if (targetCount <= 0) return [];
  if (!batches?.length) return [targetCount];
  const size = (b: number | string) =>
    typeof b === 'number' ? b : Math.max(1, Math.ceil((targetCount * Number(PERCENT_RE.exec(b)?.[1] ?? 100)) / 100));
  const out: number[] = [];
  let left = targetCount;
  for (let i = 0; left > 0; i++) {
    const n = Math.min(left, size(batches[Math.min(i, batches.length - 1)]));
    out.push(n);
    left -= n;
  }
  return out;
}

/** How many targets may fail before the step fails: a count or a percentage (rounded down); default 0. */
export function resolveMaxFailures(maxFailures: number | string | undefined, targetCount: number): number {
  if (maxFailures === undefined) return 0;
  if (typeof maxFailures === 'number') return maxFailures;
  const pct = Number(PERCENT_RE.exec(maxFailures)?.[1] ?? 0);
  return Math.floor((targetCount * pct) / 100);
}
