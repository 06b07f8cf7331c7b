import { Inject, Injectable, type BeforeApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { DomainError } from '../common/errors.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { MachineEvents, MachinesService } from '../machines/machines.service.js';
import { ProjectsService } from '../projects/projects.service.js';
import { ReleasesService } from '../releases/releases.service.js';
import { DeploymentRepository } from './deployment.repository.js';
import { DeploymentsService } from './deployments.service.js';

/**
 * Target triggers (`autoDeployNewMachines`): a machine that arrives in an environment (its agent connects for the
 * first time after registering, it is enabled, or it is given the environment) gets, for each project with the trigger on, the environment's last successful release of
 * the project, as a deployment limited to that machine (`trigger: new-machine`), when a step of that release targets
 * one of the machine's roles. It queues behind what runs there (one deployment at a time per project and
 * environment still holds). What could not be deployed is recorded on the machine (`lastTriggerError`) and logged.
 *
 * The node that saw the arrival (the first hello, or the request that made it) acts on it; a second arrival while the trigger's
 * deployment has not ended makes none (DeploymentsService.deployToNewMachine checks under the queue lock).
 */
@Injectable()
export class TargetTriggers implements OnModuleInit, BeforeApplicationShutdown {
  private readonly pending = new Set<Promise<void>>();
  private readonly logger: Logger;

  constructor(
    private readonly events: MachineEvents,
    private readonly machines: MachinesService,
    private readonly projects: ProjectsService,
    private readonly releases: ReleasesService,
    private readonly repo: DeploymentRepository,
    private readonly deployments: DeploymentsService,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.logger = logger.child({ context: 'triggers' });
  }

  private readonly onArrived = (machineId: string, environmentIds: string[], how: string) => {
    const p: Promise<void> = this.arrived(machineId, environmentIds, how)
      .catch((e: Error) => {
        this.logger.error('target trigger failed', { machineId, error: e.message, stack: e.stack });
      })
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  };

  onModuleInit() {
    this.events.on('arrived', this.onArrived);
  }

  async beforeApplicationShutdown() {
    this.events.off('arrived', this.onArrived);
    await Promise.all(this.pending);
  }

  /** Deploys to a machine that arrived in these environments what the triggers of projects ask for. */
  async arrived(machineId: string, environmentIds: string[], how: string): Promise<void> {
    const projects = await this.projects.withAutoDeploy();
    if (!projects.length) return;
    const machine = await this.machines.get(machineId);
    if (machine.disabled) return;
    const errors: string[] = [];
    let acted = false;
    for (const project of projects)
      for (const environmentId of environmentIds) {
        const releaseId = await this.repo.lastSuccessfulRelease(project.id, environmentId);
        if (!releaseId) continue;
        const release = await this.releases.get(releaseId);
        const uses = release.process.some((s) => (s.targetRoles ?? []).some((r) => machine.roles.includes(r)));
        if (!uses) continue;
        acted = true;
        try {
          const d = await this.deployments.deployToNewMachine({
            machineId,
            projectId: project.id,
            environmentId,
            releaseId,
            reason: how,
          });
          if (d)
            this.logger.info('target trigger deployed to a new machine', {
              machine: machine.name,
              project: project.name,
              release: release.version,
              deploymentId: d.id,
            });
        } catch (e) {
          if (!(e instanceof DomainError)) throw e;
          errors.push(`${project.name} release ${release.version}: ${e.message}`);
          this.logger.warn('target trigger could not deploy to a new machine', {
            machine: machine.name,
            project: project.name,
            release: release.version,
            error: e.message,
          });
        }
      }
    if (acted) await this.machines.recordTrigger(machineId, errors.length ? errors.join('; ') : null);
  }
}
