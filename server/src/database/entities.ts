import { ApiKeyEntity } from '../auth/api-key.entity.js';
import { EnvironmentEntity } from '../environments/environment.entity.js';
import { MachineEntity } from '../machines/machine.entity.js';
import { RegistrationTokenEntity } from '../machines/registration-token.entity.js';
import { PackageEntity } from '../packages/package.entity.js';
import { ChannelEntity, ProjectEntity } from '../projects/project.entity.js';
import { ReleaseEntity } from '../releases/release.entity.js';

/**
 * Entities mapped by TypeORM. Deployments, target runs, leases and the log are reached with SQL through the
 * transaction's EntityManager (deployments/, leases/): their writes are the hot path and need exact locking.
 */
export const ENTITIES = [ApiKeyEntity, EnvironmentEntity, MachineEntity, RegistrationTokenEntity, ProjectEntity, ChannelEntity, PackageEntity, ReleaseEntity];
