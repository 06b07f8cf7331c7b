/**
 * Email actions: sent by the server (never an agent) through CUTTLE_SMTP_URL, in a step without target roles, once
 * per deployment. The dispatcher's round claims one (its action turns `running` in the round's transaction, which
 * holds the deployment's lock: with several nodes only the owner sends) and sends it after the commit, so a slow mail
 * server holds no lock and no other deployment's round. The outcome is written in its own transaction: a success lets
 * the target run go on to its next action at the next round, a failure (with the SMTP answer in the log) fails it.
 *
 * Variables are substituted as in scripts (`#{Name}`, project and system variables, earlier steps' outputs).
 * Sensitive values may go into the text (they leave the system by email, as the process author asked) but the log
 * masks them. An email left `running` by a node that stopped mid-send is failed, never sent again (it may have gone
 * out): a duplicate email is worse than a failed step one can retry.
 */
import { Inject, Injectable } from '@nestjs/common';
import nodemailer from 'nodemailer';
import type { EntityManager } from 'typeorm';
import { maskSecrets, outputName, resolveScoped, substitute } from '#shared/variables/index.js';
import { CONFIG, type CuttleConfig } from '../config/config.js';
import { DeploymentEvents } from '../deployments/deployment-events.js';
import { DeploymentLogService } from '../deployments/deployment-log.service.js';
import { DeploymentRepository } from '../deployments/deployment.repository.js';
import type { DeploymentRow, LogEntryInput, TargetAction, TargetRunRow } from '../deployments/deployment.types.js';
import { LOGGER, type Logger } from '../logging/logger.js';
import { SecretBox } from '../secrets/secret-box.js';
import type { ReleaseFacts } from './offers.service.js';

/** An email claimed by a round, to send after its commit. */
export interface EmailJob {
  deploymentId: string;
  targetRunId: string;
  actionIndex: number;
  stepName: string;
  actionName: string;
  to: string[];
  subject: string;
  body: string;
  /** The sensitive values the log lines must not show. */
  secrets: string[];
}

const SMTP_TIMEOUT_MS = 30_000;

@Injectable()
export class EmailActions {
  /** Target runs whose email this node is sending now. */
  private readonly sending = new Set<string>();
  private readonly logger: Logger;

  constructor(
    private readonly repo: DeploymentRepository,
    private readonly log: DeploymentLogService,
    private readonly events: DeploymentEvents,
    private readonly box: SecretBox,
    @Inject(CONFIG) private readonly config: CuttleConfig,
    @Inject(LOGGER) logger: Logger,
  ) {
    this.logger = logger.child({ context: 'email' });
  }

  isSending(targetRunId: string) {
    return this.sending.has(targetRunId);
  }

  /**
   * Claims the run's next pending action, an email, in the round's transaction: it turns `running`, its text is
   * substituted, and the log says where it goes. Returns the job to send after the commit.
   */
  async claim(
    tx: EntityManager,
    d: DeploymentRow,
    run: TargetRunRow,
    release: ReleaseFacts,
  ): Promise<{ job: EmailJob; line: LogEntryInput }> {
    const index = run.actions.findIndex((a) => a.state === 'pending');
    const step = release.process[run.step_index];
    const action = step.actions[index];
    const vars = await this.variables(tx, d, release, step.name);
    const lookup = (n: string) => vars.get(n)?.value;
    const secrets = [...vars.values()].filter((v) => v.sensitive && v.value).map((v) => v.value);
    const job: EmailJob = {
      deploymentId: d.id,
      targetRunId: run.id,
      actionIndex: index,
      stepName: step.name,
      actionName: action.name,
      to: (action.to ?? []).map((t) => substitute(t, lookup).text.trim()),
      subject: substitute(action.subject ?? '', lookup).text.replace(/[\r\n]+/g, ' '),
      body: substitute(action.body ?? '', lookup).text,
      secrets,
    };
    await this.repo.setTargetActions(
      tx,
      run.id,
      run.actions.map((a, i) => (i === index ? { ...a, state: 'running' as const } : a)),
    );
    this.sending.add(run.id);
    return {
      job,
      line: {
        level: 'info',
        stepName: step.name,
        actionName: action.name,
        text: maskSecrets(`Sending email to ${job.to.join(', ')} (subject ${job.subject})`, secrets),
      },
    };
  }

  /** Sends a claimed email and records its outcome; never throws (the outcome is the action's). */
  async send(job: EmailJob): Promise<void> {
    let answer: string;
    let ok = false;
    try {
      if (!this.config.smtpUrl) throw new Error('CUTTLE_SMTP_URL is not set: this server cannot send email');
      const bad = job.to.find((t) => !/^[^\s@<>]+@[^\s@<>]+$/.test(t));
      if (bad !== undefined) throw new Error(`"${bad}" is not an email address (after substitution)`);
      const transport = nodemailer.createTransport({
        url: this.config.smtpUrl,
        connectionTimeout: SMTP_TIMEOUT_MS,
        greetingTimeout: SMTP_TIMEOUT_MS,
        socketTimeout: SMTP_TIMEOUT_MS,
      });
      try {
        const info = await transport.sendMail({
          from: this.config.smtpFrom,
          to: job.to,
          subject: job.subject,
          text: job.body,
        });
        // Some recipients refused, others took it: the mail went out, but not to everyone asked, which is a failure.
        const rejected = (info.rejected ?? []).map((r) =>
          typeof r === 'string' ? r : (r as { address: string }).address,
        );
        const why = (info as { rejectedErrors?: Array<{ response?: string }> }).rejectedErrors?.[0]?.response;
        ok = !rejected.length;
        answer = ok
          ? String(info.response ?? 'accepted')
          : `refused for ${rejected.join(', ')}${why ? `: ${why}` : ''} (sent to the others)`;
      } finally {
        transport.close();
      }
    } catch (e) {
      const err = e as Error & { response?: string };
      answer = err.response ?? err.message;
    }
    try {
      await this.settle(job, ok, maskSecrets(answer.replace(/\s+/g, ' ').trim().slice(0, 1000), job.secrets));
    } catch (e) {
      this.logger.error('recording an email outcome failed', { deploymentId: job.deploymentId, error: String(e) });
    } finally {
      this.sending.delete(job.targetRunId);
    }
    this.events.emit('progressed', job.deploymentId);
  }

