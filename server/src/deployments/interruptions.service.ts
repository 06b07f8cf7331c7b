/**
 * Interruptions: questions a deployment waits on. A manual intervention (proceed / abort) is an action: on the
 * server in a step without target roles, or per target inside a rolling step (the target holds its place in the
 * window meanwhile); a guided failure (retry / skip / abort) is raised for one failed target when the deployment runs
 * with guided failure; a batch approval (proceed / abort) lets a step's next batch go, and may have a timeout whose
 * default answer is then applied and recorded as such. A manual intervention or guided failure belongs to one target
 * run: an answer never applies to another target. Submitting twice is a conflict. Opening one (in the caller's
 * transaction) turns the deployment to `waiting`; the last answer turns it back to `executing`. A manual
 * intervention or a step's batch approvals with `preventSelfApproval` refuse an answer from the key that created the
 * deployment (four eyes; the timeout's default answer is nobody's).
 */
import { Injectable } from '@nestjs/common';
import type { Interruption } from '#shared/api/types.js';
import { DomainError, invalid, notFound } from '../common/errors.js';
import { iso } from '../database/sql.js';
import type { EntityManager } from 'typeorm';
import type { ReleaseEntity } from '../releases/release.entity.js';
import { isUuid } from '../common/http.js';
import { MachinesService } from '../machines/machines.service.js';
import { DeploymentEvents } from './deployment-events.js';
import { DeploymentLogService } from './deployment-log.service.js';
import { DeploymentRepository } from './deployment.repository.js';
import type {
  DeploymentRow,
  InterruptionKind,
  InterruptionRow,
  LogEntryInput,
  TargetAction,
  TargetRunRow,
} from './deployment.types.js';
import type { SubmitInterruptionDto } from './dto/submit-interruption.dto.js';
import type { Step } from '#shared/process/index.js';
import type { KeyScope } from '../auth/scope.js';
import { WebhooksService } from '../webhooks/webhooks.service.js';

export const RESULTS = {
  'manual-intervention': ['proceed', 'abort'],
  'guided-failure': ['retry', 'skip', 'abort'],
  'batch-approval': ['proceed', 'abort'],
} as const satisfies Record<InterruptionKind, readonly string[]>;
const STATES = ['pending', 'submitted', 'cancelled'];

/**
 * Whether the key that created the deployment may not answer this interruption: a manual intervention whose action
 * says `preventSelfApproval`, or a batch approval of a step that does. Guided failures are not approvals.
 */
function preventsSelfApproval(step: Step, intr: Pick<InterruptionRow, 'kind' | 'action_index'>): boolean {
  if (intr.kind === 'batch-approval') return !!step.preventSelfApproval;
  if (intr.kind === 'manual-intervention') return !!step.actions[intr.action_index]?.preventSelfApproval;
  return false;
}

@Injectable()
export class InterruptionsService {
  constructor(
    private readonly repo: DeploymentRepository,
    private readonly log: DeploymentLogService,
    private readonly events: DeploymentEvents,
    private readonly machines: MachinesService,
    private readonly webhooks: WebhooksService,
  ) {}

  /**
   * Opens a manual intervention for a target run whose next pending action is one, in the caller's transaction
   * (which holds the deployment's lock): a server target run, or a machine's inside a rolling step (then the
   * interruption names the machine). Returns its id, or null when the next pending action is not a manual
   * intervention (or none is left).
   */
  async openManualIntervention(
    tx: EntityManager,
    deploymentId: string,
    run: TargetRunRow,
    process: ReleaseEntity['process'],
  ): Promise<string | null> {
    const index = run.actions.findIndex((a) => a.state === 'pending');
    if (index < 0 || run.actions[index].type !== 'manual-intervention') return null;
    const action = process[run.step_index].actions[index];
    const id = await this.repo.insertInterruption(tx, {
      deploymentId,
      kind: 'manual-intervention',
      stepIndex: run.step_index,
      actionIndex: index,
      targetRunId: run.id,
      machineId: run.machine_id,
      instructions:
        action.instructions ?? `Approve ${action.name}${run.machine_id ? ` on ${run.machine_name}` : ''} to continue`,
    });
    await this.repo.setTargetActions(
      tx,
      run.id,
      run.actions.map((a, i) => (i === index ? { ...a, state: 'running' as const } : a)),
    );
    await this.repo.markWaiting(tx, deploymentId);
    await this.webhooks.enqueueInterruption(tx, id);
    return id;
  }

