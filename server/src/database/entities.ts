import { AuditEventEntity } from '../audit/audit-event.entity.js';
import { ApiKeyEntity } from '../auth/api-key.entity.js';
import { EnvironmentEntity } from '../environments/environment.entity.js';
import { LifecycleEntity } from '../lifecycles/lifecycle.entity.js';
import { MachineEntity } from '../machines/machine.entity.js';
import { RegistrationTokenEntity } from '../machines/registration-token.entity.js';
import { PackageEntity } from '../packages/package.entity.js';
import { ChannelEntity, ProjectEntity } from '../projects/project.entity.js';
import { ReleaseEntity } from '../releases/release.entity.js';

/**
 * Entities mapped by TypeORM. The deployment aggregate (deployments, steps, target runs, leases, interruptions, output
 * variables, the log) is reached with SQL through deployments/deployment.repository.ts alone: its writes are the hot
 * path and need exact locking, in the order that file's header gives.
 */
export const ENTITIES = [
  ApiKeyEntity,
  AuditEventEntity,
  EnvironmentEntity,
  MachineEntity,
  RegistrationTokenEntity,
  ProjectEntity,
  ChannelEntity,
  PackageEntity,
  ReleaseEntity,
  LifecycleEntity,
];