  private async settle(job: EmailJob, ok: boolean, answer: string) {
    await this.repo.transaction(async (tx) => {
      await this.repo.lockDeployment(tx, job.deploymentId);
      const run = await this.repo.lockTargetRun(tx, job.targetRunId);
      // Settled meanwhile (a cancel): the outcome changes nothing.
      if (run?.actions[job.actionIndex]?.state !== 'running') return;
      await this.finish(tx, run, job.actionIndex, ok, ok ? null : `email not sent: ${answer}`);
      await this.log.append(tx, job.deploymentId, [
        {
          level: ok ? 'info' : 'error',
          stepName: job.stepName,
          actionName: job.actionName,
          text: ok
            ? `Email sent to ${job.to.length} recipient(s); the SMTP server answered: ${answer}`
            : `Email ${job.actionName} failed: ${answer}`,
        },
      ]);
    });
  }

  /**
   * Fails the email actions of these server target runs left `running` by a node that stopped while sending (none of
   * them is being sent here); in the round's transaction. Returns the log lines.
   */
  async failAbandoned(tx: EntityManager, runs: TargetRunRow[], stepNames: string[]): Promise<LogEntryInput[]> {
    const lines: LogEntryInput[] = [];
    for (const run of runs) {
      if (run.machine_id || run.state !== 'running' || this.sending.has(run.id)) continue;
      const index = run.actions.findIndex((a) => a.type === 'email' && a.state === 'running');
      if (index < 0) continue;
      const why = 'the server stopped while sending this email; it is not sent again (it may have gone out)';
      await this.finish(tx, run, index, false, why);
      lines.push({
        level: 'error',
        stepName: stepNames[run.step_index],
        text: `Email ${run.actions[index].name} failed: ${why}`,
      });
    }
    return lines;
  }

  private async finish(tx: EntityManager, run: TargetRunRow, index: number, ok: boolean, error: string | null) {
    const actions: TargetAction[] = run.actions.map((a, i) =>
      i === index
        ? { ...a, state: ok ? 'success' : 'failed' }
        : !ok && i > index && a.state === 'pending'
          ? { ...a, state: 'skipped' }
          : a,
    );
    if (!ok) await this.repo.finishTargetRun(tx, run.id, 'failed', { actions, error, failureKind: 'script' });
    // Its next action (another email, a manual intervention) starts at the next round.
    else if (actions.some((a) => a.state === 'pending')) await this.repo.resumeTargetRun(tx, run.id, actions);
    else await this.repo.finishTargetRun(tx, run.id, 'success', { actions });
  }

  /** What `#{Name}` may name in a server step: project variables, system variables, earlier steps' outputs. */
  private async variables(tx: EntityManager, d: DeploymentRow, release: ReleaseFacts, stepName: string) {
    const vars = new Map<string, { value: string; sensitive: boolean }>();
    for (const v of resolveScoped(release.variables, { environmentId: d.environment_id, roles: [] }).values())
      vars.set(v.name, v);
    const [names]: Array<{ project_name: string; environment_name: string }> = await tx.query(
      `SELECT p.name AS project_name, e.name AS environment_name FROM projects p, environments e WHERE p.id = $1 AND e.id = $2`,
      [d.project_id, d.environment_id],
    );
    const system: Record<string, string> = {
      'Cuttle.Project.Name': names?.project_name ?? '',
      'Cuttle.Project.Id': d.project_id,
      'Cuttle.Release.Number': release.version,
      'Cuttle.Release.Id': d.release_id,
      'Cuttle.Environment.Name': names?.environment_name ?? '',
      'Cuttle.Environment.Id': d.environment_id,
      'Cuttle.Deployment.Id': d.id,
      'Cuttle.Step.Name': stepName,
    };
    for (const [name, value] of Object.entries(system)) vars.set(name, { value, sensitive: false });
    const outputs: Array<{
      step_name: string;
      action_name: string;
      machine_name: string;
      name: string;
      value: string;
      sensitive: boolean;
    }> = await tx.query(
      `SELECT step_name, action_name, machine_name, name, value, sensitive FROM output_variables WHERE deployment_id = $1`,
      [d.id],
    );
    for (const o of outputs) {
      const value = o.sensitive ? this.box.decrypt(o.value) : o.value;
      vars.set(outputName(o.step_name, o.action_name, o.name, o.machine_name), { value, sensitive: o.sensitive });
    }
    return vars;
  }
}
