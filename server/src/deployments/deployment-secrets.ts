import { Injectable } from '@nestjs/common';
import { SecretBox } from '../secrets/secret-box.js';
import { DeploymentRepository } from './deployment.repository.js';

/**
 * The values a deployment's log must never show: its release's sensitive variables and the sensitive output
 * variables its scripts set. Read once per deployment per node and kept (a release is immutable; outputs are added
 * here as they are stored), so that masking a burst of log lines costs no query. Held decrypted, in memory only.
 */
@Injectable()
export class DeploymentSecrets {
  private secrets = new Map<string, Set<string>>();

  constructor(
    private readonly repo: DeploymentRepository,
    private readonly box: SecretBox,
  ) {}

  async of(deploymentId: string): Promise<Set<string>> {
    const hit = this.secrets.get(deploymentId);
    if (hit) return hit;
    const variables = await this.repo.releaseVariablesOf(deploymentId);
    const outputs = await this.repo.sensitiveOutputValues(deploymentId);
    // Stored encrypted: the log shows what the script saw, the plain value (outputs come decrypted from the repository).
    const plain = variables.filter((v) => v.sensitive).map((v) => this.box.decrypt(v.value));
    const set = new Set<string>([...plain.filter(Boolean), ...outputs]);
    if (this.secrets.size > 1_000) this.secrets.clear();
    this.secrets.set(deploymentId, set);
    return set;
  }

  /** A script set a sensitive output variable: from now on it is masked too. */
  async add(deploymentId: string, value: string): Promise<void> {
    if (value) (await this.of(deploymentId)).add(value);
  }
}
