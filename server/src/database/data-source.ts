import type { DataSourceOptions } from 'typeorm';
import { ENTITIES } from './entities.js';
import { Initial1764086400000 } from './migrations/1764086400000-initial.js';
import { ProcessFeatures1764090000000 } from './migrations/1764090000000-process-features.js';
import { MachineHealth1764093600000 } from './migrations/1764093600000-machine-health.js';
import { LogHeads1764097200000 } from './migrations/1764097200000-log-heads.js';
import { OneAtATime1764100800000 } from './migrations/1764100800000-one-at-a-time.js';
import { FailureKind1764104400000 } from './migrations/1764104400000-failure-kind.js';
import { MachineNames1764108000000 } from './migrations/1764108000000-machine-names.js';
import { RolloutPolicy1764111600000 } from './migrations/1764111600000-rollout-policy.js';
import { DeploymentHistory1764115200000 } from './migrations/1764115200000-deployment-history.js';
import { KeyRoles1764118800000 } from './migrations/1764118800000-key-roles.js';
import { AuditEvents1764122400000 } from './migrations/1764122400000-audit-events.js';
import { Lifecycles1764126000000 } from './migrations/1764126000000-lifecycles.js';
import { SecretsAtRest1764129600000 } from './migrations/1764129600000-secrets-at-rest.js';
import { PackageVariables1764133200000 } from './migrations/1764133200000-package-variables.js';
import { DayTwo1764136800000 } from './migrations/1764136800000-day-two.js';
import { Webhooks1764140400000 } from './migrations/1764140400000-webhooks.js';

export const MIGRATIONS = [
  Initial1764086400000,
  ProcessFeatures1764090000000,
  MachineHealth1764093600000,
  LogHeads1764097200000,
  OneAtATime1764100800000,
  FailureKind1764104400000,
  MachineNames1764108000000,
  RolloutPolicy1764111600000,
  DeploymentHistory1764115200000,
  KeyRoles1764118800000,
  AuditEvents1764122400000,
  Lifecycles1764126000000,
  SecretsAtRest1764129600000,
  PackageVariables1764133200000,
  DayTwo1764136800000,
  Webhooks1764140400000,
];
export const POOL_SIZE = 10;
/**
 * The embedded database gets one connection. PGLiteSocketServer interleaves protocol messages of different
 * connections outside transactions (one connection's Parse can replace another's unnamed statement between its
 * Parse and Bind), and PGlite runs one statement at a time anyway, so a single connection costs no throughput.
 */
export const EMBEDDED_POOL_SIZE = 1;

/** Schema comes from migrations only (never `synchronize`); they run at boot, so a new database is ready at once. */
export function dataSourceOptions(url: string, migrationsRun = true, poolSize = POOL_SIZE): DataSourceOptions {
  return {
    type: 'postgres',
    url,
    entities: ENTITIES,
    migrations: MIGRATIONS,
    migrationsRun,
    migrationsTransactionMode: 'each',
    synchronize: false,
    logging: false,
    // A query inside a transaction that took another pool connection would wait forever on the embedded database
    // (one transaction at a time): time out instead, so that mistake surfaces as an error.
    extra: { max: poolSize, connectionTimeoutMillis: 15_000 },
  };
}