  /**
   * Opens a guided failure for a failed target run (the caller keeps it in flight, holding its place in the window),
   * in the caller's transaction; returns its id.
   */
  async openGuidedFailure(
    tx: EntityManager,
    p: {
      deploymentId: string;
      run: TargetRunRow;
      stepName: string;
      failedAt: number;
      actionName?: string;
      error: string | null;
    },
  ): Promise<string> {
    const id = await this.repo.insertInterruption(tx, {
      deploymentId: p.deploymentId,
      kind: 'guided-failure',
      stepIndex: p.run.step_index,
      actionIndex: p.failedAt,
      targetRunId: p.run.id,
      machineId: p.run.machine_id,
      instructions: `${p.stepName} failed on ${p.run.machine_name}${p.error ? `: ${p.error}` : ''}. Retry it from action ${p.actionName ?? p.failedAt + 1}, skip this target, or abort the step.`,
    });
    await this.repo.markWaiting(tx, p.deploymentId);
    await this.webhooks.enqueueInterruption(tx, id);
    return id;
  }

  /**
   * Asks a person to let a step's next batch go (the step waits at its approval gate), in the caller's transaction;
   * returns its id. With a timeout, the default answer is applied when it runs out (`applyExpiredApprovals`).
   */
  async openBatchApproval(
    tx: EntityManager,
    p: {
      deploymentId: string;
      stepIndex: number;
      stepName: string;
      batch: number;
      batchCount: number;
      machineNames: string[];
      timeoutSeconds?: number;
      defaultResult: 'proceed' | 'abort';
    },
  ): Promise<string> {
    const names = p.machineNames.length ? p.machineNames.join(', ') : 'no targets left';
    const timeout = p.timeoutSeconds
      ? ` Without an answer within ${p.timeoutSeconds} s, ${p.defaultResult} is applied.`
      : '';
    const id = await this.repo.insertInterruption(tx, {
      deploymentId: p.deploymentId,
      kind: 'batch-approval',
      stepIndex: p.stepIndex,
      actionIndex: 0,
      targetRunId: null,
      machineId: null,
      instructions: `Let batch ${p.batch + 1} of ${p.batchCount} of ${p.stepName} go (${names})?${timeout}`,
      batch: p.batch,
      expiresInSeconds: p.timeoutSeconds,
      defaultResult: p.timeoutSeconds ? p.defaultResult : undefined,
    });
    await this.repo.markWaiting(tx, p.deploymentId);
    await this.webhooks.enqueueInterruption(tx, id);
    return id;
  }

  /**
   * Applies the default answer of the deployment's batch approvals whose time ran out, recorded as given by
   * `timeout`; in the caller's transaction, which holds the deployment's lock (level 1; the approvals are level 2).
   * Returns the log lines to append.
   */
  async applyExpiredApprovals(
    tx: EntityManager,
    dep: DeploymentRow,
    process: ReleaseEntity['process'],
  ): Promise<LogEntryInput[]> {
    const lines: LogEntryInput[] = [];
    for (const intr of await this.repo.lockExpiredApprovals(tx, dep.id)) {
      const result = intr.default_result ?? 'abort';
      const notes = 'no answer in time: the default answer was applied';
      await this.repo.answerInterruption(tx, intr.id, { result, notes, by: 'timeout' });
      await this.applyBatchAnswer(tx, dep.id, intr, result);
      lines.push({
        level: result === 'abort' ? 'warn' : 'info',
        stepName: process[intr.step_index].name,
        text: `Approval of batch ${(intr.batch ?? 0) + 1} of ${process[intr.step_index].name}: ${result} by timeout (${notes})`,
      });
    }
    if (lines.length) await this.repo.resumeIfNoneWaiting(tx, dep.id);
    return lines;
  }

