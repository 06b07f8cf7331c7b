/**
 * What an agent is asked to run: a lease's offer, with the actions still pending on its target (the conditions may
 * have skipped some; a retry starts from the failed one), their packages, and every variable resolved for that
 * target (the release's scoped variables, system variables, output variables of earlier steps). Also stores the
 * output variables scripts set, which later offers carry.
 */
import { Injectable } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import { HEALTH_CHECK_ACTION, HEALTH_CHECK_DEFAULTS, type Step } from '#shared/process/index.js';
import type { AgentMessageOf, LeaseAction, LeaseOffer } from '#shared/protocol/index.js';
import { outputName, resolveScoped } from '#shared/variables/index.js';
import { DeploymentSecrets } from '../deployments/deployment-secrets.js';
import { DeploymentRepository, type OfferRow } from '../deployments/deployment.repository.js';
import type { LeaseContext, OutputVariableRow } from '../deployments/deployment.types.js';
import type { ReleaseEntity } from '../releases/release.entity.js';
import { ReleasesService } from '../releases/releases.service.js';
import { SecretBox } from '../secrets/secret-box.js';

export interface ReleaseFacts {
  process: ReleaseEntity['process'];
  packages: ReleaseEntity['packages'];
  version: string;
  variables: ReleaseEntity['variables'];
  defaultTimeoutSeconds: number | null;
}

@Injectable()
export class OffersService {
  private releases = new Map<string, ReleaseFacts>();

  constructor(
    private readonly repo: DeploymentRepository,
    private readonly releaseRows: ReleasesService,
    private readonly secrets: DeploymentSecrets,
    private readonly box: SecretBox,
  ) {}

  /**
   * Releases are immutable: what offers and prefetches need of one is read once per node, its sensitive values
   * decrypted (they are stored encrypted; agents get them in the clear, over mTLS, to substitute).
   */
  async release(releaseId: string, tx?: EntityManager): Promise<ReleaseFacts> {
    const hit = this.releases.get(releaseId);
    if (hit) return hit;
    const r = await this.releaseRows.get(releaseId, tx);
    const facts: ReleaseFacts = {
      process: r.process,
      packages: r.packages,
      version: r.version,
      variables: r.variables.map((v) => (v.sensitive ? { ...v, value: this.box.decrypt(v.value) } : v)),
      defaultTimeoutSeconds: r.defaultTimeoutSeconds,
    };
    if (this.releases.size > 1_000) this.releases.clear();
    this.releases.set(releaseId, facts);
    return facts;
  }

  /** Offers for many leases in a few queries (a wide window starts many targets at once); released leases are left out. */
  async build(leaseIds: string[]): Promise<LeaseOffer[]> {
    if (!leaseIds.length) return [];
    const rows = await this.repo.offerRows(leaseIds);
    if (!rows.length) return [];
    // Output variables of earlier steps, for every deployment concerned at once.
    const outputs = await this.repo.outputVariables([...new Set(rows.map((r) => r.deployment_id))]);
    const offers: LeaseOffer[] = [];
    for (const row of rows) {
      const offer = offerFrom(
        row,
        await this.release(row.release_id),
        outputs.filter((o) => o.deployment_id === row.deployment_id),
      );
      if (offer) offers.push(offer);
    }
    return offers;
  }

  /** A script set an output variable. The latest value per (step, action, machine, name) wins. */
  async storeOutput(ctx: LeaseContext, msg: AgentMessageOf<'lease.output'>): Promise<void> {
    if (msg.actionIndex >= ctx.actionNames.length) return;
    await this.repo.upsertOutputVariable({
      deployment_id: ctx.deploymentId,
      step_name: ctx.stepName,
      action_name: ctx.actionNames[msg.actionIndex],
      machine_id: ctx.machineId,
      machine_name: ctx.machineName,
      name: msg.name,
      value: msg.value,
      sensitive: msg.sensitive,
    });
    if (msg.sensitive) await this.secrets.add(ctx.deploymentId, msg.value);
  }
}

/**
 * What a target's actions are on its agent, by index: the step's actions, then its health check (a script with its
 * own timeout, and its retries `intervalSeconds` apart). A manual intervention or an email runs on no agent.
 */
