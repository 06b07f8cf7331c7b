/**
 * Server configuration: read from the environment once at boot and validated, so a bad value stops the server
 * with a message naming the variable instead of failing later in some corner.
 */
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { z } from 'zod';
import { CUTTLE_VERSION } from '#shared/version.js';
import { parseKey } from '../secrets/secret-box.js';

const port = (name: string, dflt: number) =>
  z.coerce
    .number({ error: `${name} must be a TCP port number` })
    .int(`${name} must be a whole number`)
    .min(1, `${name} must be between 1 and 65535`)
    .max(65535, `${name} must be between 1 and 65535`)
    .default(dflt);
const seconds = (name: string, dflt: number, min = 1) =>
  z.coerce
    .number({ error: `${name} must be a number of seconds` })
    .min(min, `${name} must be at least ${min}`)
    .default(dflt);

const EnvSchema = z
  .object({
    CUTTLE_HOME: z.string().min(1).default('./.cuttle'),
    CUTTLE_HOST: z.string().min(1).default('127.0.0.1'),
    CUTTLE_PORT: port('CUTTLE_PORT', 8443),
    CUTTLE_AGENT_PORT: port('CUTTLE_AGENT_PORT', 10943),
    DATABASE_URL: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'DATABASE_URL must be a postgres:// or postgresql:// URL')
      .optional()
      .or(z.literal('').transform(() => undefined)),
    CUTTLE_ADMIN_API_KEY: z.string().min(16, 'CUTTLE_ADMIN_API_KEY must be at least 16 characters').optional(),
    /** Host names and IPs (comma separated) put into the server certificate besides localhost and this host's name. */
    CUTTLE_PUBLIC_HOSTS: z.string().default(''),
    /** The URL agents are told to connect to; default: the host the agent registered through, on CUTTLE_AGENT_PORT. */
    CUTTLE_AGENT_URL: z
      .url({ error: 'CUTTLE_AGENT_URL must be a URL like https://deploy.example.com:10943' })
      .optional(),
    CUTTLE_LEASE_TTL_SECONDS: seconds('CUTTLE_LEASE_TTL_SECONDS', 30, 3),
    CUTTLE_MAX_PACKAGE_MB: z.coerce
      .number({ error: 'CUTTLE_MAX_PACKAGE_MB must be a number' })
      .positive('CUTTLE_MAX_PACKAGE_MB must be positive')
      .default(1024),
    /** What a package may unpack to (the sum of its files): refused at upload past it, and agents stop unpacking there. */
    CUTTLE_MAX_UNPACKED_MB: z.coerce
      .number({ error: 'CUTTLE_MAX_UNPACKED_MB must be a number' })
      .positive('CUTTLE_MAX_UNPACKED_MB must be positive')
      .default(4096),
    CUTTLE_LOG_LEVEL: z
      .enum(['error', 'warn', 'info', 'debug'], { error: 'CUTTLE_LOG_LEVEL must be one of error, warn, info, debug' })
      .default('info'),
    CUTTLE_LOG_FORMAT: z.enum(['json', 'pretty'], { error: 'CUTTLE_LOG_FORMAT must be json or pretty' }).optional(),
    CUTTLE_NODE_ID: z.string().max(100).optional(),
    CUTTLE_OWNERSHIP_TTL_SECONDS: seconds('CUTTLE_OWNERSHIP_TTL_SECONDS', 15, 2),
    CUTTLE_HEALTH_CHECK_INTERVAL_SECONDS: seconds('CUTTLE_HEALTH_CHECK_INTERVAL_SECONDS', 300, 1),
    /** The key of sensitive values at rest; unset: `<CUTTLE_HOME>/secrets.key` (made on first start). */
    CUTTLE_SECRETS_KEY: z
      .string()
      .optional()
      .transform((s, ctx) => {
        if (s === undefined || s === '') return undefined;
        const key = parseKey(s);
        if (!key)
          ctx.addIssue({
            code: 'custom',
            message: 'CUTTLE_SECRETS_KEY must be 32 bytes written as 64 hex characters or as base64',
          });
        return key ?? undefined;
      }),
    /** Deployments (and their logs) and audit events older than this many days are deleted; 0 keeps everything. */
    CUTTLE_RETENTION_DAYS: z.coerce
      .number({ error: 'CUTTLE_RETENTION_DAYS must be a number of days' })
      .min(0, 'CUTTLE_RETENTION_DAYS must not be negative (0 keeps everything)')
      .max(36_500, 'CUTTLE_RETENTION_DAYS must be at most 36500')
      .default(90),
    CUTTLE_RETENTION_INTERVAL_SECONDS: seconds('CUTTLE_RETENTION_INTERVAL_SECONDS', 3600, 10),
    CUTTLE_MIN_FREE_DISK_MB: z.coerce
      .number({ error: 'CUTTLE_MIN_FREE_DISK_MB must be a number' })
      .min(0, 'CUTTLE_MIN_FREE_DISK_MB must not be negative')
      .default(100),
    /** Where email actions are sent: smtp:// or smtps:// (user and password in the URL); unset: they fail. */
    CUTTLE_SMTP_URL: z
      .string()
      .regex(/^smtps?:\/\//, 'CUTTLE_SMTP_URL must be an smtp:// or smtps:// URL')
      .optional()
      .or(z.literal('').transform(() => undefined)),
    /** The sender of email actions. */
    CUTTLE_SMTP_FROM: z.string().min(3).default('cuttle@localhost'),
    /** The first retry delay of a webhook delivery; it doubles on each failure up to an hour (tests shorten it). */
    CUTTLE_WEBHOOK_RETRY_BASE_MS: z.coerce
      .number({ error: 'CUTTLE_WEBHOOK_RETRY_BASE_MS must be a number of milliseconds' })
      .int('CUTTLE_WEBHOOK_RETRY_BASE_MS must be a whole number')
      .min(10, 'CUTTLE_WEBHOOK_RETRY_BASE_MS must be at least 10')
      .max(3_600_000, 'CUTTLE_WEBHOOK_RETRY_BASE_MS must be at most 3600000')
      .default(5000),
  })
  .refine((e) => e.CUTTLE_PORT !== e.CUTTLE_AGENT_PORT, {
    message: 'CUTTLE_PORT and CUTTLE_AGENT_PORT must differ',
    path: ['CUTTLE_AGENT_PORT'],
  });