  /** Proceed lets the batch go (the step leaves its approval gate); abort stops the step's roll. */
  private async applyBatchAnswer(tx: EntityManager, deploymentId: string, intr: InterruptionRow, result: string) {
    if (result === 'proceed')
      await this.repo.setStepGate(tx, deploymentId, intr.step_index, {
        currentBatch: intr.batch ?? 0,
        gate: null,
        gateUntil: null,
      });
    else await this.repo.abortStep(tx, deploymentId, intr.step_index);
  }

  private async dto(rows: InterruptionRow[]): Promise<Interruption[]> {
    const processes = new Map<string, ReleaseEntity['process']>();
    for (const r of rows)
      if (!processes.has(r.deployment_id))
        processes.set(r.deployment_id, (await this.repo.processOf(r.deployment_id))!);
    const names = await this.machines.namesOf([
      ...new Set(rows.map((r) => r.machine_id).filter((m): m is string => !!m)),
    ]);
    const approvals = rows.filter((r) => r.kind === 'batch-approval');
    const batchTargets = approvals.length ? await this.repo.batchTargets(approvals) : new Map();
    return rows.map((r) => {
      const step = processes.get(r.deployment_id)![r.step_index];
      const approval = r.kind === 'batch-approval';
      return {
        id: r.id,
        deploymentId: r.deployment_id,
        kind: r.kind,
        stepName: step.name,
        ...(approval ? {} : { actionName: step.actions[r.action_index]?.name }),
        ...(preventsSelfApproval(step, r) ? { preventSelfApproval: true } : {}),
        ...(r.machine_id ? { machineId: r.machine_id, machineName: names.get(r.machine_id) } : {}),
        instructions: r.instructions,
        ...(approval
          ? {
              batch: r.batch ?? 0,
              targets: batchTargets.get(r.id) ?? [],
              ...(r.expires_at ? { expiresAt: iso(r.expires_at)! } : {}),
              ...(r.default_result ? { defaultResult: r.default_result } : {}),
            }
          : {}),
        state: r.state,
        allowedResults: [...RESULTS[r.kind]],
        ...(r.result ? { result: r.result } : {}),
        ...(r.notes ? { notes: r.notes } : {}),
        ...(r.submitted_by ? { submittedBy: r.submitted_by, submittedAt: iso(r.submitted_at) } : {}),
        createdAt: iso(r.created_at)!,
      };
    });
  }

  /** Interruptions by deployment and state; with a key's scope, only those of its environments and projects. */
  async list(q: { deploymentId?: string; state?: string }, scope?: KeyScope) {
    if (q.deploymentId && !isUuid(q.deploymentId)) throw invalid('deploymentId must be a deployment id');
    if (q.state && !STATES.includes(q.state)) throw invalid(`state must be one of ${STATES.join(', ')}`);
    return this.dto(
      await this.repo.listInterruptions({
        ...q,
        environmentIds: scope?.environmentIds,
        projectIds: scope?.projectIds,
      }),
    );
  }

  async get(id: string) {
    const row = await this.repo.findInterruption(id);
    if (!row) throw notFound(`interruption ${id} not found`);
    return (await this.dto([row]))[0];
  }