function agentActions(step: Step, release: ReleaseFacts): Array<LeaseAction | null> {
  const list: Array<LeaseAction | null> = step.actions.map((a, index) =>
    a.type === 'manual-intervention' || a.type === 'email'
      ? null
      : {
          index,
          name: a.name,
          type: a.type,
          script: a.script,
          timeoutSeconds: a.timeoutSeconds ?? release.defaultTimeoutSeconds ?? undefined,
          retries: a.retries ?? 0,
          retryDelaySeconds: a.retryDelaySeconds ?? 0,
          package: a.type === 'package' ? release.packages.find((p) => p.packageId === a.packageId) : undefined,
          ...(a.type === 'package' && a.substituteInFiles?.length ? { substituteInFiles: a.substituteInFiles } : {}),
        },
  );
  if (step.healthCheck)
    list.push({
      index: step.actions.length,
      name: HEALTH_CHECK_ACTION,
      type: 'script',
      script: step.healthCheck.script,
      timeoutSeconds: step.healthCheck.timeoutSeconds ?? HEALTH_CHECK_DEFAULTS.timeoutSeconds,
      retries: step.healthCheck.retries ?? HEALTH_CHECK_DEFAULTS.retries,
      retryDelaySeconds: step.healthCheck.intervalSeconds ?? HEALTH_CHECK_DEFAULTS.intervalSeconds,
    });
  return list;
}

/**
 * The actions a lease carries: for a bake check, the health check alone; otherwise the target's pending actions in
 * order, up to the next manual intervention (the target waits for a person there, and takes a new lease after).
 */
export function leaseActions(
  step: Step,
  release: ReleaseFacts,
  targetActions: OfferRow['target_actions'],
  purpose: 'run' | 'check',
): LeaseAction[] {
  const all = agentActions(step, release);
  if (purpose === 'check') {
    const check = all[step.actions.length];
    return check ? [check] : [];
  }
  const out: LeaseAction[] = [];
  for (const [i, a] of all.entries()) {
    if (targetActions[i]?.state !== 'pending') continue;
    if (!a) break; // a manual intervention: the lease ends before it
    out.push(a);
  }
  return out;
}

function offerFrom(row: OfferRow, release: ReleaseFacts, outputs: OutputVariableRow[]): LeaseOffer | null {
  const step = release.process[row.step_index];
  const actions = leaseActions(step, release, row.target_actions, row.purpose ?? 'run');
  if (!actions.length) return null;

  const roles = row.machine_roles;
  const vars = new Map<string, { value: string; sensitive: boolean }>();
  for (const v of resolveScoped(release.variables, {
    environmentId: row.environment_id,
    roles,
    machineId: row.machine_id,
  }).values())
    vars.set(v.name, v);
  const system: Record<string, string> = {
    'Cuttle.Project.Name': row.project_name,
    'Cuttle.Project.Id': row.project_id,
    'Cuttle.Release.Number': release.version,
    'Cuttle.Release.Id': row.release_id,
    'Cuttle.Environment.Name': row.environment_name,
    'Cuttle.Environment.Id': row.environment_id,
    'Cuttle.Deployment.Id': row.deployment_id,
    'Cuttle.Machine.Name': row.machine_name,
    'Cuttle.Machine.Id': row.machine_id,
    'Cuttle.Machine.Roles': roles.join(','),
    'Cuttle.Step.Name': step.name,
  };
  for (const [name, value] of Object.entries(system)) vars.set(name, { value, sensitive: false });
  // Output variables of earlier steps: by machine name always, unqualified when this machine set them.
  for (const o of outputs) {
    vars.set(outputName(o.step_name, o.action_name, o.name, o.machine_name), {
      value: o.value,
      sensitive: o.sensitive,
    });
    if (o.machine_id === row.machine_id)
      vars.set(outputName(o.step_name, o.action_name, o.name), { value: o.value, sensitive: o.sensitive });
  }
  return {
    type: 'lease.offer',
    leaseId: row.id,
    deploymentId: row.deployment_id,
    targetRunId: row.target_run_id,
    stepName: step.name,
    machineName: row.machine_name,
    actions,
    env: {
      CUTTLE_PROJECT_NAME: row.project_name,
      CUTTLE_RELEASE_NUMBER: release.version,
      CUTTLE_ENVIRONMENT_NAME: row.environment_name,
      CUTTLE_DEPLOYMENT_ID: row.deployment_id,
      CUTTLE_MACHINE_NAME: row.machine_name,
      CUTTLE_STEP_NAME: step.name,
    },
    variables: [...vars].map(([name, v]) => ({ name, value: v.value, sensitive: v.sensitive })),
    keepReleases: row.keep_releases,
  };
}