export interface CuttleConfig {
  home: string;
  host: string;
  port: number;
  agentPort: number;
  databaseUrl?: string;
  adminApiKey?: string;
  publicHosts: string[];
  agentUrl?: string;
  leaseTtlMs: number;
  heartbeatMs: number;
  maxPackageBytes: number;
  maxUnpackedBytes: number;
  logLevel: 'error' | 'warn' | 'info' | 'debug';
  logFormat: 'json' | 'pretty';
  nodeId: string;
  /** A node that stops renewing its hold on a deployment for this long loses it to another node. */
  ownershipTtlMs: number;
  healthCheckIntervalMs: number;
  minFreeDiskBytes: number;
  /** Retention age in days (0: keep everything) and how often the sweep runs. */
  retentionDays: number;
  retentionIntervalMs: number;
  /** CUTTLE_SECRETS_KEY, decoded; unset: the key file in `home` (secrets/secrets-key.ts). */
  secretsKey?: Buffer;
  smtpUrl?: string;
  smtpFrom: string;
  webhookRetryBaseMs: number;
  version: string;
}

export class ConfigError extends Error {}

/** Variables whose value a message never repeats (it would end up in a log). */
const SECRET_VARS = new Set(['CUTTLE_SECRETS_KEY', 'CUTTLE_ADMIN_API_KEY', 'CUTTLE_SMTP_URL']);

export { CUTTLE_VERSION };

export function loadConfig(env: NodeJS.ProcessEnv = process.env): CuttleConfig {
  const r = EnvSchema.safeParse(env);
  if (!r.success) {
    const lines = r.error.issues.map(
      (i) =>
        `  - ${i.message}${i.path.length && !SECRET_VARS.has(String(i.path[0])) ? ` (got ${JSON.stringify(env[String(i.path[0])])})` : ''}`,
    );
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = r.data;
  const leaseTtlMs = Math.round(e.CUTTLE_LEASE_TTL_SECONDS * 1000);
  return {
    home: resolve(e.CUTTLE_HOME),
    host: e.CUTTLE_HOST,
    port: e.CUTTLE_PORT,
    agentPort: e.CUTTLE_AGENT_PORT,
    databaseUrl: e.DATABASE_URL,
    adminApiKey: e.CUTTLE_ADMIN_API_KEY,
    publicHosts: e.CUTTLE_PUBLIC_HOSTS.split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    agentUrl: e.CUTTLE_AGENT_URL,
    leaseTtlMs,
    // A third of the TTL: two heartbeats may be lost before a lease expires.
    heartbeatMs: Math.max(1000, Math.floor(leaseTtlMs / 3)),
    maxPackageBytes: Math.floor(e.CUTTLE_MAX_PACKAGE_MB * 1024 * 1024),
    maxUnpackedBytes: Math.floor(e.CUTTLE_MAX_UNPACKED_MB * 1024 * 1024),
    logLevel: e.CUTTLE_LOG_LEVEL,
    logFormat: e.CUTTLE_LOG_FORMAT ?? (process.stdout.isTTY ? 'pretty' : 'json'),
    // Stable across restarts of the same service (host and port), so a restarted node takes its deployments back at
    // once instead of waiting for its old ownership to lapse. Several nodes on one host differ by port.
    nodeId: e.CUTTLE_NODE_ID ?? `${hostname()}:${e.CUTTLE_PORT}`,
    ownershipTtlMs: Math.round(e.CUTTLE_OWNERSHIP_TTL_SECONDS * 1000),
    healthCheckIntervalMs: Math.round(e.CUTTLE_HEALTH_CHECK_INTERVAL_SECONDS * 1000),
    minFreeDiskBytes: Math.round(e.CUTTLE_MIN_FREE_DISK_MB * 1024 * 1024),
    secretsKey: e.CUTTLE_SECRETS_KEY,
    smtpUrl: e.CUTTLE_SMTP_URL,
    smtpFrom: e.CUTTLE_SMTP_FROM,
    webhookRetryBaseMs: e.CUTTLE_WEBHOOK_RETRY_BASE_MS,
    retentionDays: e.CUTTLE_RETENTION_DAYS,
    retentionIntervalMs: Math.round(e.CUTTLE_RETENTION_INTERVAL_SECONDS * 1000),
    version: CUTTLE_VERSION,
  };
}

export const CONFIG = Symbol('CuttleConfig');