  /** Answers an interruption as `by` (an API key, or its name alone where no key is known). */
  async submit(id: string, dto: SubmitInterruptionDto, by: { id: string; name: string } | string) {
    const submitter = typeof by === 'string' ? by : by.name;
    const pre = await this.repo.findInterruption(id);
    if (!pre) throw notFound(`interruption ${id} not found`);
    const allowed = RESULTS[pre.kind] as readonly string[];
    if (!allowed.includes(dto.result)) throw invalid(`result must be one of ${allowed.join(', ')} for a ${pre.kind}`);
    const process = (await this.repo.processOf(pre.deployment_id))!;
    await this.repo.transaction(async (tx) => {
      const dep = (await this.repo.lockDeployment(tx, pre.deployment_id))!;
      const intr = await this.repo.lockInterruption(tx, id);
      if (intr.state !== 'pending')
        throw new DomainError(
          'interruption_closed',
          intr.state === 'cancelled'
            ? `interruption ${id} was closed when the deployment was cancelled`
            : `interruption ${id} was already answered (${intr.result} by ${intr.submitted_by})`,
        );
      if (
        typeof by !== 'string' &&
        dep.created_by_key_id === by.id &&
        preventsSelfApproval(process[pre.step_index], pre)
      )
        throw new DomainError(
          'self_approval',
          `key '${by.name}' created deployment ${dep.id} and may not answer this ${pre.kind === 'batch-approval' ? 'batch approval' : 'manual intervention'}: it prevents self-approval, another key must answer`,
        );
      await this.repo.answerInterruption(tx, id, { result: dto.result, notes: dto.notes ?? null, by: submitter });
      const step = process[intr.step_index];
      const who = `${dto.result} by ${submitter}${dto.notes ? `: ${dto.notes}` : ''}`;
      if (intr.kind === 'batch-approval' || !intr.target_run_id) {
        await this.applyBatchAnswer(tx, dep.id, intr, dto.result);
        await this.repo.resumeIfNoneWaiting(tx, dep.id);
        await this.log.append(tx, dep.id, [
          {
            level: dto.result === 'abort' ? 'warn' : 'info',
            stepName: step.name,
            text: `Approval of batch ${(intr.batch ?? 0) + 1} of ${step.name}: ${who}`,
          },
        ]);
        return;
      }
      const run = await this.repo.lockTargetRun(tx, intr.target_run_id);
      const action = step.actions[intr.action_index];
      const lines: LogEntryInput[] = [
        {
          level: dto.result === 'abort' ? 'warn' : 'info',
          stepName: step.name,
          actionName: action?.name,
          machineId: run.machine_id,
          text:
            intr.kind === 'manual-intervention'
              ? `Manual intervention ${action?.name}${run.machine_id ? ` on ${run.machine_name}` : ''}: ${who}`
              : `Guided failure of ${step.name} on ${run.machine_name}: ${who}`,
        },
      ];
      const skipRest = (as: TargetAction[]) =>
        as.map((a) => (a.state === 'pending' || a.state === 'running' ? { ...a, state: 'skipped' as const } : a));

      if (intr.kind === 'manual-intervention') {
        const actions = run.actions.map((a, i) =>
          i === intr.action_index
            ? { ...a, state: dto.result === 'proceed' ? ('success' as const) : ('failed' as const) }
            : a,
        );
        if (dto.result === 'proceed') {
          run.actions = actions;
          await this.repo.setTargetActions(tx, run.id, actions);
          if (await this.openManualIntervention(tx, dep.id, run, process)) {
            // The next action is another manual intervention: the target keeps waiting for a person.
          } else if (actions.some((a) => a.state === 'pending'))
            // Its next actions run on its machine (it takes a lease again at the next round, first in its window), or
            // on the server (an email, sent at the next round).
            await this.repo.resumeTargetRun(tx, run.id, actions);
          else await this.repo.finishTargetRun(tx, run.id, 'success', { actions });
        } else {
          await this.repo.finishTargetRun(tx, run.id, 'failed', { actions: skipRest(actions), failureKind: 'aborted' });
          await this.repo.abortStep(tx, dep.id, intr.step_index);
        }
      } else if (dto.result === 'retry') {
        // From the failed action on, everything runs again (actions the conditions skipped stay skipped).
        await this.repo.resetTargetRun(
          tx,
          run.id,
          run.actions.map((a, i) =>
            i >= intr.action_index && !a.skipReason ? { name: a.name, type: a.type, state: 'pending' as const } : a,
          ),
        );
      } else if (dto.result === 'skip') {
        await this.repo.finishTargetRun(tx, run.id, 'skipped', { actions: skipRest(run.actions) });
      } else {
        await this.repo.finishTargetRun(tx, run.id, 'failed', { actions: skipRest(run.actions) });
        await this.repo.abortStep(tx, dep.id, intr.step_index);
      }
      await this.repo.resumeIfNoneWaiting(tx, dep.id);
      await this.log.append(tx, dep.id, lines);
    });
    this.events.emit('changed', pre.deployment_id);
    return this.get(id);
  }
}
